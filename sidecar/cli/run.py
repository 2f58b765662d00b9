"""`readiness-sidecar run`: the sidecar, until SIGTERM and the drain that follows.

    readiness-sidecar run -f pod.yaml --ports-file -   # first stdout line: {"health": 8550, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from probes.spec import join_host_port
from sidecar import __version__
from sidecar.app import BoundPorts, PortUnavailable, Sidecar, event_loop_factory
from sidecar.cli.parser import raw_run_settings
from sidecar.contract import ENV_PREFIX, READY_PATH, STATUS_PATH, WAIT_PARAM
from sidecar.errors import ConfigError, cannot_listen, one_line
from sidecar.fd_limit import raise_open_files_limit
from sidecar.model import SidecarConfig
from sidecar.runtime.settings import RunSettings, flag_name
from sidecar.serve.logs import setup_logging
from sidecar.signals import on_stop_signals

STDOUT = "-"
# The demo is stopped with Ctrl-C, not by a kubelet: no point draining for 30 s.
DEMO_DRAIN_SECONDS = "1s"
# How soon the loop gets the interpreter back from a thread building /metrics (sidecar/serve/metrics.py):
# Python hands the GIL over only every switch interval, 5 ms by default, and a request needs a few loop
# turns, so /healthz waited 22-32 ms (p99) behind unread scrapers at 1,000 containers; 5 ms at 1 ms. Only
# that thread competes, so a build costs no more (272-284 ms either way; docs/performance.md).
GIL_SWITCH_SECONDS = 0.001
# Listening on a wildcard address is reached through loopback.
_LOOPBACK_FOR = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def run_command(args: argparse.Namespace) -> int:
    raw, origin = raw_run_settings(args)
    settings = run_settings(args, raw, origin)
    logger = setup_logging(settings.log_format, settings.log_level)
    raise_open_files_limit(logger)
    with asyncio.Runner(loop_factory=event_loop_factory(settings.loop)) as runner:
        try:
            return runner.run(_serve(args, settings, logger))
        except PortUnavailable as exc:
            given = ("bind", exc.setting) if "bind" in raw else (exc.setting,)
            source = " ".join(_given(setting, raw, origin) for setting in given)
            raise cannot_listen(source, exc.address, exc.error) from None


def run_settings(args: argparse.Namespace, raw: dict[str, str | None], origin: dict[str, str]) -> RunSettings:
    """Flags first, then READINESS_SIDECAR_<FLAG> env vars; validated once, naming where each came from."""
    if args.demo and "drain_seconds" not in raw:
        raw["drain_seconds"] = DEMO_DRAIN_SECONDS
    return RunSettings.from_raw(raw, origin=origin)


def _given(setting: str, raw: dict[str, str | None], origin: dict[str, str]) -> str:
    """A setting as the user gave it, to name in an error: "--bind 10.0.0.1", "READINESS_SIDECAR_GRPC_PORT=8551",
    or the flag alone for a default."""
    source = origin.get(setting, flag_name(setting))
    value = raw.get(setting)
    if value is None:
        return source
    return f"{source}={value}" if source.startswith(ENV_PREFIX) else f"{source} {value}"


async def _serve(args: argparse.Namespace, settings: RunSettings, logger: logging.Logger) -> int:
    demo = None
    if args.demo:
        from sidecar.demo.launcher import start_demo

        demo = await start_demo()
        config = demo.config
    else:
        from sidecar.config.loader import load_config

        config = load_config(probe_flags=args.probe, config_file=args.config, probe_host=settings.probe_host)
    for warning in config.warnings:
        logger.warning("%s", warning)
    sidecar = Sidecar(config, settings, logger=logger)
    try:
        ports = await sidecar.start()
        # What start-up built lives as long as the process: out of the collector's sight, a
        # full collection scans only what probing allocates (one measured 8.2 -> 3.6 ms).
        gc.freeze()
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        with on_stop_signals(sidecar.drainer.begin):
            _announce(ports, config, settings, logger, demo=demo is not None)
            if args.ports_file is not None:
                _write_ports(args.ports_file, ports)
            await sidecar.wait_terminated()
        logger.info("drain complete, exiting")
    finally:
        await sidecar.stop()
        if demo is not None:
            await demo.close()
    return 0


def _announce(
    ports: BoundPorts, config: SidecarConfig, settings: RunSettings, logger: logging.Logger, *, demo: bool
) -> None:
    names = ",".join(c.name for c in config.containers) or "-"
    logger.info(
        "readiness-sidecar %s listening %s containers=%s sources=%s drain=%ss",
        __version__, ports.describe(settings.bind), names,
        "; ".join(config.sources) or "-", settings.drain_seconds,
        extra={"fields": {"version": __version__, "bind": settings.bind, "ports": asdict(ports),
                          "containers": [c.name for c in config.containers], "sources": list(config.sources),
                          "drain_seconds": settings.drain_seconds, "log_level": settings.log_level}},
    )
    for container in config.containers:
        # What each probe reaches, as /status shows it: with --probe-host pod-ip, the pod IP.
        if container.handler is not None:
            logger.info(
                "%s: probing %s %s", container.name, container.handler.kind, container.handler.target,
                extra={"fields": {"container": container.name, "probe": container.handler.kind,
                                  "target": container.handler.target}},
            )
    if demo:
        host = _LOOPBACK_FOR.get(settings.bind, settings.bind)
        logger.info("demo: open http://%s%s (or %s, %s?%s=5s); Ctrl-C to stop",
                    join_host_port(host, ports.health), STATUS_PATH, READY_PATH, READY_PATH, WAIT_PARAM)


def _write_ports(path: str, ports: BoundPorts) -> None:
    """One JSON line: to stdout, or to a file that appears whole (written aside, then renamed)."""
    line = ports.to_json() + "\n"
    if path == STDOUT:
        sys.stdout.write(line)
        sys.stdout.flush()
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(line)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        problem = f"cannot write: {exc.strerror or one_line(str(exc))}"
        raise ConfigError(f"--ports-file {path}", problem=problem) from None
