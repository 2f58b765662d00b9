"""Draining, queue-proxy's built-in preStop.

SIGTERM turns readiness off at once and starts the drain period; user
containers' preStop hooks block on /wait-for-drain until it ends. The log says how long
is left, every DRAIN_LOG_EVERY seconds, and that a second signal ends the drain now.

    drainer = Drainer(state, drain_seconds=30, logger=logger)
    drainer.begin()             # on SIGTERM
    drainer.begin()             # a second signal: drained now
    await drainer.wait_for_drain()
"""

from __future__ import annotations

import asyncio
import logging

from sidecar.contract import DRAIN_PATH, LOGGER_NAME
from sidecar.durations import format_duration
from sidecar.runtime.state import AggregateState

# A /wait-for-drain without SIGTERM is a user container restarting (liveness), not a
# pod going away: after this long with no SIGTERM, readiness is restored (Knative: 1 s).
PRESTOP_RESET_AFTER = 1.0
# A countdown line this often while draining: a 30 s drain says 30 s, 20 s and 10 s left,
# enough to tell a drain that moves from a wedged one without a line a second.
DRAIN_LOG_EVERY = 10.0


class Drainer:
    def __init__(
        self,
        state: AggregateState,
        drain_seconds: float,
        reset_after: float = PRESTOP_RESET_AFTER,
        logger: logging.Logger | None = None,
        log_every: float = DRAIN_LOG_EVERY,
    ) -> None:
        self.state = state
        self.drain_seconds = drain_seconds
        self.reset_after = reset_after
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.log_every = log_every
        self.terminating = asyncio.Event()  # SIGTERM (or SIGINT) arrived
        self.drained = asyncio.Event()  # the drain period is over: time to exit
        self._pending_prestops = 0
        self._timer: asyncio.TimerHandle | None = None
        self._countdown: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # loop time the drain ends, once begun

    def begin(self) -> None:
        """SIGTERM: not ready at once, drained after drain_seconds. A second call ends it now."""
        loop = asyncio.get_running_loop()
        if self.terminating.is_set():
            if not self.drained.is_set():
                left = max(0.0, self._deadline - loop.time())
                self.logger.warning(
                    "drain: second stop signal, ending the drain now, %s early", format_duration(left),
                    extra={"fields": {"drain_left_seconds": round(left, 3), "drain_ended_early": True}},
                )
                self.cancel_timer()
            self.drained.set()
            return
        self.terminating.set()
        self.state.set_draining(True)
        self._deadline = loop.time() + self.drain_seconds
        self._timer = loop.call_later(self.drain_seconds, self.drained.set)
        self._log_left(self.drain_seconds)

    def _log_left(self, left: float) -> None:
        """One countdown line, and the next one `log_every` later (by the schedule, not the loop's jitter)."""
        self.logger.info(
            "drain: %s left, then exit; a second SIGTERM or SIGINT ends it now", format_duration(left),
            extra={"fields": {"drain_left_seconds": round(left, 3), "drain_seconds": self.drain_seconds}},
        )
        if left > self.log_every:
            self._countdown = asyncio.get_running_loop().call_later(
                self.log_every, self._log_left, left - self.log_every
            )

    def cancel_timer(self) -> None:
        for timer in (self._timer, self._countdown):
            if timer is not None:
                timer.cancel()

    async def wait_for_drain(self) -> str:
        """Block a preStop hook until the drain ends; returns "drained" or "reset"."""
        if not self.terminating.is_set():
            # Start draining now (the SIGTERM usually follows within milliseconds), but
            # don't wedge readiness if it never comes.
            self._pending_prestops += 1
            if self._pending_prestops == 1:
                self.logger.info(
                    "drain: a preStop hook called %s: draining, reset in %s unless a SIGTERM follows",
                    DRAIN_PATH, format_duration(self.reset_after),
                    extra={"fields": {"prestop_reset_seconds": self.reset_after}},
                )
            self.state.set_draining(True)
            try:
                async with asyncio.timeout(self.reset_after):
                    await self.terminating.wait()
            except TimeoutError:
                return "reset"
            finally:
                self._pending_prestops -= 1
                if self._pending_prestops == 0 and not self.terminating.is_set():
                    self.state.set_draining(False)
        await self.drained.wait()
        return "drained"
