"""Scheduling semantics (docs/behaviour.md#scheduling) against real HTTP targets on loopback.

Thresholds are asserted by counting attempts, which is exact; times only get
generous bounds (timing itself is measured in benchmarks/)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest

from probes import Started, build_probe
from probes.base import ProbeBase
from probes.result import Outcome, ProbeResult
from probes.spec import ExecSpec, HttpGetSpec, TcpSocketSpec
from sidecar.model import ContainerSpec, ProbeTiming
from sidecar.runtime.attempt import GuardedProbe
from sidecar.runtime.scheduler import TICK_SLACK, AggressivePolicy, ContainerScheduler, Ticker
from sidecar.runtime.state import AggregateState, ContainerState, StateObserver, Transition
from tests.probes.test_tcp_socket import refusing
from tests.target_apps import FlipTarget

LOGGER = logging.getLogger("readiness_sidecar.test")


class TransitionRecorder(StateObserver):
    def __init__(self) -> None:
        self.transitions: list[tuple[float, Transition, int, int]] = []

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        self.transitions.append(
            (time.monotonic(), transition, container.consecutive_successes,
             container.consecutive_failures)
        )


def http_spec(target: FlipTarget, name: str = "app", **timing: float) -> ContainerSpec:
    return ContainerSpec(name, HttpGetSpec(port=target.port, path="/health"), ProbeTiming(**timing))  # type: ignore[arg-type]


async def run_schedulers(
    state: AggregateState, policy: AggressivePolicy, ticker: Ticker | None = None
) -> list[asyncio.Task[None]]:
    """One scheduler per container, every aggressive one on one shared ticker, as the app runs them."""
    ticker = ticker or Ticker()
    tasks = []
    for name, c in state.containers.items():
        assert c.spec.handler is not None
        probe = GuardedProbe(build_probe(c.spec.handler), name, LOGGER)
        scheduler = ContainerScheduler(state, c.spec, probe, policy, LOGGER, ticker)
        tasks.append(asyncio.create_task(scheduler.run()))
    return tasks


@pytest.fixture
async def target() -> AsyncIterator[FlipTarget]:
    t = await FlipTarget.start(status=503)
    yield t
    await t.stop()


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_period_mode_applies_success_and_failure_thresholds_exactly(target: FlipTarget) -> None:
    recorder = TransitionRecorder()
    state = AggregateState(
        [http_spec(target, period=0.05, success_threshold=2, failure_threshold=3)], observers=[recorder]
    )
    tasks = await run_schedulers(state, AggressivePolicy())
    try:
        await asyncio.sleep(0.2)
        assert not state.ready, "503s must never make it ready"
        target.status = 200
        assert await state.wait_ready(2.0)
        target.status = 500
        assert await state.wait_for(lambda: not state.ready, 2.0)
    finally:
        await stop(tasks)
    (_, up, up_successes, _), (_, down, _, down_failures) = recorder.transitions
    assert up.now_ready and up_successes == 2, "ready exactly at successThreshold"
    assert not down.now_ready and down_failures == 3, "unready exactly at failureThreshold"
    assert down.reason.startswith("HTTP 500")


async def test_period_mode_probes_once_per_period_even_when_ready(target: FlipTarget) -> None:
    target.status = 200
    state = AggregateState([http_spec(target, period=0.1)])
    tasks = await run_schedulers(state, AggressivePolicy(steady_period=0.01))
    try:
        await asyncio.sleep(1.0)
    finally:
        await stop(tasks)
    # kubelet semantics: ~10 attempts in 1 s at period 0.1, nothing aggressive.
    assert 7 <= len(target.request_times) <= 12


async def test_aggressive_mode_detects_ready_fast_then_slows_to_steady_period(target: FlipTarget) -> None:
    policy = AggressivePolicy(interval=0.005, steady_period=0.25)
    state = AggregateState([http_spec(target)])
    tasks = await run_schedulers(state, policy)
    try:
        await asyncio.sleep(0.3)
        attempts_not_ready = len(target.request_times)
        target.status = 200
        flipped = time.monotonic()
        assert await state.wait_ready(2.0)
        detected = time.monotonic() - flipped
        before = len(target.request_times)
        await asyncio.sleep(1.0)
        steady_attempts = len(target.request_times) - before
    finally:
        await stop(tasks)
    assert attempts_not_ready >= 10, "not ready: probed at the short interval"
    assert detected < 0.25, f"aggressive detection took {detected:.3f}s"
    assert 2 <= steady_attempts <= 6, f"ready: steady period, got {steady_attempts} attempts in 1 s"


async def test_failure_while_ready_is_confirmed_by_fast_reprobes(target: FlipTarget) -> None:
    recorder = TransitionRecorder()
    policy = AggressivePolicy(interval=0.005, steady_period=0.5)
    state = AggregateState([http_spec(target, failure_threshold=3)], observers=[recorder])
    target.status = 200
    tasks = await run_schedulers(state, policy)
    try:
        assert await state.wait_ready(2.0)
        await asyncio.sleep(0.6)  # land somewhere inside the steady period
        target.status = 503
        flipped = time.monotonic()
        assert await state.wait_for(lambda: not state.ready, 3.0)
        confirmed = time.monotonic() - flipped
    finally:
        await stop(tasks)
    _, _down, _, failures = recorder.transitions[-1]
    assert failures == 3
    # At most one steady period to see the first failure, then milliseconds, not 2 more periods.
    assert confirmed < 0.5 + 0.3, f"took {confirmed:.3f}s"


async def test_slow_starters_are_probed_at_a_widening_interval(target: FlipTarget) -> None:
    policy = AggressivePolicy(interval=0.005, window=0.3, max_interval=0.08)
    state = AggregateState([http_spec(target)])
    tasks = await run_schedulers(state, policy)
    start = time.monotonic()
    try:
        await asyncio.sleep(1.8)
    finally:
        await stop(tasks)
    early = target.requests_between(start, start + 0.3) / 0.3
    late = target.requests_between(start + 1.3, start + 1.8) / 0.5
    assert late <= 20, f"after widening: {late:.0f}/s, expected ~12/s at 80 ms"
    assert early >= 4 * late, f"early {early:.0f}/s vs late {late:.0f}/s"


async def test_initial_delay_is_respected(target: FlipTarget) -> None:
    target.status = 200
    state = AggregateState([http_spec(target, initial_delay=0.4)])
    start = time.monotonic()
    tasks = await run_schedulers(state, AggressivePolicy())
    try:
        assert await state.wait_ready(3.0)
    finally:
        await stop(tasks)
    assert target.request_times[0] - start >= 0.38


async def test_slow_but_healthy_target_passes_despite_short_aggressive_timeout() -> None:
    slow = await FlipTarget.start(status=200, delay=0.15)
    try:
        state = AggregateState([http_spec(slow, timeout=1.0)])
        tasks = await run_schedulers(state, AggressivePolicy(timeout=0.05))
        try:
            assert await state.wait_ready(3.0), "a 150 ms health check must pass with timeoutSeconds 1"
        finally:
            await stop(tasks)
    finally:
        await slow.stop()


async def test_a_hanging_probe_does_not_delay_another_container(target: FlipTarget) -> None:
    hang = ContainerSpec("hang", ExecSpec(("sleep", "3600")), ProbeTiming(timeout=1.0))
    state = AggregateState([hang, http_spec(target, name="app")])
    tasks = await run_schedulers(state, AggressivePolicy(timeout=1.0))
    try:
        await asyncio.sleep(0.2)
        target.status = 200
        flipped = time.monotonic()
        assert await state.wait_for(lambda: state.containers["app"].ready, 2.0)
        assert time.monotonic() - flipped < 0.3
        target.status = 503
        assert await state.wait_for(lambda: not state.containers["app"].ready, 2.0)
    finally:
        await stop(tasks)
    assert not state.containers["hang"].ready
    assert not state.ready, "the hanging container still gates the aggregate"


def test_not_ready_interval_doubles_per_window_up_to_the_cap() -> None:
    policy = AggressivePolicy(interval=0.005, window=10, max_interval=0.1)
    assert [policy.not_ready_interval(t) for t in (0, 9.9, 10, 20, 30, 40, 50, 500)] == [
        0.005, 0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1]


def test_state_starts_not_ready_and_ignores_unobserved_and_optional_containers() -> None:
    state = AggregateState([
        ContainerSpec("app", TcpSocketSpec(port=1), ProbeTiming(success_threshold=1)),
        ContainerSpec("side", TcpSocketSpec(port=2), required=False),
        ContainerSpec("blind", None),
    ])
    assert not state.ready
    assert state.containers["app"].status == "not_ready"
    state.record("app", ProbeResult(Outcome.WARNING, "HTTP 302", 0.001))
    assert state.ready, "a warning counts as success; optional and unobserved don't gate"
    state.set_draining(True)
    assert not state.ready


async def test_aggressive_containers_share_one_wake_up_per_tick() -> None:
    # A wake-up costs more than a refused attempt (docs/performance.md): four not-ready
    # containers on one ticker are started by the same wake-up, every tick.
    with contextlib.ExitStack() as ports:
        specs = [ContainerSpec(f"c{i}", TcpSocketSpec(port=ports.enter_context(refusing()))) for i in range(4)]
        state = AggregateState(specs)
        ticker = Ticker()
        tasks = await run_schedulers(state, AggressivePolicy(interval=0.005), ticker)
        try:
            await asyncio.sleep(0.3)
        finally:
            await stop(tasks)
    attempts = [c.attempts for c in state.containers.values()]
    assert min(attempts) >= 10, attempts
    assert max(attempts) - min(attempts) <= 1, "all four are due on the same ticks"
    assert ticker.wakeups <= max(attempts) + 1, f"{ticker.wakeups} wake-ups for {attempts} attempts"


async def test_a_long_tick_lets_the_loop_read_its_sockets_between_batches() -> None:
    # 1,000 containers due on one tick are ~40 ms of refused attempts: a kubelet's request
    # arriving meanwhile is read between batches of TICK_BUDGET, not after the last attempt.
    # Each callback here busies 1 ms, as ~25 refused attempts do; the socket stands for the request.
    loop = asyncio.get_running_loop()
    ticker = Ticker(budget=0.002)
    started: list[tuple[float, float]] = []  # (due, loop time it ran)
    read_after: list[int] = []  # how many callbacks had run when the loop read the socket
    sender, receiver = socket.socketpair()
    receiver.setblocking(False)
    loop.add_reader(receiver, lambda: (receiver.recv(16), read_after.append(len(started))))

    def busy(due: float) -> None:
        if not started:
            sender.send(b"GET")  # the request arrives as the burst begins
        started.append((due, loop.time()))
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass

    try:
        tick = loop.time() + 0.02
        dues = [tick + i * 0.0001 for i in range(30)]  # one tick's worth, in order, 30 ms of work
        for due in dues:
            ticker.at(due, busy)
        await asyncio.sleep(0.1)
    finally:
        loop.remove_reader(receiver)
        sender.close()
        receiver.close()
    assert [due for due, _ in started] == dues, "every callback ran once, in due order"
    assert all(ran >= due - TICK_SLACK for due, ran in started), "none before it was due"
    assert read_after and read_after[0] < len(dues) // 2, f"the request waited for {read_after} callbacks"
    assert ticker.batches >= 5, ticker.batches


class SlowProbe(ProbeBase):
    """Fails after `seconds` on the loop, and notes the loop time each attempt began."""

    def __init__(self, seconds: float) -> None:
        self.spec = TcpSocketSpec(port=1)
        self.seconds = seconds
        self.started: list[float] = []

    def start(self, timeout: float) -> Started:
        self.started.append(asyncio.get_running_loop().time())
        return self._fail()

    async def _fail(self) -> ProbeResult:
        await asyncio.sleep(self.seconds)
        return ProbeResult(Outcome.FAILURE, "slow", self.seconds)


class LatenessRecorder(StateObserver):
    def __init__(self) -> None:
        self.lateness: list[float] = []

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        self.lateness.append(lateness)


async def test_the_aggressive_schedule_is_fixed_rate_and_skips_missed_ticks() -> None:
    # An attempt that takes 1.5 intervals misses one tick: the next is due two intervals
    # after the last was due, never 1.5 intervals after it began, as interval-after-end gives.
    interval = 0.02
    probe = SlowProbe(1.5 * interval)
    recorder = LatenessRecorder()
    spec = ContainerSpec("slow", probe.spec)
    state = AggregateState([spec], observers=[recorder])
    guarded = GuardedProbe(probe, "slow", LOGGER)
    scheduler = ContainerScheduler(state, spec, guarded, AggressivePolicy(interval=interval), LOGGER)
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.5)
    finally:
        await stop([task])
    # When each was due: when it began, less how late it began (recorded with the result).
    due = [began - late for began, late in zip(probe.started, recorder.lateness, strict=False)]
    steps = [(b - a) / interval for a, b in itertools.pairwise(due)]
    assert len(steps) >= 5, steps
    assert all(round(step) >= 2 and abs(step - round(step)) < 0.05 for step in steps), steps


class BrokenObserver(StateObserver):
    """An observer with a bug that raises on its first `failures` calls: record() raises with it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"observer bug {self.calls}")


@pytest.mark.parametrize("period", [0.0, 0.02], ids=["aggressive", "period"])
async def test_an_exception_in_the_schedulers_own_code_ends_one_attempt_not_the_schedule(
    period: float, caplog: pytest.LogCaptureFixture
) -> None:
    # The kubelet's worker eats a panic and probes on the next tick
    # (kubernetes pkg/kubelet/prober/worker.go, doProbe: HandleCrash sets keepGoing = true).
    ready = await FlipTarget.start(200)
    broken = BrokenObserver(failures=20)
    state = AggregateState([http_spec(ready, period=period)], observers=[broken])
    logger = logging.getLogger(f"readiness_sidecar.test.crash.{period}")  # a CrashLog of its own
    probe = GuardedProbe(build_probe(state.containers["app"].spec.handler), "app", logger)  # type: ignore[arg-type]
    task = asyncio.create_task(
        ContainerScheduler(state, state.containers["app"].spec, probe, AggressivePolicy(), logger).run()
    )
    try:
        with caplog.at_level(logging.ERROR, logger=logger.name):
            assert await state.wait_ready(10)
        assert broken.calls > broken.failures and not task.done()
        assert state.dead_schedulers == {}
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and lines[0].startswith("app: scheduler: probe error: RuntimeError"), lines
    finally:
        await stop([task])
        await ready.stop()
