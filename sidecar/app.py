"""Wiring: config -> probes -> schedulers -> state -> servers. The one place it happens.

    sidecar = Sidecar(config, settings)
    ports = await sidecar.start()
    await sidecar.wait_terminated()   # SIGTERM -> drain -> return
    await sidecar.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from probes import build_probe
from sidecar import __version__
from sidecar.drain import Drainer
from sidecar.errors import ConfigError
from sidecar.http_server import HealthHttpServer
from sidecar.logs import TransitionLogger, setup_logging
from sidecar.scheduler import AggressivePolicy, ContainerScheduler
from sidecar.settings import RunSettings
from sidecar.spec import SidecarConfig
from sidecar.state import AggregateState, Clock

# grpc's fork handlers print warnings when exec probes spawn children; exec
# probes exec() right away, so the handlers buy nothing.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# auto: uvloop if importable. An env var, not a RunSettings flag: it picks the runtime,
# not the sidecar's behaviour, and exists so benchmarks can compare both loops.
LOOP_ENV = "READINESS_SIDECAR_LOOP"
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class BoundPorts:
    health: int
    grpc: int | None
    metrics: int | None


class Sidecar:
    def __init__(
        self,
        config: SidecarConfig,
        settings: RunSettings,
        *,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
        registry: object | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.logger = logger or logging.getLogger("readiness_sidecar")
        self.clock = clock or Clock()
        self.state = AggregateState(config.containers, clock=self.clock)
        self.state.observers.append(TransitionLogger(self.logger, self.clock))
        self.drainer = Drainer(self.state, settings.drain_seconds)
        self.policy = AggressivePolicy(
            interval=settings.aggressive_interval,
            timeout=settings.aggressive_timeout,
            window=settings.aggressive_window,
            max_interval=settings.aggressive_max_interval,
            steady_period=settings.steady_period,
        )
        self.http = HealthHttpServer(self.state, self.drainer, self.dead_schedulers)
        self._grpc: object | None = None
        self._metrics: object | None = None
        self._registry = registry
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def dead_schedulers(self) -> list[str]:
        """Schedulers that ended: they never should while the sidecar runs."""
        return [name for name, task in self._tasks.items() if task.done()]

    def _scheduler_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.logger.error("scheduler %s died: %r", task.get_name(), task.exception())

    async def start(self) -> BoundPorts:
        s = self.settings
        health = await self.http.start(s.bind, s.health_port)
        grpc_port = None
        if s.grpc_port is not None:
            from sidecar.grpc_server import GrpcHealthServer

            grpc_server = GrpcHealthServer(self.state)
            self._grpc = grpc_server
            grpc_port = await grpc_server.start(s.bind, s.grpc_port)
        metrics_port = None
        if s.metrics_port is not None:
            from sidecar.metrics import MetricsServer

            metrics_server = MetricsServer(self.state, registry=self._registry)  # type: ignore[arg-type]
            self._metrics = metrics_server
            metrics_port = await metrics_server.start(s.bind, s.metrics_port)
        for spec in self.config.containers:
            if spec.handler is None:
                continue
            scheduler = ContainerScheduler(self.state, spec.name, build_probe(spec.handler), self.policy)
            task = asyncio.create_task(scheduler.run(), name=spec.name)
            task.add_done_callback(self._scheduler_done)
            self._tasks[spec.name] = task
        return BoundPorts(health, grpc_port, metrics_port)

    async def wait_terminated(self) -> None:
        """Return once SIGTERM came and the drain period is over."""
        await self.drainer.drained.wait()

    async def stop(self) -> None:
        self.drainer.cancel_timer()
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.http.stop()
        if self._grpc is not None:
            await self._grpc.stop()  # type: ignore[attr-defined]
        if self._metrics is not None:
            await self._metrics.stop()  # type: ignore[attr-defined]


def _describe(ports: BoundPorts, bind: str) -> str:
    def one(port: int | None) -> str:
        return f"{bind}:{port}" if port is not None else "off"

    return f"health={one(ports.health)} grpc={one(ports.grpc)} metrics={one(ports.metrics)}"


async def _serve(args: argparse.Namespace, settings: RunSettings, logger: logging.Logger) -> int:
    demo = None
    if args.demo:
        from sidecar.demo import start_demo

        demo = await start_demo()
        config = demo.config
    else:
        from sidecar.config import load_config

        config = load_config(probe_flags=args.probe, config_file=args.config)
    for warning in config.warnings:
        logger.warning("%s", warning)
    sidecar = Sidecar(config, settings, logger=logger)
    loop = asyncio.get_running_loop()
    try:
        ports = await sidecar.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sidecar.drainer.begin)
        names = ",".join(c.name for c in config.containers) or "-"
        logger.info(
            "readiness-sidecar %s listening %s containers=%s sources=%s drain=%ss",
            __version__, _describe(ports, settings.bind), names,
            "; ".join(config.sources) or "-", settings.drain_seconds,
        )
        if demo is not None:
            host = "127.0.0.1" if settings.bind in ("0.0.0.0", "::") else settings.bind
            logger.info("demo: open http://%s:%d/status (or /ready, /ready?wait=5s); "
                        "Ctrl-C to stop", host, ports.health)
        await sidecar.wait_terminated()
        logger.info("drain complete, exiting")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await sidecar.stop()
        if demo is not None:
            await demo.close()
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the `uvloop` extra), unless READINESS_SIDECAR_LOOP says otherwise;
    benchmarks/ sets it to compare both loops in one run."""
    choice = os.environ.get(LOOP_ENV, "auto").strip().lower() or "auto"
    if choice not in LOOP_CHOICES:
        raise ConfigError(LOOP_ENV, problem=f"{choice!r} must be one of {', '.join(LOOP_CHOICES)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            problem = "uvloop is not installed (pip install 'readiness-sidecar[uvloop]')"
            raise ConfigError(LOOP_ENV, problem=problem) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_sidecar(args: argparse.Namespace, settings: RunSettings) -> int:
    logger = setup_logging(settings.log_format)
    loop_factory = _loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(args, settings, logger))
