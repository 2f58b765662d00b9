"""One attempt of one probe, guarded: what the schedulers, `check` and /live all run.

This is the kubelet's prober for one attempt: an attempt that errs (Outcome.ERROR) is
retried at once, up to MAX_PROBE_RETRIES times in all. A probe never raises for what a
target does; this is also where that promise is kept for what nobody foresaw (a bug,
an exhausted resource such as EMFILE): the exception becomes a failure with a short
reason naming the errno, told by CrashLog in at most one line per container and per
reason every CRASH_LOG_EVERY seconds, and the caller goes on. The schedulers tell what
their own per-attempt code raises to the same CrashLog and go on too: the kubelet's
worker does both (pkg/kubelet/prober/worker.go, doProbe: `defer
runtime.HandleCrash(func(_ interface{}) { keepGoing = true })`, the panic logged and eaten,
the next tick probed).

    probe = GuardedProbe(build_probe(spec.handler), spec.name, logger)
    result = await probe.attempt(timeout=1.0)      # never raises, but for cancellation
    started = probe.start(timeout=1.0)             # a ProbeResult now, or a coroutine (probes/base.py)
    rows = await check_once(config, logger)        # `check`: every container once, in parallel
    result = await RoutedChecks(specs, logger, state).check("app")   # /live/app
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from probes import HandlerSpec, Probe, ProbeResult, Started, build_probe
from probes.base import finish
from probes.result import MAX_MESSAGE_CHARS, Outcome, sanitize, unexpected_error
from sidecar.model import LIVENESS, ROUTED_CHECK_KINDS, ContainerSpec, SidecarConfig
from sidecar.runtime.state import AggregateState

# A probe that keeps crashing at a 3 ms interval must not write 200 lines a second, and
# EMFILE hits every container at once: one line a minute per container and per reason says
# all there is (each container's own reason is in /status, on every attempt).
CRASH_LOG_EVERY = 60.0
# Reasons remembered for the limit; more distinct ones than this are a flood, forgotten oldest first.
_CRASH_REASONS_KEPT = 256
# The kubelet runs an attempt that errs up to this many times, back to back, before it
# gives up on it (pkg/kubelet/prober/prober.go, maxProbeRetries and runProbeWithRetries).
MAX_PROBE_RETRIES = 3


class GuardedProbe:
    """One attempt as the kubelet's prober makes it: retried at once while it errs, never raising.

    An unexpected exception is a failure with a short reason. The result of the last try is
    the attempt's; its duration covers every try.
    """

    def __init__(self, probe: Probe, name: str, logger: logging.Logger, crash_log: CrashLog | None = None) -> None:
        self.probe = probe
        self.name = name
        self.logger = logger
        self.crash_log = crash_log or CrashLog.of(logger)  # the logger's: shared by the sidecar's guards

    def start(self, timeout: float) -> Started:
        """Begin one attempt: its result when the probe knew it at once, else the coroutine
        that finishes it (retries included)."""
        begun = time.monotonic()
        try:
            started = self.probe.start(timeout)
        except Exception as exc:
            return self._crashed(exc, begun)
        if not isinstance(started, ProbeResult):
            return self._finish(started, timeout, begun)
        if started.outcome.conclusive:  # the hot path: a refused connect, answered inline
            return started
        return self._retry(started, timeout, begun)

    async def attempt(self, timeout: float) -> ProbeResult:
        return await finish(self.start(timeout))

    async def _finish(self, pending: Coroutine[Any, Any, ProbeResult], timeout: float, begun: float) -> ProbeResult:
        result = await self._guard(pending, begun)
        if result.outcome.conclusive:  # one try, its own result
            return result
        return await self._retry(result, timeout, begun)

    async def _retry(self, result: ProbeResult, timeout: float, begun: float) -> ProbeResult:
        for _ in range(MAX_PROBE_RETRIES - 1):
            result = await self._try(timeout)
            if result.outcome.conclusive:
                break
        return ProbeResult(result.outcome, result.message, time.monotonic() - begun)

    async def _try(self, timeout: float) -> ProbeResult:
        begun = time.monotonic()
        try:
            started = self.probe.start(timeout)
        except Exception as exc:
            return self._crashed(exc, begun)
        return await self._guard(started, begun)

    async def _guard(self, started: Started, begun: float) -> ProbeResult:
        try:
            return await finish(started)
        except Exception as exc:
            return self._crashed(exc, begun)

    def _crashed(self, exc: Exception, begun: float) -> ProbeResult:
        message = unexpected_error(exc)
        self.crash_log.report(self.name, message, exc)
        return ProbeResult(Outcome.FAILURE, message, time.monotonic() - begun)


class CrashLog:
    """Where what no probe foresaw is told: at most one line per container, and one per
    reason, every CRASH_LOG_EVERY seconds; the next line says how many were held back.
    One per logger, so every guard and scheduler of a sidecar shares it.

        CrashLog.of(logger).report("app", "probe error: EMFILE: too many open files", exc)
    """

    _by_logger: dict[logging.Logger, CrashLog] = {}  # loggers live as long as the process

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self._clock = clock
        self._container_logged: dict[str, float] = {}
        self._reason_logged: dict[str, float] = {}
        self._held_back = 0
        self.lines = 0  # lines written, for tests and curiosity

    @classmethod
    def of(cls, logger: logging.Logger) -> CrashLog:
        crash_log = cls._by_logger.get(logger)
        if crash_log is None:
            crash_log = cls._by_logger[logger] = cls(logger)
        return crash_log

    def report(self, name: str, reason: str, exc: BaseException) -> None:
        now = self._clock()
        if (
            now - self._container_logged.get(name, -math.inf) < CRASH_LOG_EVERY
            or now - self._reason_logged.get(reason, -math.inf) < CRASH_LOG_EVERY
        ):
            self._held_back += 1
            return
        self._container_logged[name] = self._reason_logged[reason] = now
        for seen in (self._container_logged, self._reason_logged):
            if len(seen) > _CRASH_REASONS_KEPT:
                del seen[next(iter(seen))]
        held, self._held_back = self._held_back, 0
        self.lines += 1
        self.logger.error(
            "%s: %s (%s); going on (%d more held back: one line per container and per reason every %gs)",
            name,
            reason,
            _describe(exc),
            held,
            CRASH_LOG_EVERY,
        )


def _describe(exc: BaseException) -> str:
    """The exception and where it was raised: file and line, without reading the source
    (which needs a descriptor, and may be what ran out)."""
    text = sanitize(repr(exc), MAX_MESSAGE_CHARS)
    where = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        where = f" at {frame.f_code.co_filename}:{lineno}"
    return text + where


async def attempt_once(name: str, handler: HandlerSpec, timeout: float, logger: logging.Logger) -> ProbeResult:
    """One guarded attempt on a probe built for it alone."""
    return await GuardedProbe(build_probe(handler), name, logger).attempt(timeout)


@dataclass(frozen=True, slots=True)
class CheckRow:
    container: ContainerSpec
    result: ProbeResult | None  # None: unobserved, nothing was run

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.outcome.ok

    @property
    def result_name(self) -> str:
        return self.result.outcome.value if self.result else "unobserved"


async def _check_row(spec: ContainerSpec, logger: logging.Logger) -> CheckRow:
    if spec.handler is None:
        return CheckRow(spec, None)
    return CheckRow(spec, await attempt_once(spec.name, spec.handler, spec.timing.timeout, logger))


async def check_once(config: SidecarConfig, logger: logging.Logger, *, all_containers: bool = False) -> list[CheckRow]:
    """One attempt per container, concurrently: the round costs the slowest probe."""
    chosen = [c for c in config.containers if all_containers or c.required]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_check_row(spec, logger)) for spec in chosen]
    return [task.result() for task in tasks]


def check_exit_code(rows: list[CheckRow]) -> int:
    """0 when every required, observed container passed (warnings pass); else 1."""
    gating = [row for row in rows if row.container.gates]
    return 0 if all(row.passed for row in gating) else 1


class RoutedChecks:
    """The liveness and startup checks `inject --rewrite-liveness` routes through the sidecar
    (GET /live/<name>, /startup/<name>).

    The kubelet owns their period and thresholds: each call runs one attempt, now. Concurrent
    callers share one in-flight attempt per container and kind, since anything that reaches the
    health port may call it and each attempt starts a connection or a process. Each attempt is
    told to the state's observers once (metrics), however many callers shared it.

        checks = RoutedChecks(config.containers, logger, state)
        result = await checks.check("app", STARTUP)   # /startup/app
    """

    def __init__(
        self, specs: Iterable[ContainerSpec], logger: logging.Logger, state: AggregateState | None = None
    ) -> None:
        self._checks = {
            (spec.name, kind): check
            for spec in specs
            for kind in ROUTED_CHECK_KINDS
            if (check := spec.routed_check(kind)) is not None
        }
        self.logger = logger
        self._state = state
        self._in_flight: dict[tuple[str, str], asyncio.Task[ProbeResult]] = {}

    def __contains__(self, name: str) -> bool:
        """Whether `name` has a liveness check."""
        return self.has(name, LIVENESS)

    def has(self, name: str, kind: str) -> bool:
        return (name, kind) in self._checks

    async def check(self, name: str, kind: str = LIVENESS) -> ProbeResult:
        """Run (or join) one attempt of `name`'s `kind` check; KeyError if it has none."""
        key = (name, kind)
        handler, timeout = self._checks[key]
        task = self._in_flight.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._attempt(name, kind, handler, timeout), name=f"{kind} {name}")
            self._in_flight[key] = task
        # A caller that goes away must not cancel the attempt the others are waiting on.
        return await asyncio.shield(task)

    async def _attempt(self, name: str, kind: str, handler: HandlerSpec, timeout: float) -> ProbeResult:
        result = await attempt_once(name, handler, timeout, self.logger)
        if self._state is not None:
            self._state.record_routed_check(name, kind, result)
        return result
