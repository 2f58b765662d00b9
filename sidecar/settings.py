"""Every setting of `run`, its default and its validation, in one place (uvicorn's Config).

The CLI only turns flags and READINESS_SIDECAR_<FLAG> env vars into raw strings;
`RunSettings.from_raw` validates them once, at start-up, naming the flag.

    settings = RunSettings.from_raw({"health_port": "0", "grpc_port": "off"})
    settings.grpc_port  # None
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.durations import parse_duration
from sidecar.errors import ConfigError

# Ports clear of Knative queue-proxy (8012, 8013, 8022, 8112, 9090, 9091) and Istio
# (15000-15090): all of them share the pod's network namespace.
DEFAULT_HEALTH_PORT = 8550
DEFAULT_GRPC_PORT = 8551
DEFAULT_METRICS_PORT = 8552

# Aggressive-mode defaults, chosen from benchmarks/ (see docs/performance.md).
DEFAULT_AGGRESSIVE_INTERVAL = 0.005  # beats queue-proxy's 50 ms retry by 10x at ~1-3% CPU
DEFAULT_AGGRESSIVE_TIMEOUT = 0.1  # queue-proxy's aggressiveProbeTimeout
DEFAULT_AGGRESSIVE_WINDOW = 10.0  # queue-proxy's 10 s poll window, then widen
DEFAULT_AGGRESSIVE_MAX_INTERVAL = 0.1  # where widening stops: ~0.1-0.3% CPU per slow starter
DEFAULT_STEADY_PERIOD = 1.0
DEFAULT_DRAIN_SECONDS = 30.0  # Knative's fixed drain, here configurable

ENV_PREFIX = "READINESS_SIDECAR_"
LOG_FORMATS = ("text", "json")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


@dataclass(frozen=True, slots=True)
class RunSettings:
    health_port: int = DEFAULT_HEALTH_PORT
    grpc_port: int | None = DEFAULT_GRPC_PORT  # None: gRPC health server off
    metrics_port: int | None = DEFAULT_METRICS_PORT  # None: metrics server off
    bind: str = "0.0.0.0"
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    aggressive_interval: float = DEFAULT_AGGRESSIVE_INTERVAL
    aggressive_timeout: float = DEFAULT_AGGRESSIVE_TIMEOUT
    aggressive_window: float = DEFAULT_AGGRESSIVE_WINDOW
    aggressive_max_interval: float = DEFAULT_AGGRESSIVE_MAX_INTERVAL
    steady_period: float = DEFAULT_STEADY_PERIOD
    log_format: str = "text"

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_raw(cls, raw: Mapping[str, str | None], *, origin: Mapping[str, str] = {}) -> RunSettings:
        """Validate raw strings; `origin` says per field where a value came from (flag or env)."""
        values: dict[str, object] = {}
        for name, text in raw.items():
            if text is None:
                continue
            where = origin.get(name, flag_name(name))
            try:
                values[name] = _PARSERS[name](text)
            except ValueError as exc:
                raise ConfigError(where, problem=str(exc)) from None
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.aggressive_max_interval < settings.aggressive_interval:
            raise ConfigError(
                origin.get("aggressive_max_interval", flag_name("aggressive_max_interval")),
                problem="must be >= --aggressive-interval",
            )
        return settings


def _port(text: str, *, allow_off: bool = False) -> int | None:
    if allow_off and text.strip().lower() in ("off", "none", "disabled"):
        return None
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"port {text!r} is not a number" + (" or 'off'" if allow_off else "")) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535 (0 picks a free port)")
    return port


def _duration(text: str) -> float:
    value = parse_duration(text)
    # parse_duration refuses "1e400" but sums "9999...9s" to inf: an endless drain or
    # period is a typo, and would silently mean "never exit" or "never probe again".
    if not math.isfinite(value):
        raise ValueError(f"duration {text[:40]!r} is too long")
    return value


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise ValueError(f"duration {text!r} must be > 0")
    return value


def _log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise ValueError(f"log format {text!r} must be one of {', '.join(LOG_FORMATS)}")
    return text


def _bind(text: str) -> str:
    if not text.strip():
        raise ValueError("bind address is empty")
    return text.strip()


_PARSERS = {
    "health_port": lambda t: _port(t),
    "grpc_port": lambda t: _port(t, allow_off=True),
    "metrics_port": lambda t: _port(t, allow_off=True),
    "bind": _bind,
    "drain_seconds": _duration,
    "aggressive_interval": _positive_duration,
    "aggressive_timeout": _positive_duration,
    "aggressive_window": _duration,
    "aggressive_max_interval": _positive_duration,
    "steady_period": _positive_duration,
    "log_format": _log_format,
}
