"""`readiness-sidecar webhook`: serve the mutating admission webhook until SIGTERM or SIGINT (exit 0).

Every flag also reads READINESS_SIDECAR_WEBHOOK_<FLAG> (--metrics-port: READINESS_SIDECAR_WEBHOOK_METRICS_PORT);
a flag beats its env var. Its own prefix, not run's READINESS_SIDECAR_<FLAG>: --bind, --port and --metrics-port
mean other ports than run's, and an env shared with a sidecar must not move the webhook. --image also reads
READINESS_SIDECAR_IMAGE, as inject does. It logs as `run` does (text or JSON, --log-level).

A bad flag or env value, cert files that do not load, or a port that can't be had: one line, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from probes.spec import join_host_port
from sidecar import __version__
from sidecar.contract import (
    HEALTHZ_PATH,
    IMAGE_ENV,
    METRICS_PATH,
    MUTATE_PATH,
    WEBHOOK_ENV_PREFIX,
    WEBHOOK_METRICS_PORT,
    WEBHOOK_PORT,
)
from sidecar.errors import ConfigError, cannot_listen
from sidecar.fd_limit import raise_open_files_limit
from sidecar.k8s.inject import InjectOptions
from sidecar.k8s.options import DEFAULT_IMAGE_WARNING, EXEC_PROBE_MODES
from sidecar.k8s.tls_reload import TlsFiles
from sidecar.k8s.webhook import WebhookServer
from sidecar.ports import parse_port
from sidecar.runtime.settings import LOG_FORMATS, LOG_LEVELS  # the same words as run's
from sidecar.serve.logs import setup_logging
from sidecar.signals import on_stop_signals

# What a boolean flag's env var may say (case-insensitive), as Kubernetes env values are always strings.
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")
DEFAULT_BIND = "0.0.0.0"

T = TypeVar("T")
D = TypeVar("D")


def env_name(flag: str) -> str:
    """--metrics-port -> READINESS_SIDECAR_WEBHOOK_METRICS_PORT."""
    return WEBHOOK_ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    options: InjectOptions
    bind: str
    port: int
    metrics_port: int | None  # None: no metrics server
    tls: TlsFiles
    log_format: str
    log_level: str  # one of LOG_LEVELS, as run's --log-level

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WebhookSettings:
        """Each flag, else its env var, else its default; validated here, naming the flag or env var."""
        read = _Sources(args, os.environ if environ is None else environ)
        cert, key = read.value("--cert", _not_empty, None), read.value("--key", _not_empty, None)
        if cert is None or key is None:
            missing = "--cert" if cert is None else "--key"
            raise ConfigError(missing, problem=f"required (or set {env_name(missing)})")
        options = InjectOptions(
            image=read.value("--image", _not_empty, None) or read.environ.get(IMAGE_ENV) or None,
            exec_probes=read.value("--exec-probes", _exec_probes, "kubelet"),
            native_sidecar=read.switch("--native-sidecar"),
            rewrite_liveness=read.switch("--rewrite-liveness"),
        )
        return cls(
            options=options,
            bind=read.value("--bind", _not_empty, DEFAULT_BIND),
            port=read.value("--port", _port, WEBHOOK_PORT),
            metrics_port=read.value("--metrics-port", _port_or_off, WEBHOOK_METRICS_PORT),
            tls=TlsFiles(cert, key),
            log_format=read.value("--log-format", _log_format, "text"),
            log_level=read.value("--log-level", _log_level, "info"),
        )


class _Sources:
    """A flag's value, else its env var's; ValueError from a parser becomes one ConfigError naming which."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = environ

    def _given(self, flag: str) -> object:
        return getattr(self.args, flag.removeprefix("--").replace("-", "_"))

    def value(self, flag: str, parse: Callable[[str], T], default: D) -> T | D:
        given = self._given(flag)
        if given is not None:
            return self._parse(flag, str(given), parse)
        text = self.environ.get(env_name(flag))
        return default if text is None else self._parse(env_name(flag), text, parse)

    def switch(self, flag: str) -> bool:
        # A store_true flag: given means on; absent (False) leaves it to the env var.
        if self._given(flag):
            return True
        text = self.environ.get(env_name(flag))
        return text is not None and self._parse(env_name(flag), text, _bool)

    @staticmethod
    def _parse(origin: str, text: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise ConfigError(origin, problem=str(exc)) from None


def _port(text: str) -> int:
    port = parse_port(text)
    assert port is not None  # without allow_off, parse_port returns a number or raises
    return port


def _port_or_off(text: str) -> int | None:
    return parse_port(text, allow_off=True)


def _not_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("empty")
    return text.strip()


def _choice(text: str, choices: tuple[str, ...], what: str) -> str:
    choice = text.strip().lower()
    if choice not in choices:
        raise ValueError(f"{what} {text[:40]!r} must be one of {', '.join(choices)}")
    return choice


def _exec_probes(text: str) -> str:
    return _choice(text, EXEC_PROBE_MODES, "exec probe mode")


def _log_format(text: str) -> str:
    return _choice(text, LOG_FORMATS, "log format")


def _log_level(text: str) -> str:
    return _choice(text, LOG_LEVELS, "log level")


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{text[:40]!r} is not a boolean ({', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS[:-1])})")
    return word in TRUE_WORDS


def webhook_command(args: argparse.Namespace) -> int:
    settings = WebhookSettings.from_args(args)
    logger = setup_logging(settings.log_format, settings.log_level)
    # aiohttp's own errors (a handler's bug) in the same format: a JSON log stays JSON.
    aiohttp_logger = logging.getLogger("aiohttp")
    aiohttp_logger.handlers[:] = logger.handlers
    aiohttp_logger.propagate = False
    raise_open_files_limit(logger)
    server = WebhookServer(settings.options, settings.tls, logger)
    return asyncio.run(_serve(server, settings, logger))


async def _listen(start: Callable[[str, int], Awaitable[int]], bind: str, port: int, flag: str) -> int:
    try:
        return await start(bind, port)
    except OSError as exc:
        raise cannot_listen(f"--bind {bind} {flag} {port}", join_host_port(bind, port), exc) from None


async def _serve(server: WebhookServer, settings: WebhookSettings, logger: logging.Logger) -> int:
    stop = asyncio.Event()
    bind = settings.bind
    with on_stop_signals(stop.set):
        try:
            bound = await _listen(server.start, bind, settings.port, "--port")
            metrics = None
            if settings.metrics_port is not None:
                metrics = await _listen(server.start_metrics, bind, settings.metrics_port, "--metrics-port")
            image = server.options.image_or_default
            where = f", metrics on http://{join_host_port(bind, metrics)}{METRICS_PATH}" if metrics else ""
            logger.info(
                "readiness-sidecar %s webhook listening on https://%s (POST %s, GET %s)%s, injecting %s",
                __version__, join_host_port(bind, bound), MUTATE_PATH, HEALTHZ_PATH, where, image,
                extra={"fields": {"version": __version__, "bind": bind, "port": bound, "metrics_port": metrics,
                                  "image": image}},
            )  # fmt: skip
            if server.options.image is None:
                logger.warning("%s", DEFAULT_IMAGE_WARNING)
            await stop.wait()
            logger.info("webhook stopping")
        finally:
            await server.stop()
    return 0
