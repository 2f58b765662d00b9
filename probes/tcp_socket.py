"""tcpSocket: connect within the timeout, then close (the kubelet's pkg/probe/tcp).

    probe = TcpSocketProbe(TcpSocketSpec(port=8080))
    result = await probe.attempt(timeout=1.0)  # "connected", "connect ECONNREFUSED 127.0.0.1:8080"
"""

from __future__ import annotations

import asyncio
import time

from probes.base import ProbeBase, Started
from probes.dial import ConnectFailed, Dialed, dial_at_once, finish_dial
from probes.result import Outcome, ProbeResult, remaining, timed_out
from probes.spec import TcpSocketSpec


class TcpSocketProbe(ProbeBase):
    """Connect, close, report. Holds nothing between attempts.

        probe = TcpSocketProbe(TcpSocketSpec(port=8080, host="::1"))
        result = await probe.attempt(timeout=0.5)
        assert result.message in ("connected", "connect ECONNREFUSED [::1]:8080")
    """

    def __init__(self, spec: TcpSocketSpec) -> None:
        self.spec = spec

    def start(self, timeout: float) -> Started:
        started = time.monotonic()
        dialed = dial_at_once(self.spec.host, self.spec.port)
        if dialed.error is not None:  # refused before the loop need know: the common not-ready case
            return _failure(str(dialed.error), started)
        if dialed.connected and dialed.sock is not None:
            dialed.sock.close()
            return ProbeResult(Outcome.SUCCESS, "connected", time.monotonic() - started)
        return self._finish(dialed, timeout, started)

    async def _finish(self, dialed: Dialed, timeout: float, started: float) -> ProbeResult:
        try:
            async with asyncio.timeout(remaining(timeout, started)):
                sock = await finish_dial(dialed, self.spec.host, self.spec.port)
        except TimeoutError:
            return _failure(timed_out(timeout), started)
        except ConnectFailed as exc:
            return _failure(str(exc), started)
        sock.close()  # FIN, as the kubelet's ProbeDialer closes (probes/dial.py)
        return ProbeResult(Outcome.SUCCESS, "connected", time.monotonic() - started)


def _failure(message: str, started: float) -> ProbeResult:
    return ProbeResult(Outcome.FAILURE, message, time.monotonic() - started)
