"""gRPC probe: one `grpc.health.v1.Health/Check` on a new channel, as kubelet's pkg/probe/grpc.

    probe = GrpcHealthProbe(GrpcSpec(port=9090, service="api"))
    result = await probe.attempt(timeout=1.0)  # SUCCESS only when the server says SERVING
"""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from probes.base import ProbeBase, Started
from probes.dial import dial_at_once
from probes.result import Outcome, ProbeResult, remaining, sanitize, timed_out
from probes.spec import KUBE_PROBE_USER_AGENT, GrpcSpec, join_host_port

# A health answer is a few bytes; a hostile server must not make us buffer megabytes.
MAX_RESPONSE_BYTES = 64 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, str | int], ...] = (
    # Servers that special-case the kubelet see "kube-probe/1.37 grpc-python/..." first.
    ("grpc.primary_user_agent", KUBE_PROBE_USER_AGENT),
    # The kubelet dials the pod directly; a proxy from the environment would probe the wrong thing.
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    # A new channel must mean a new connection: the global pool would share one with any
    # other channel open to the same target.
    ("grpc.use_local_subchannel_pool", 1),
    # A target's DNS TXT record must not reconfigure (retry, balance) our single RPC.
    ("grpc.service_config_disable_resolution", 1),
)

# UNAVAILABLE details are long C-core chains; these fragments name the usual causes briefly.
UNAVAILABLE_REASONS: tuple[tuple[str, str], ...] = (
    ("Connection refused", "connect refused"),  # REFUSED_MESSAGE
    ("http1.x server", "not a gRPC server (HTTP/1.x answered)"),
    ("Failed parsing HTTP/2", "not a gRPC server (bad HTTP/2)"),
    ("Socket closed", "connection closed by peer"),
    ("Connection reset", "connection reset by peer"),
)
# What grpc reports for a refused connect, and so what the fast path answers without it.
REFUSED_MESSAGE = "grpc UNAVAILABLE: connect refused"
# Everything before this in an UNAVAILABLE detail is boilerplate.
UNAVAILABLE_PREFIX = "last error: "


class GrpcHealthProbe(ProbeBase):
    """Checks one service's health over a channel dialled for this attempt alone.

        probe = GrpcHealthProbe(GrpcSpec(port=9090))
        result = await probe.attempt(timeout=0.5)
        result.message  # "grpc SERVING", "grpc NOT_SERVING", "grpc UNAVAILABLE: connect refused"
    """

    def __init__(self, spec: GrpcSpec) -> None:
        self.spec = spec
        self._address = join_host_port(spec.host, spec.port)
        # While the last attempt found the port refusing, each attempt asks the kernel
        # first (probes/dial.py) and builds no channel until the port listens. Only then:
        # against a listening server, that extra connect would be an extra connection.
        self._refused = False

    def start(self, timeout: float) -> Started:
        started = time.monotonic()
        if self._refused:
            dialed = dial_at_once(self.spec.host, self.spec.port)
            if dialed.refused:
                return ProbeResult(Outcome.FAILURE, REFUSED_MESSAGE, time.monotonic() - started)
            if dialed.sock is not None:  # it listens now (or is still connecting): over to grpc
                dialed.sock.close()
        return self._attempt(timeout, started)

    async def _attempt(self, timeout: float, started: float) -> ProbeResult:
        try:
            # The RPC carries the deadline too, but a server that stalls the HTTP/2 handshake
            # is only bounded by our own clock.
            async with asyncio.timeout(remaining(timeout, started)):
                outcome, message = await self._check(seconds=timeout)
        except TimeoutError:
            outcome, message = Outcome.FAILURE, timed_out(timeout)
        self._refused = message == REFUSED_MESSAGE
        return ProbeResult(outcome, message, time.monotonic() - started)

    async def _check(self, seconds: float) -> tuple[Outcome, str]:
        channel = grpc.aio.insecure_channel(self._address, options=CHANNEL_OPTIONS)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=self.spec.service)
            response = await stub.Check(request, timeout=seconds)
        except grpc.aio.AioRpcError as error:
            return Outcome.FAILURE, _describe_error(error, self.spec.service, seconds)
        finally:
            await channel.close()
        return _describe_status(response.status)


def _describe_status(status: int) -> tuple[Outcome, str]:
    if status == health_pb2.HealthCheckResponse.SERVING:
        return Outcome.SUCCESS, "grpc SERVING"
    try:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    except ValueError:  # proto3 enums are open: a server may send any number
        name = f"status {status}"
    return Outcome.FAILURE, f"grpc {name}"


def _describe_error(error: grpc.aio.AioRpcError, service: str, timeout: float) -> str:
    code = error.code()
    details = str(error.details() or "")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return timed_out(timeout)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "grpc health service not implemented (UNIMPLEMENTED)"
    if code == grpc.StatusCode.NOT_FOUND:
        return f'grpc NOT_FOUND: service "{sanitize(service, 40)}" unknown'
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"grpc UNAVAILABLE: {_unavailable_reason(details)}"
    name = getattr(code, "name", str(code))
    return f"grpc {name}: {sanitize(details)}" if details.strip() else f"grpc {name}"


def _unavailable_reason(details: str) -> str:
    for fragment, reason in UNAVAILABLE_REASONS:
        if fragment in details:
            return reason
    return sanitize(details.rpartition(UNAVAILABLE_PREFIX)[2]) or "unavailable"
