"""tcpSocket: connect within the timeout, then close (the kubelet's pkg/probe/tcp).

    probe = TcpSocketProbe(TcpSocketSpec(port=8080))
    result = await probe.attempt(timeout=1.0)  # "connected", "connect ECONNREFUSED 127.0.0.1:8080"
"""

from __future__ import annotations

import asyncio
import time

from probes.dial import ConnectFailed, dial_at_once, finish_dial
from probes.result import Outcome, ProbeResult, timed_out
from probes.spec import TcpSocketSpec


class TcpSocketProbe:
    """Connect, close, report. Holds nothing between attempts.

        probe = TcpSocketProbe(TcpSocketSpec(port=8080, host="::1"))
        result = await probe.attempt(timeout=0.5)
        assert result.message in ("connected", "connect ECONNREFUSED [::1]:8080")
    """

    def __init__(self, spec: TcpSocketSpec) -> None:
        self.spec = spec

    async def attempt(self, timeout: float) -> ProbeResult:
        started = time.monotonic()
        dialed = dial_at_once(self.spec.host, self.spec.port)
        if dialed.error is not None:  # refused before the loop need know: the common not-ready case
            return _failure(str(dialed.error), started)
        if dialed.connected and dialed.sock is not None:
            dialed.sock.close()
            return ProbeResult(Outcome.SUCCESS, "connected", time.monotonic() - started)
        try:
            async with asyncio.timeout(timeout):
                sock = await finish_dial(dialed, self.spec.host, self.spec.port)
        except TimeoutError:
            return _failure(timed_out(timeout), started)
        except ConnectFailed as exc:
            return _failure(str(exc), started)
        sock.close()  # FIN, as the kubelet's ProbeDialer closes (probes/dial.py)
        return ProbeResult(Outcome.SUCCESS, "connected", time.monotonic() - started)


def _failure(message: str, started: float) -> ProbeResult:
    return ProbeResult(Outcome.FAILURE, message, time.monotonic() - started)
