"""When and how often each container is probed.

One ContainerScheduler per container, each its own task, so a hanging probe
never delays another and a round over N containers costs the slowest probe.
Two modes, chosen by the probe's periodSeconds:

- periodSeconds > 0: the kubelet's own schedule (prober/worker.go): one attempt per
  period, ticks dropped when an attempt overruns, as Go's time.Ticker does.
- periodSeconds 0 or absent: aggressive mode (AggressivePolicy), tight while not ready.

    scheduler = ContainerScheduler(state, spec, GuardedProbe(probe, logger), AggressivePolicy(), logger)
    task = asyncio.create_task(scheduler.run())
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from sidecar.model import ContainerSpec
from sidecar.runtime.attempt import GuardedProbe
from sidecar.runtime.state import AggregateState, Verdict

# A timed-out attempt ends within this fraction of its timeout; used to tell a
# timeout from a quick refusal without parsing messages.
_TIMEOUT_FRACTION = 0.95


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
    interval: float = 0.005  # beats queue-proxy's 50 ms retry by 10x at ~1-3% CPU
    timeout: float = 0.1  # queue-proxy's aggressiveProbeTimeout
    window: float = 10.0  # queue-proxy's 10 s poll window, then widen
    max_interval: float = 0.1  # where widening stops: ~0.1-0.3% CPU per slow starter
    steady_period: float = 1.0

    def not_ready_interval(self, not_ready_for: float) -> float:
        if self.window <= 0 or not_ready_for < self.window:
            return self.interval
        doublings = int(not_ready_for // self.window)
        return min(self.max_interval, self.interval * 2.0**doublings)


class ContainerScheduler:
    def __init__(
        self,
        state: AggregateState,
        spec: ContainerSpec,
        probe: GuardedProbe,
        policy: AggressivePolicy,
        logger: logging.Logger,
    ) -> None:
        self.state = state
        self.spec = spec
        self.probe = probe
        self.policy = policy
        self.logger = logger
        self._loop = asyncio.get_running_loop()
        self._due = 0.0  # loop time the next attempt should start, for lateness

    async def run(self) -> None:
        """Probe until cancelled. A bug that escapes is recorded in the state (/healthz answers 503)."""
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
        await self._sleep_until_due()
        if timing.aggressive:
            await self._run_aggressive()
        else:
            await self._run_periodic(timing.period)

    async def _sleep_until_due(self) -> None:
        wait = self._due - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _run_periodic(self, period: float) -> None:
        """Plain kubelet semantics: one attempt per period; missed ticks are dropped."""
        timeout = self.spec.timing.timeout
        while True:
            lateness = max(0.0, self._loop.time() - self._due)
            self.state.record(self.spec.name, await self.probe.attempt(timeout), lateness)
            self._due += period
            now = self._loop.time()
            if self._due < now:  # the attempt overran: skip ticks, like time.Ticker
                self._due += period * math.ceil((now - self._due) / period)
            await self._sleep_until_due()

    async def _run_aggressive(self) -> None:
        policy = self.policy
        full_timeout = self.spec.timing.timeout
        short_timeout = min(full_timeout, policy.timeout)
        verdict = Verdict(ready=False, consecutive_failures=0, since=self.state.started_mono)
        last_timed_out_short = False
        while True:
            # Short attempts keep a not-ready container's probing tight; after one times
            # out, the next gets the full timeoutSeconds so a slow but healthy target can
            # still pass (queue-proxy's fixed 100 ms never lets it).
            timeout = full_timeout if verdict.ready or last_timed_out_short else short_timeout
            lateness = max(0.0, self._loop.time() - self._due)
            result = await self.probe.attempt(timeout)
            verdict = self.state.record(self.spec.name, result, lateness)
            last_timed_out_short = (
                timeout == short_timeout < full_timeout
                and not result.outcome.ok
                and result.duration >= short_timeout * _TIMEOUT_FRACTION
            )
            now = self._loop.time()
            if verdict.ready:
                # A failure while ready is confirmed fast, not one steady period at a time.
                interval = policy.interval if verdict.consecutive_failures else policy.steady_period
            else:
                interval = policy.not_ready_interval(self.state.clock.monotonic() - verdict.since)
            self._due = now + interval
            await self._sleep_until_due()
