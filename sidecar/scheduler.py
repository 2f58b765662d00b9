"""When and how often each container is probed (DESIGN §4).

One ContainerScheduler per container, each its own task, so a hanging probe
never delays another and a round over N containers costs the slowest probe.

    scheduler = ContainerScheduler(state, "app", probe, AggressivePolicy())
    task = asyncio.create_task(scheduler.run())
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from probes import Probe
from probes.result import ProbeResult
from sidecar import settings as defaults
from sidecar.state import AggregateState

# A timed-out attempt ends within this fraction of its timeout; used to tell a
# timeout from a quick refusal without parsing messages.
_TIMEOUT_FRACTION = 0.95


@dataclass(frozen=True, slots=True)
class AggressivePolicy:
    """The knobs of aggressive mode (periodSeconds 0 or absent).

    Not ready: probe every `interval` for `window` seconds, then double the interval
    every further window up to `max_interval`, so slow starters don't spin.
    Ready: probe every `steady_period`; after a failure, re-probe at `interval` so
    failureThreshold is confirmed in milliseconds.
    """

    interval: float = defaults.DEFAULT_AGGRESSIVE_INTERVAL
    timeout: float = defaults.DEFAULT_AGGRESSIVE_TIMEOUT
    window: float = defaults.DEFAULT_AGGRESSIVE_WINDOW
    max_interval: float = defaults.DEFAULT_AGGRESSIVE_MAX_INTERVAL
    steady_period: float = defaults.DEFAULT_STEADY_PERIOD

    def not_ready_interval(self, not_ready_for: float) -> float:
        if self.window <= 0 or not_ready_for < self.window:
            return self.interval
        doublings = int(not_ready_for // self.window)
        return min(self.max_interval, self.interval * 2.0**doublings)


class ContainerScheduler:
    def __init__(
        self, state: AggregateState, name: str, probe: Probe, policy: AggressivePolicy
    ) -> None:
        self.state = state
        self.container = state.containers[name]
        self.probe = probe
        self.policy = policy
        self._loop = asyncio.get_running_loop()
        self._due = 0.0  # loop time the next attempt should start, for lateness

    async def run(self) -> None:
        timing = self.container.spec.timing
        start = self.state.started_mono
        # initialDelaySeconds counts from sidecar start, as the kubelet counts from container start.
        delay = timing.initial_delay - (self.state.clock.monotonic() - start)
        self._due = self._loop.time() + max(delay, 0.0)
        await self._sleep_until_due()
        try:
            if timing.aggressive:
                await self._run_aggressive()
            else:
                await self._run_periodic(timing.period)
        finally:
            await self.probe.close()

    async def _sleep_until_due(self) -> None:
        wait = self._due - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _attempt(self, timeout: float) -> ProbeResult:
        lateness = max(0.0, self._loop.time() - self._due)
        result = await self.probe.attempt(timeout)
        self.state.record(self.container.spec.name, result, lateness)
        return result

    async def _run_periodic(self, period: float) -> None:
        """Plain kubelet semantics: one attempt per period; missed ticks are dropped."""
        timeout = self.container.spec.timing.timeout
        while True:
            await self._attempt(timeout)
            self._due += period
            now = self._loop.time()
            if self._due < now:  # the attempt overran: skip ticks, like time.Ticker
                self._due += period * math.ceil((now - self._due) / period)
            await self._sleep_until_due()

    async def _run_aggressive(self) -> None:
        policy, c = self.policy, self.container
        full_timeout = c.spec.timing.timeout
        short_timeout = min(full_timeout, policy.timeout)
        last_timed_out_short = False
        while True:
            # Short attempts keep a not-ready container's probing tight; after one times
            # out, the next gets the full timeoutSeconds so a slow but healthy target can
            # still pass (queue-proxy's fixed 100 ms never lets it).
            timeout = full_timeout if c.ready or last_timed_out_short else short_timeout
            result = await self._attempt(timeout)
            last_timed_out_short = (
                timeout == short_timeout < full_timeout
                and not result.outcome.ok
                and result.duration >= short_timeout * _TIMEOUT_FRACTION
            )
            now = self._loop.time()
            if c.ready:
                # A failure while ready is confirmed fast, not one steady period at a time.
                interval = policy.interval if c.consecutive_failures else policy.steady_period
            else:
                interval = policy.not_ready_interval(self.state.clock.monotonic() - c.since_mono)
            self._due = now + interval
            await self._sleep_until_due()
