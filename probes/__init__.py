"""One module per probe type, one shape for all of them.

Each probe runs exactly one attempt and returns a `ProbeResult`; it never raises
for anything a target does (its caller still guards against bugs: `sidecar.runtime.attempt`).
An attempt begins synchronously (`start`, probes/base.py), so a refused connect is
answered without the event loop. A probe knows nothing of scheduling or thresholds:
that lives in `sidecar.runtime`. It holds no connection or process between attempts,
so there is nothing to close.

    probe = build_probe(TcpSocketSpec(port=8080))
    result = await probe.attempt(timeout=1.0)
    started = probe.start(timeout=1.0)   # a ProbeResult now, or a coroutine to await
"""

from __future__ import annotations

from typing import Protocol

from probes.base import Started
from probes.result import Outcome, ProbeResult
from probes.spec import ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec


class Probe(Protocol):
    @property
    def spec(self) -> HandlerSpec: ...

    def start(self, timeout: float) -> Started:
        """Begin one attempt: its result if known at once, else the coroutine that finishes it."""
        ...

    async def attempt(self, timeout: float) -> ProbeResult:
        """Run one attempt bounded by `timeout` seconds. Never raises for what a target does."""
        ...


def build_probe(spec: HandlerSpec) -> Probe:
    # Imports are local so `check` on a TCP probe never pays for grpc or aiohttp.
    if isinstance(spec, HttpGetSpec):
        from probes.http_get import HttpGetProbe

        return HttpGetProbe(spec)
    if isinstance(spec, TcpSocketSpec):
        from probes.tcp_socket import TcpSocketProbe

        return TcpSocketProbe(spec)
    if isinstance(spec, GrpcSpec):
        from probes.grpc_health import GrpcHealthProbe

        return GrpcHealthProbe(spec)
    from probes.exec_command import ExecProbe

    return ExecProbe(spec)


__all__ = [
    "ExecSpec",
    "GrpcSpec",
    "HandlerSpec",
    "HttpGetSpec",
    "Outcome",
    "Probe",
    "ProbeResult",
    "Started",
    "TcpSocketSpec",
    "build_probe",
]
