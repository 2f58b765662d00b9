"""Every setting of `run`, its default and its validation, in one place (uvicorn's Config).

The CLI only turns flags and READINESS_SIDECAR_<FLAG> env vars into raw strings;
`RunSettings.from_raw` validates them once, at start-up, naming the flag.

    settings = RunSettings.from_raw({"health_port": "0", "grpc_port": "off", "aggressive_interval": "2ms"})
    settings.grpc_port, settings.aggressive.interval  # None, 0.002
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sidecar.contract import (
    DEFAULT_DRAIN_SECONDS,
    ENV_PREFIX,
    GRPC_PORT,
    HEALTH_PORT,
    METRICS_PORT,
    PROBE_HOST_CHOICES,
    PROBE_HOST_LOCALHOST,
)
from sidecar.durations import parse_finite_duration
from sidecar.errors import ConfigError
from sidecar.ports import parse_port
from sidecar.runtime.scheduler import AggressivePolicy

LOG_FORMATS = ("text", "json")
# --log-level, the most verbose first: Python's level names, as kubectl's and Istio's logs name theirs.
LOG_LEVELS = ("debug", "info", "warning", "error")
# auto: uvloop if importable. It picks the runtime, not the sidecar's behaviour, and exists
# so benchmarks can compare both loops in one run.
LOOP_CHOICES = ("auto", "uvloop", "asyncio")
# Every interface, dual-stack: one IPv6 socket with IPV6_V6ONLY=0 that takes IPv4 too (as
# Go servers listen), 0.0.0.0 on a host without IPv6; serve.listen.DUAL_STACK. An explicit
# 0.0.0.0 is IPv4 only, an explicit :: or ::1 IPv6 only.
DEFAULT_BIND = "*"

# The flat setting names (and so flags) of AggressivePolicy's fields.
_POLICY_SETTINGS = {
    "aggressive_interval": "interval",
    "aggressive_timeout": "timeout",
    "aggressive_window": "window",
    "aggressive_max_interval": "max_interval",
    "steady_period": "steady_period",
}


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


@dataclass(frozen=True, slots=True)
class RunSettings:
    health_port: int = HEALTH_PORT
    grpc_port: int | None = GRPC_PORT  # None: gRPC health server off
    metrics_port: int | None = METRICS_PORT  # None: metrics server off
    bind: str = DEFAULT_BIND
    # Where a probe that names no host goes: one of PROBE_HOST_CHOICES. Only the config loader
    # turns it into an address (POD_IP for pod-ip); the probes get specs with the host set.
    probe_host: str = PROBE_HOST_LOCALHOST
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    aggressive: AggressivePolicy = dataclasses.field(default_factory=AggressivePolicy)
    log_format: str = "text"
    log_level: str = "info"  # one of LOG_LEVELS
    loop: str = "auto"  # the event loop: one of LOOP_CHOICES

    @classmethod
    def fields(cls) -> list[str]:
        """Every setting's name, flat (aggressive_interval, not aggressive.interval), in --help order."""
        names: list[str] = []
        for field in dataclasses.fields(cls):
            names.extend(_POLICY_SETTINGS if field.name == "aggressive" else [field.name])
        return names

    @classmethod
    def from_raw(cls, raw: Mapping[str, str | None], *, origin: Mapping[str, str] = {}) -> RunSettings:
        """Validate raw strings; `origin` says per setting where a value came from (flag or env)."""
        values: dict[str, object] = {}
        policy: dict[str, float] = {}
        for name, text in raw.items():
            if text is None:
                continue
            try:
                value = _PARSERS[name](text)
            except ValueError as exc:
                raise ConfigError(origin.get(name, flag_name(name)), problem=str(exc)) from None
            if name in _POLICY_SETTINGS:
                policy[_POLICY_SETTINGS[name]] = value  # type: ignore[assignment]
            else:
                values[name] = value
        aggressive = AggressivePolicy(**policy)
        if aggressive.max_interval < aggressive.interval:
            raise ConfigError(
                origin.get("aggressive_max_interval", flag_name("aggressive_max_interval")),
                problem="must be >= --aggressive-interval",
            )
        return cls(aggressive=aggressive, **values)  # type: ignore[arg-type]


def _positive_duration(text: str) -> float:
    value = parse_finite_duration(text)
    if value <= 0:
        raise ValueError(f"duration {text!r} must be > 0")
    return value


def _log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise ValueError(f"log format {text!r} must be one of {', '.join(LOG_FORMATS)}")
    return text


def _log_level(text: str) -> str:
    choice = text.strip().lower()
    if choice not in LOG_LEVELS:
        raise ValueError(f"log level {text[:40]!r} must be one of {', '.join(LOG_LEVELS)}")
    return choice


def _loop(text: str) -> str:
    choice = text.strip().lower() or "auto"
    if choice not in LOOP_CHOICES:
        raise ValueError(f"{choice!r} must be one of {', '.join(LOOP_CHOICES)}")
    return choice


def _probe_host(text: str) -> str:
    choice = text.strip().lower()
    if choice not in PROBE_HOST_CHOICES:
        raise ValueError(f"{text[:40]!r} must be one of {', '.join(PROBE_HOST_CHOICES)}")
    return choice


def _bind(text: str) -> str:
    address = text.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]  # "[::1]", as in a URL: the address itself, bracketed once where shown
    if not address:
        raise ValueError("bind address is empty")
    return address


_PARSERS: dict[str, Callable[[str], object]] = {
    "health_port": lambda t: parse_port(t),
    "grpc_port": lambda t: parse_port(t, allow_off=True),
    "metrics_port": lambda t: parse_port(t, allow_off=True),
    "bind": _bind,
    "probe_host": _probe_host,
    "drain_seconds": parse_finite_duration,
    "aggressive_interval": _positive_duration,
    "aggressive_timeout": _positive_duration,
    "aggressive_window": parse_finite_duration,
    "aggressive_max_interval": _positive_duration,
    "steady_period": _positive_duration,
    "log_format": _log_format,
    "log_level": _log_level,
    "loop": _loop,
}
