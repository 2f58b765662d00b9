"""When and how often each container is probed.

One ContainerScheduler per container, each its own task, so a scheduler's lifetime
(start, cancellation, a bug that kills it) is one container's alone. Two modes, chosen
by the probe's periodSeconds:

- periodSeconds > 0: the kubelet's own schedule (prober/worker.go): one attempt per
  period, ticks dropped when an attempt overruns, as Go's time.Ticker does. Each such
  container sleeps on its own.
- periodSeconds 0 or absent: aggressive mode (AggressivePolicy), tight while not ready.
  These containers share one Ticker: a wake-up costs more CPU than a refused attempt
  (docs/performance.md), so one wake-up starts every attempt that is due, in batches of at
  most TICK_BUDGET with the loop's own I/O between them, so that a burst (1,000 containers
  due at once) never holds the kubelet's /healthz and /ready for its whole length. An attempt
  the probe answers at once (a refused connect, probes/base.py) is recorded inline; one
  that must wait runs as its own task, so a hanging target never delays another
  container. The schedule is fixed-rate: the next attempt is due one interval after
  the last was due, skipping the ticks an overrunning attempt missed.

Whatever one attempt raises ends that attempt, never the schedule: the GuardedProbe turns a
probe's exception into a failure, and what the scheduler's own per-attempt code raises
(recording, planning the next attempt) is told to the same CrashLog, and the next attempt
comes on time, as the kubelet's worker goes on after a crash (pkg/kubelet/prober/worker.go,
doProbe's HandleCrash and keepGoing). A scheduler that dies all the same is /healthz's 503.

    ticker = Ticker()
    scheduler = ContainerScheduler(state, spec, GuardedProbe(probe, logger), AggressivePolicy(), logger, ticker)
    task = asyncio.create_task(scheduler.run())
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from probes.result import ProbeResult, unexpected_error
from sidecar.model import ContainerSpec
from sidecar.runtime.attempt import GuardedProbe
from sidecar.runtime.state import AggregateState, Verdict

# A timed-out attempt ends within this fraction of its timeout; used to tell a
# timeout from a quick refusal without parsing messages.
_TIMEOUT_FRACTION = 0.95
# A wake-up also starts what is due this close after it: uvloop's timers have millisecond
# resolution and may fire a little early, and one wake-up for two near ticks is the point.
TICK_SLACK = 0.0005
# One loop callback starts attempts for at most this long, then the loop reads its sockets
# before the rest: the kubelet's /healthz and /ready wait for a batch per loop iteration they
# need, not for every attempt due on the tick. A pod's few containers fit in one batch; 1,000
# refused attempts (40-90 ms) take ~100, at no CPU beyond noise without clients, 1.01-1.13x
# with one asking every 5 ms (docs/performance.md#the-shared-tick-and-the-kubelets-probes).
# At 1 ms, asyncio's answers during a burst were ~5x slower: a fresh connection there takes
# 4-5 loop iterations.
TICK_BUDGET = 0.0005


@dataclass(frozen=True, slots=True)
class AggressivePolicy:
    """The knobs of aggressive mode (periodSeconds 0 or absent), with their defaults.

    Not ready: probe every `interval` for `window` seconds, then double the interval
    every further window up to `max_interval`, so slow starters don't spin.
    Ready: probe every `steady_period`; after a failure, re-probe at `interval` so
    failureThreshold is confirmed in milliseconds.

        policy = AggressivePolicy(interval=0.002)
        policy.not_ready_interval(25.0)  # 0.008: doubled twice after two 10 s windows
    """

    # Defaults chosen from benchmarks/ (see docs/performance.md).
    # Ready detection p50 ~1.7-2.3 ms at ~1.1% (tcp) and ~4.6% (http 503) of a core per
    # not-ready container here; 5 ms halves the CPU at 2.7-3.3 ms (docs/performance.md, sweep).
    interval: float = 0.003
    timeout: float = 0.1  # queue-proxy's aggressiveProbeTimeout
    window: float = 10.0  # queue-proxy's 10 s poll window, then widen
    max_interval: float = 0.1  # where widening stops: ~0.1-0.3% CPU per slow starter
    steady_period: float = 1.0

    def not_ready_interval(self, not_ready_for: float) -> float:
        if self.window <= 0 or not_ready_for < self.window:
            return self.interval
        doublings = int(not_ready_for // self.window)
        return min(self.max_interval, self.interval * 2.0**doublings)


def next_due(last_due: float, interval: float, now: float) -> float:
    """Fixed-rate: one interval after the last due time, or, for an attempt that overran,
    the first tick of that schedule not before `now` (the missed ones are skipped)."""
    due = last_due + interval
    if due < now:
        due += interval * math.ceil((now - due) / interval)
    return due


class Ticker:
    """One timer for many schedules: each wake-up runs every callback that is due.

    No task and no future per wake-up, only the loop's timer: `at` keeps a heap of due
    times and arms one timer for the earliest. A wake-up's callbacks run in batches of at
    most `budget` seconds, each batch its own loop callback (`call_soon`), so what the loop
    has read meanwhile (a kubelet's request) is answered between them. Due order is kept,
    and nothing runs before it is due; the later batches only start later.

        ticker = Ticker()
        entry = ticker.at(loop.time() + 0.003, start_attempt)
        entry.cancel()
        ticker.wakeups   # how many times the timer fired
        ticker.batches   # how many times a wake-up's work went on in a later loop iteration
    """

    def __init__(self, budget: float = TICK_BUDGET) -> None:
        self._loop = asyncio.get_running_loop()
        self.budget = budget
        self._due: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()  # ties run in the order they were added
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.wakeups = 0
        self.batches = 0

    def at(self, when: float, callback: Callable[[float], None]) -> _Entry:
        """Call callback(when) at loop time `when`, from the next wake-up at or after it.
        The callback must not raise."""
        entry = _Entry(callback)
        heapq.heappush(self._due, (when, next(self._order), entry))
        if when < self._timer_at:
            self._arm(when)
        return entry

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._wake)

    def _wake(self) -> None:
        self._timer = None
        self.wakeups += 1
        self._run_due()

    def _run_due(self) -> None:
        # While the callbacks add their next due times, and between batches, `at` arms
        # nothing: one timer, at the end of the last batch.
        self._timer_at = -math.inf
        due = self._due
        horizon = self._loop.time() + TICK_SLACK
        budget_ends = time.perf_counter() + self.budget
        while due and due[0][0] <= horizon:
            when, _, entry = heapq.heappop(due)
            if not entry.cancelled:
                entry.callback(when)
                if time.perf_counter() >= budget_ends and due and due[0][0] <= horizon:
                    # The rest of what is due goes on after the loop has read its sockets once.
                    self.batches += 1
                    self._loop.call_soon(self._run_due)
                    return
        while due and due[0][2].cancelled:
            heapq.heappop(due)
        self._timer_at = math.inf
        if due:
            self._arm(due[0][0])


class _Entry:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[float], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ContainerScheduler:
    def __init__(
        self,
        state: AggregateState,
        spec: ContainerSpec,
        probe: GuardedProbe,
        policy: AggressivePolicy,
        logger: logging.Logger,
        ticker: Ticker | None = None,
    ) -> None:
        self.state = state
        self.spec = spec
        self.probe = probe
        self.policy = policy
        self.logger = logger
        self._loop = asyncio.get_running_loop()
        self._ticker = ticker  # aggressive mode's; one of its own if none is shared
        self._due = 0.0  # loop time the next attempt should start, for lateness

    async def run(self) -> None:
        """Probe until cancelled. A bug outside any attempt is recorded in the state (/healthz answers 503)."""
        try:
            await self._run()
        except Exception as exc:
            self.logger.error("scheduler %s died: %r", self.spec.name, exc)
            self.state.scheduler_died(self.spec.name, repr(exc))

    async def _run(self) -> None:
        timing = self.spec.timing
        # initialDelaySeconds counts from sidecar start, as the kubelet counts from container start.
        delay = timing.initial_delay - (self.state.clock.monotonic() - self.state.started_mono)
        self._due = self._loop.time() + max(delay, 0.0)
        if timing.aggressive:
            await _AggressiveRun(self, self._ticker or Ticker()).run()
        else:
            await self._sleep_until_due()
            await self._run_periodic(timing.period)

    def crashed(self, exc: Exception) -> None:
        """Tell what the scheduler's own per-attempt code raised; the schedule goes on."""
        self.probe.crash_log.report(self.spec.name, f"scheduler: {unexpected_error(exc)}", exc)

    async def _sleep_until_due(self) -> None:
        wait = self._due - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _run_periodic(self, period: float) -> None:
        """Plain kubelet semantics: one attempt per period; missed ticks are dropped."""
        timeout = self.spec.timing.timeout
        while True:
            lateness = max(0.0, self._loop.time() - self._due)
            try:
                self.state.record(self.spec.name, await self.probe.attempt(timeout), lateness)
            except Exception as exc:  # this attempt's, not the schedule's: go on
                self.crashed(exc)
            # The attempt may have overrun: skip the ticks it missed, like time.Ticker.
            self._due = next_due(self._due, period, self._loop.time())
            await self._sleep_until_due()


class _AggressiveRun:
    """One container's aggressive schedule, driven by the shared ticker's callbacks.

    Its task only waits for the end: cancellation. What a callback raises ends that
    attempt alone: it is told (ContainerScheduler.crashed) and the next one is planned.
    """

    def __init__(self, scheduler: ContainerScheduler, ticker: Ticker) -> None:
        self.scheduler = scheduler
        self.ticker = ticker
        self.state = scheduler.state
        self.name = scheduler.spec.name
        self.policy = scheduler.policy
        self._loop = scheduler._loop
        self._full_timeout = scheduler.spec.timing.timeout
        self._short_timeout = min(self._full_timeout, self.policy.timeout)
        self._verdict = Verdict(ready=False, consecutive_failures=0, since=self.state.started_mono)
        self._timeout = self._short_timeout
        self._last_timed_out_short = False
        self._due = scheduler._due
        self._entry: _Entry | None = None
        self._in_flight: asyncio.Task[ProbeResult] | None = None
        self._ended: asyncio.Future[None] = self._loop.create_future()

    async def run(self) -> None:
        self._entry = self.ticker.at(self._due, self._start_due)
        try:
            await self._ended
        finally:
            if self._entry is not None:
                self._entry.cancel()
            if self._in_flight is not None:
                # Let a task created this very iteration take its first step before it is
                # cancelled: one cancelled before it runs never runs the cleanup (a socket
                # closed, a process group killed) of the attempt `start` already began.
                await asyncio.sleep(0)
                if self._in_flight is not None:
                    self._in_flight.cancel()
                    await asyncio.wait([self._in_flight])

    def _start_due(self, due: float) -> None:
        """The ticker's callback: start the attempt that is due, inline if it is known at once."""
        try:
            self._entry = None
            # Short attempts keep a not-ready container's probing tight; after one times
            # out, the next gets the full timeoutSeconds so a slow but healthy target can
            # still pass (queue-proxy's fixed 100 ms never lets it).
            ready = self._verdict.ready
            self._timeout = self._full_timeout if ready or self._last_timed_out_short else self._short_timeout
            lateness = max(0.0, self._loop.time() - due)
            started = self.scheduler.probe.start(self._timeout)
            if isinstance(started, ProbeResult):
                self._record(started, lateness)
                return
            self._in_flight = task = self._loop.create_task(started, name=f"probe {self.name}")
            task.add_done_callback(lambda done: self._finished(done, lateness))
        except Exception as exc:
            self._go_on(exc)

    def _finished(self, task: asyncio.Task[ProbeResult], lateness: float) -> None:
        self._in_flight = None
        if task.cancelled():
            return  # the run is ending
        try:
            self._record(task.result(), lateness)
        except Exception as exc:
            self._go_on(exc)

    def _record(self, result: ProbeResult, lateness: float) -> None:
        self._verdict = self.state.record(self.name, result, lateness)
        timeout = self._timeout
        self._last_timed_out_short = (
            timeout == self._short_timeout < self._full_timeout
            and not result.outcome.ok
            and result.duration >= self._short_timeout * _TIMEOUT_FRACTION
        )
        self._plan_next()

    def _plan_next(self) -> None:
        verdict, policy = self._verdict, self.policy
        if verdict.ready:
            # A failure while ready is confirmed fast, not one steady period at a time.
            interval = policy.interval if verdict.consecutive_failures else policy.steady_period
        else:
            interval = policy.not_ready_interval(self.state.clock.monotonic() - verdict.since)
        # Fixed-rate: one interval after the last due time, so containers on the same tick
        # stay on it; an attempt that overran skips the ticks it missed.
        self._due = next_due(self._due, interval, self._loop.time() - TICK_SLACK)
        if not self._ended.done():
            self._entry = self.ticker.at(self._due, self._start_due)

    def _go_on(self, exc: Exception) -> None:
        """An attempt's callback raised: tell it, and plan the next attempt unless one is planned or running."""
        try:
            self.scheduler.crashed(exc)
            if self._entry is None and self._in_flight is None and not self._ended.done():
                self._plan_next()
        except Exception as again:  # no next attempt can be planned: the run ends (/healthz's 503)
            if not self._ended.done():
                self._ended.set_exception(again)
