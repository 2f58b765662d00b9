"""One module per probe type, one shape for all of them.

Each probe runs exactly one attempt and returns a `ProbeResult`; it never raises
for anything a target does (its caller still guards against bugs: `sidecar.runtime.attempt`).
It knows nothing of scheduling or thresholds: that lives in `sidecar.runtime`.
A probe holds nothing between attempts, so there is nothing to close.

    probe = build_probe(TcpSocketSpec(port=8080))
    result = await probe.attempt(timeout=1.0)
"""

from __future__ import annotations

from typing import Protocol

from probes.result import Outcome, ProbeResult
from probes.spec import ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec


class Probe(Protocol):
    @property
    def spec(self) -> HandlerSpec: ...

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
    "TcpSocketSpec",
    "build_probe",
]
