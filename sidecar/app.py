"""Wiring: config -> probes -> schedulers -> state -> servers. The one place it happens.

Everything here takes plain, typed parameters (a SidecarConfig, RunSettings); the CLI
turns flags into those and owns signals and stdout.

    sidecar = Sidecar(config, settings)
    ports = await sidecar.start()
    sidecar.drainer.begin()            # on SIGTERM
    await sidecar.wait_terminated()    # the drain is over
    await sidecar.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from probes import build_probe
from probes.spec import join_host_port
from sidecar.contract import LOGGER_NAME
from sidecar.errors import ConfigError
from sidecar.model import SidecarConfig
from sidecar.runtime.attempt import GuardedProbe, RoutedChecks
from sidecar.runtime.drain import Drainer
from sidecar.runtime.scheduler import ContainerScheduler, Ticker
from sidecar.runtime.settings import RunSettings, flag_name
from sidecar.runtime.state import AggregateState, Clock, StateObserver
from sidecar.serve.health_http import HealthHttpServer
from sidecar.serve.logs import TransitionLogger


@dataclass(frozen=True, slots=True)
class BoundPorts:
    """The ports `run` listens on (what port 0 became); None for a server that is off."""

    health: int
    grpc: int | None
    metrics: int | None

    def to_json(self) -> str:
        """One line, as `run --ports-file` writes it: {"health": 8550, "grpc": 8551, "metrics": null}."""
        return json.dumps(asdict(self))

    def describe(self, bind: str) -> str:
        def one(port: int | None) -> str:
            return join_host_port(bind, port) if port is not None else "off"

        return f"health={one(self.health)} grpc={one(self.grpc)} metrics={one(self.metrics)}"


class PortUnavailable(Exception):
    """A port `run` can't listen on: its setting ("grpc_port"), the address tried and the OS's error."""

    def __init__(self, setting: str, address: str, error: OSError) -> None:
        super().__init__(f"{setting}: cannot listen on {address}: {error}")
        self.setting, self.address, self.error = setting, address, error


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
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.clock = clock or Clock()
        self.state = AggregateState(config.containers, clock=self.clock)
        self.drainer = Drainer(self.state, settings.drain_seconds, logger=self.logger)
        routed = RoutedChecks(config.containers, self.logger, self.state)  # /live, /startup
        self.http = HealthHttpServer(self.state, self.drainer, routed)
        # The health server first: its hooks answer held long-polls, the change's most urgent reader.
        observers: list[StateObserver] = [self.http, TransitionLogger(self.logger, self.clock)]
        self._metrics = None
        if settings.metrics_port is not None:
            # Imported only when on: prometheus_client is the slowest import of `run`.
            from prometheus_client import CollectorRegistry

            from sidecar.serve.metrics import MetricsServer, ReadinessMetrics

            metrics = ReadinessMetrics(self.state, registry or CollectorRegistry())  # type: ignore[arg-type]
            observers.append(metrics)
            self._metrics = MetricsServer(metrics)
        self.state.observe(*observers)  # the one place observers are registered
        self._grpc = None
        if settings.grpc_port is not None:
            from sidecar.serve.health_grpc import GrpcHealthServer

            self._grpc = GrpcHealthServer(self.state)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # container name -> its scheduler

    async def start(self) -> BoundPorts:
        s = self.settings
        health = await self._listen("health_port", self.http.start, s.health_port)
        grpc_port = (
            await self._listen("grpc_port", self._grpc.start, s.grpc_port)
            if self._grpc and s.grpc_port is not None
            else None
        )
        metrics_port = (
            await self._listen("metrics_port", self._metrics.start, s.metrics_port)
            if self._metrics and s.metrics_port is not None
            else None
        )
        ticker = Ticker()  # one wake-up per tick for every aggressive container
        for spec in self.config.containers:
            if spec.handler is None:
                continue
            probe = GuardedProbe(build_probe(spec.handler), spec.name, self.logger)
            scheduler = ContainerScheduler(self.state, spec, probe, s.aggressive, self.logger, ticker)
            self._tasks[spec.name] = asyncio.create_task(scheduler.run(), name=spec.name)
        return BoundPorts(health, grpc_port, metrics_port)

    async def _listen(self, setting: str, start: Callable[[str, int], Awaitable[int]], port: int) -> int:
        """Start one server; a port it can't have is a PortUnavailable naming the setting."""
        try:
            return await start(self.settings.bind, port)
        except OSError as exc:
            host = self.settings.bind.strip().removeprefix("[").removesuffix("]")
            raise PortUnavailable(setting, join_host_port(host, port), exc) from exc

    async def wait_terminated(self) -> None:
        """Return once SIGTERM came and the drain period is over."""
        await self.drainer.drained.wait()

    async def stop(self) -> None:
        self.drainer.cancel_timer()
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.http.stop()
        if self._grpc is not None:
            await self._grpc.stop()
        if self._metrics is not None:
            await self._metrics.stop()


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop for RunSettings.loop: uvloop when installed (the `uvloop` extra) unless "asyncio"."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            problem = "uvloop is not installed (pip install 'readiness-sidecar[uvloop]')"
            raise ConfigError(flag_name("loop"), problem=problem) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
