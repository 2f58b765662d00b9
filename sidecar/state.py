"""Per-container readiness and the aggregate answer, with change notification.

Schedulers write results in; endpoints, the gRPC server, metrics and logs read
out. Waiters learn of changes from an asyncio.Event, never by polling.

    state = AggregateState(config.containers, clock=Clock())
    state.record("app", result)          # applies the kubelet's thresholds
    ok = await state.wait_ready(timeout=5.0)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from probes.result import ProbeResult
from sidecar.spec import ContainerSpec


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
    wall_time: float


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
    last_attempt_wall: float | None = None
    time_to_first_ready: float | None = None  # seconds from sidecar start

    @property
    def status(self) -> str:
        if not self.spec.observed:
            return "unobserved"
        if self.ready:
            return "ready"
        return "not_ready" if self.attempts else "pending"

    @property
    def reason(self) -> str:
        if not self.spec.observed:
            return "left to the kubelet"
        if self.last_result is None:
            return "not probed yet"
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


@dataclass(slots=True)
class _Gate:
    """A broadcast: every waiter of this generation wakes when it fires."""

    event: asyncio.Event = field(default_factory=asyncio.Event)


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
        self.observers: list[StateObserver] = list(observers)
        self.draining = False
        self.ready = self._compute_ready()
        # Bumped on every recorded attempt, so cached response bodies know when to rebuild.
        self.revision = 0
        self._gate = _Gate()

    # -- reading -------------------------------------------------------------------

    def _compute_ready(self) -> bool:
        return not self.draining and all(c.ready for c in self.containers.values() if c.spec.gates)

    def uptime(self) -> float:
        return self.clock.monotonic() - self.started_mono

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until predicate() holds or timeout passes; True if it holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            gate = self._gate.event
            try:
                async with asyncio.timeout(remaining):
                    await gate.wait()
            except TimeoutError:
                return predicate()
        return True

    async def wait_ready(self, timeout: float) -> bool:
        return await self.wait_for(lambda: self.ready, timeout)

    async def next_change(self) -> None:
        """Return at the next readiness change (container, aggregate or draining)."""
        await self._gate.event.wait()

    # -- writing -------------------------------------------------------------------

    def _notify(self) -> None:
        gate, self._gate = self._gate, _Gate()
        gate.event.set()

    def _refresh_aggregate(self) -> None:
        ready = self._compute_ready()
        if ready != self.ready:
            self.ready = ready
            for observer in self.observers:
                observer.aggregate_changed(self)

    def record(self, name: str, result: ProbeResult, lateness: float = 0.0) -> Transition | None:
        """Apply one attempt with the kubelet's threshold rules (prober/worker.go)."""
        c = self.containers[name]
        timing = c.spec.timing
        c.attempts += 1
        c.last_result = result
        c.last_attempt_wall = self.clock.wall()
        if result.outcome.ok:
            c.consecutive_successes += 1
            c.consecutive_failures = 0
        else:
            c.consecutive_failures += 1
            c.consecutive_successes = 0
        self.revision += 1
        for observer in self.observers:
            observer.attempt_recorded(c, result, lateness)

        transition = None
        if not c.ready and c.consecutive_successes >= timing.success_threshold:
            transition = self._flip(c, True, result)
        elif c.ready and c.consecutive_failures >= timing.failure_threshold:
            transition = self._flip(c, False, result)
        return transition

    def _flip(self, c: ContainerState, now_ready: bool, result: ProbeResult) -> Transition:
        now_mono, now_wall = self.clock.monotonic(), self.clock.wall()
        transition = Transition(c.spec.name, now_ready, result.message, now_mono - c.since_mono, now_wall)
        c.ready = now_ready
        c.since_mono, c.since_wall = now_mono, now_wall
        if now_ready and c.time_to_first_ready is None:
            c.time_to_first_ready = now_mono - self.started_mono
        for observer in self.observers:
            observer.container_changed(c, transition)
        self._refresh_aggregate()
        self._notify()
        return transition

    def set_draining(self, draining: bool) -> None:
        if draining == self.draining:
            return
        self.draining = draining
        self.revision += 1
        for observer in self.observers:
            observer.draining_changed(self)
        self._refresh_aggregate()
        self._notify()
