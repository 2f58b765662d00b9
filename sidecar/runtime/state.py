"""Per-container readiness and the aggregate answer, with change notification.

Schedulers write results in and get the verdict back; endpoints, the gRPC server,
metrics and logs read out. Waiters learn of changes from an asyncio.Event, never
by polling. Observers (metrics, logs) are added in one place, the app's wiring.

    state = AggregateState(config.containers, clock=Clock())
    state.observe(ReadinessMetrics(state, registry), TransitionLogger(logger, clock))
    verdict = state.record("app", result)  # applies the kubelet's thresholds
    ok = await state.wait_ready(timeout=5.0)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from probes.result import ProbeResult
from sidecar.model import NOT_PROBED_REASON, UNOBSERVED, UNOBSERVED_REASON, ContainerSpec, readiness_word


@dataclass(frozen=True, slots=True)
class Clock:
    """Time sources, passed in so tests can own them."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class Transition:
    container: str
    now_ready: bool
    reason: str  # the message of the attempt that decided it
    held_for: float  # seconds spent in the previous state


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where one recorded attempt left its container: all a scheduler needs to plan the next."""

    ready: bool
    consecutive_failures: int
    since: float  # monotonic time the current readiness (ready or not) began


@dataclass(slots=True)
class ContainerState:
    """What is known of one container. Only AggregateState mutates it."""

    spec: ContainerSpec
    since_mono: float  # when the current state began (sidecar start at first)
    since_wall: float
    ready: bool = False  # the kubelet's initial readiness is "not ready"
    consecutive_successes: int = 0
    consecutive_failures: int = 0
    attempts: int = 0
    last_result: ProbeResult | None = None
    time_to_first_ready: float | None = None  # seconds from sidecar start

    @property
    def status(self) -> str:
        """One of CONTAINER_STATES (sidecar.model): not probed yet is not_ready, as the kubelet starts it."""
        return readiness_word(self.ready) if self.spec.observed else UNOBSERVED

    @property
    def reason(self) -> str:
        if not self.spec.observed:
            return UNOBSERVED_REASON
        if self.last_result is None:
            return NOT_PROBED_REASON
        return self.last_result.message


class StateObserver:
    """Hooks for metrics and logs. Subclass and override what you need; all run inline
    on the loop, so they must be cheap and must not raise."""

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        pass

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        pass

    def aggregate_changed(self, state: AggregateState) -> None:
        pass

    def draining_changed(self, state: AggregateState) -> None:
        pass

    def routed_check_done(self, container: ContainerState, kind: str, result: ProbeResult) -> None:
        """One liveness or startup check (`kind`) the kubelet routed through /live or /startup ran."""


class AggregateState:
    def __init__(
        self,
        containers: Iterable[ContainerSpec],
        *,
        clock: Clock | None = None,
        observers: Iterable[StateObserver] = (),
    ) -> None:
        self.clock = clock or Clock()
        self.started_mono = self.clock.monotonic()
        self.started_wall = self.clock.wall()
        self.containers: dict[str, ContainerState] = {
            spec.name: ContainerState(spec, self.started_mono, self.started_wall) for spec in containers
        }
        self.observers: tuple[StateObserver, ...] = ()
        self.observe(*observers)
        self.draining = False
        self.ready = self._compute_ready()
        # Bumped on every recorded attempt, so cached response bodies know when to rebuild.
        self.revision = 0
        # A broadcast: every waiter of this generation wakes when it is set, then a new one starts.
        self._changed = asyncio.Event()
        # Schedulers that ended, with why: they never should while the sidecar runs.
        self._dead_schedulers: dict[str, str] = {}

    # -- reading -------------------------------------------------------------------

    def _compute_ready(self) -> bool:
        return not self.draining and all(c.ready for c in self.containers.values() if c.spec.gates)

    def uptime(self) -> float:
        return self.clock.monotonic() - self.started_mono

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next change (a container, the aggregate, draining, a dead scheduler); read it anew after."""
        return self._changed

    @property
    def dead_schedulers(self) -> Mapping[str, str]:
        """Container name -> why its scheduler ended; empty while every scheduler runs."""
        return self._dead_schedulers

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until predicate() holds or timeout passes; True if it holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return predicate()
        return True

    async def wait_ready(self, timeout: float) -> bool:
        return await self.wait_for(lambda: self.ready, timeout)

    # -- writing -------------------------------------------------------------------

    def observe(self, *observers: StateObserver) -> None:
        """Add observers; each hook then runs inline on every change, in the order added."""
        self.observers = (*self.observers, *observers)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _refresh_aggregate(self) -> None:
        ready = self._compute_ready()
        if ready != self.ready:
            self.ready = ready
            for observer in self.observers:
                observer.aggregate_changed(self)

    def record(self, name: str, result: ProbeResult, lateness: float = 0.0) -> Verdict:
        """Apply one attempt with the kubelet's threshold rules (prober/worker.go).

        An errored attempt is shown (last result, metrics, logs) but decides nothing: the
        kubelet's doProbe throws it away, so readiness and both counters stay as they were.
        """
        c = self.containers[name]
        timing = c.spec.timing
        c.attempts += 1
        c.last_result = result
        if result.outcome.ok:
            c.consecutive_successes += 1
            c.consecutive_failures = 0
        elif result.outcome.conclusive:
            c.consecutive_failures += 1
            c.consecutive_successes = 0
        self.revision += 1
        for observer in self.observers:
            observer.attempt_recorded(c, result, lateness)
        if not result.outcome.conclusive:
            return Verdict(c.ready, c.consecutive_failures, c.since_mono)

        if not c.ready and c.consecutive_successes >= timing.success_threshold:
            self._flip(c, True, result)
        elif c.ready and c.consecutive_failures >= timing.failure_threshold:
            self._flip(c, False, result)
        return Verdict(c.ready, c.consecutive_failures, c.since_mono)

    def record_routed_check(self, name: str, kind: str, result: ProbeResult) -> None:
        """Tell the observers of one /live or /startup check. It decides no readiness: the
        kubelet owns those checks' thresholds, so nothing here changes and no revision moves."""
        c = self.containers[name]
        for observer in self.observers:
            observer.routed_check_done(c, kind, result)

    def _flip(self, c: ContainerState, now_ready: bool, result: ProbeResult) -> None:
        now_mono = self.clock.monotonic()
        transition = Transition(c.spec.name, now_ready, result.message, now_mono - c.since_mono)
        c.ready = now_ready
        c.since_mono, c.since_wall = now_mono, self.clock.wall()
        if now_ready and c.time_to_first_ready is None:
            c.time_to_first_ready = now_mono - self.started_mono
        for observer in self.observers:
            observer.container_changed(c, transition)
        self._refresh_aggregate()
        self._notify()

    def set_draining(self, draining: bool) -> None:
        if draining == self.draining:
            return
        self.draining = draining
        self.revision += 1
        for observer in self.observers:
            observer.draining_changed(self)
        self._refresh_aggregate()
        self._notify()

    def scheduler_died(self, name: str, reason: str) -> None:
        """A container's scheduler ended: /healthz reports it, so the kubelet restarts the sidecar."""
        self._dead_schedulers[name] = reason
        self._notify()
