"""Draining, queue-proxy's built-in preStop.

SIGTERM turns readiness off at once and starts the drain period; user
containers' preStop hooks block on /wait-for-drain until it ends.

    drainer = Drainer(state, drain_seconds=30)
    drainer.begin()             # on SIGTERM
    await drainer.wait_for_drain()
"""

from __future__ import annotations

import asyncio

from sidecar.runtime.state import AggregateState

# A /wait-for-drain without SIGTERM is a user container restarting (liveness), not a
# pod going away: after this long with no SIGTERM, readiness is restored (Knative: 1 s).
PRESTOP_RESET_AFTER = 1.0


class Drainer:
    def __init__(
        self, state: AggregateState, drain_seconds: float, reset_after: float = PRESTOP_RESET_AFTER
    ) -> None:
        self.state = state
        self.drain_seconds = drain_seconds
        self.reset_after = reset_after
        self.terminating = asyncio.Event()  # SIGTERM (or SIGINT) arrived
        self.drained = asyncio.Event()  # the drain period is over: time to exit
        self._pending_prestops = 0
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """SIGTERM: not ready at once, drained after drain_seconds. A second call ends it now."""
        if self.terminating.is_set():
            self.drained.set()
            return
        self.terminating.set()
        self.state.set_draining(True)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.drain_seconds, self.drained.set)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def wait_for_drain(self) -> str:
        """Block a preStop hook until the drain ends; returns "drained" or "reset"."""
        if not self.terminating.is_set():
            # Start draining now (the SIGTERM usually follows within milliseconds), but
            # don't wedge readiness if it never comes.
            self._pending_prestops += 1
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
