"""What every probe shares: an attempt is begun synchronously and finished on the loop only if it must be.

A refused connect is known to the kernel at once (probes/dial.py), so `start` can answer
it before any future, task or timeout scope exists; the schedulers run such attempts
inline from one shared tick. An attempt that must wait (a connect in progress, a
request, a child process) comes back as a coroutine that finishes it, bounded by the
timeout, which the caller awaits or runs as its own task.

    started = probe.start(timeout=1.0)
    result = started if isinstance(started, ProbeResult) else await started
    result = await probe.attempt(timeout=1.0)   # the same, in one call
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from probes.result import ProbeResult

# What `start` returns: the result itself, or the coroutine that will produce it.
Started = ProbeResult | Coroutine[Any, Any, ProbeResult]


async def finish(started: Started) -> ProbeResult:
    """The result of a started attempt, awaiting its continuation if it has one."""
    return started if isinstance(started, ProbeResult) else await started


class ProbeBase:
    """A probe type implements `start`; `attempt` is written once, here."""

    def start(self, timeout: float) -> Started:
        """Begin one attempt: its result if it is already known, else the coroutine that finishes it."""
        raise NotImplementedError

    async def attempt(self, timeout: float) -> ProbeResult:
        """Run one attempt bounded by `timeout` seconds. Never raises for what a target does."""
        return await finish(self.start(timeout))
