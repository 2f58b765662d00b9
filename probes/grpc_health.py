"""gRPC probe: one `grpc.health.v1.Health/Check` on a new connection, as kubelet's pkg/probe/grpc.

The kubelet dials a new connection for every attempt; so does this probe, speaking
HTTP/2 itself through h2 rather than through a grpcio channel, which costs milliseconds
of CPU per attempt and about 10 MiB of memory for its import (probes/grpc_wire.py says
why, docs/performance.md measures it). A refused connect is answered at once, without
the event loop (probes/dial.py).

    probe = GrpcHealthProbe(GrpcSpec(port=9090, service="api"))
    result = await probe.attempt(timeout=1.0)  # SUCCESS only when the server says SERVING
"""

from __future__ import annotations

import asyncio
import math
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from probes import grpc_wire
from probes.base import ProbeBase, Started
from probes.dial import ConnectFailed, Dialed, dial_at_once, finish_dial
from probes.result import Outcome, ProbeResult, remaining, sanitize, timed_out
from probes.spec import KUBE_PROBE_USER_AGENT, GrpcSpec, join_host_port

# A health answer is a few bytes; a hostile server must not make us buffer megabytes.
MAX_RESPONSE_BYTES = 64 * 1024
# Servers that special-case the kubelet see "kube-probe/1.37" first, as grpc-go sends it.
USER_AGENT = f"{KUBE_PROBE_USER_AGENT} readiness-sidecar"
# One read takes whatever a loopback burst delivered.
_READ_CHUNK = 64 * 1024
# A grpc-message or an unknown connect error is quoted this far, sanitised.
_DETAIL_CHARS = 80

# What a broken or foreign peer looks like, briefly, as UNAVAILABLE reasons.
REFUSED_REASON = "connect refused"
HTTP1_REASON = "not a gRPC server (HTTP/1.x answered)"
BAD_HTTP2_REASON = "not a gRPC server (bad HTTP/2)"
CLOSED_REASON = "connection closed by peer"
RESET_REASON = "connection reset by peer"
# What a refused connect reports, at once or not.
REFUSED_MESSAGE = f"grpc UNAVAILABLE: {REFUSED_REASON}"


class _Unavailable(Exception):
    """The RPC never got an answer; str() is the reason."""


class GrpcHealthProbe(ProbeBase):
    """Checks one service's health over a connection dialled for this attempt alone.

        probe = GrpcHealthProbe(GrpcSpec(port=9090))
        result = await probe.attempt(timeout=0.5)
        result.message  # "grpc SERVING", "grpc NOT_SERVING", "grpc UNAVAILABLE: connect refused"
    """

    def __init__(self, spec: GrpcSpec) -> None:
        self.spec = spec
        self._authority = join_host_port(spec.host, spec.port)
        self._request = grpc_wire.frame(grpc_wire.encode_request(spec.service))
        self._config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")

    def start(self, timeout: float) -> Started:
        started = time.monotonic()
        dialed = dial_at_once(self.spec.host, self.spec.port)
        if dialed.error is not None:
            return ProbeResult(Outcome.FAILURE, _connect_message(dialed.error), time.monotonic() - started)
        return self._attempt(dialed, timeout, started)

    async def _attempt(self, dialed: Dialed, timeout: float, started: float) -> ProbeResult:
        try:
            async with asyncio.timeout(remaining(timeout, started)):
                sock = await finish_dial(dialed, self.spec.host, self.spec.port)
                try:
                    outcome, message = await self._check(sock, timeout)
                finally:
                    sock.close()  # FIN, as the kubelet's connection closes
        except TimeoutError:
            outcome, message = Outcome.FAILURE, timed_out(timeout)
        except ConnectFailed as exc:
            outcome, message = Outcome.FAILURE, _connect_message(exc)
        except _Unavailable as exc:
            outcome, message = Outcome.FAILURE, f"grpc UNAVAILABLE: {exc}"
        return ProbeResult(outcome, message, time.monotonic() - started)

    async def _check(self, sock: socket.socket, timeout: float) -> tuple[Outcome, str]:
        loop = asyncio.get_running_loop()
        conn = h2.connection.H2Connection(config=self._config)
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":path", grpc_wire.CHECK_PATH),
            (":authority", self._authority), ("te", "trailers"),
            ("content-type", grpc_wire.CONTENT_TYPE), ("user-agent", USER_AGENT),
            # The server learns the deadline, as from the kubelet's context timeout.
            ("grpc-timeout", f"{max(1, math.ceil(timeout * 1000))}m"),
        ])
        conn.send_data(stream, self._request, end_stream=True)
        answer = _Answer(stream)
        try:
            await loop.sock_sendall(sock, conn.data_to_send())
            while not answer.ended:
                data = await loop.sock_recv(sock, _READ_CHUNK)
                if not data:
                    raise _Unavailable(CLOSED_REASON)
                if answer.first_read and data.startswith(b"HTTP/1."):
                    raise _Unavailable(HTTP1_REASON)
                answer.first_read = False
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    raise _Unavailable(BAD_HTTP2_REASON) from None
                for event in events:
                    answer.take(event, conn)
                pending = conn.data_to_send()
                if pending and not answer.ended:  # settings and ping acks, window updates
                    await loop.sock_sendall(sock, pending)
        except ConnectionResetError:
            raise _Unavailable(RESET_REASON) from None
        except OSError as exc:
            raise _Unavailable(sanitize(exc.strerror or str(exc), _DETAIL_CHARS)) from None
        return answer.verdict(self.spec.service, timeout)


class _Answer:
    """What the server said on our one stream, event by event."""

    def __init__(self, stream: int) -> None:
        self.stream = stream
        self.first_read = True
        self.ended = False
        self.http_status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.too_large = False

    def take(self, event: h2.events.Event, conn: h2.connection.H2Connection) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            raise _Unavailable(CLOSED_REASON)
        if getattr(event, "stream_id", self.stream) != self.stream:
            return
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            for name, value in event.headers:
                self.headers[str(name)] = str(value)
            if isinstance(event, h2.events.ResponseReceived):
                status = self.headers.get(":status", "")
                self.http_status = int(status) if status.isdigit() else 0
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, self.stream)
            if len(self.body) + len(event.data) > grpc_wire.PREFIX_BYTES + MAX_RESPONSE_BYTES:
                self.too_large = True
                self.ended = True  # nothing more is needed: the verdict is RESOURCE_EXHAUSTED
            else:
                self.body += event.data
                length = grpc_wire.framed_length(bytes(self.body))
                if length is not None and length > grpc_wire.PREFIX_BYTES + MAX_RESPONSE_BYTES:
                    self.too_large = True
                    self.ended = True
        elif isinstance(event, h2.events.StreamEnded):
            self.ended = True
        elif isinstance(event, h2.events.StreamReset):
            raise _Unavailable(f"stream reset by peer (HTTP/2 error {event.error_code})")

    def verdict(self, service: str, timeout: float) -> tuple[Outcome, str]:
        if self.too_large:
            return Outcome.FAILURE, (f"grpc RESOURCE_EXHAUSTED: received message larger than max "
                                     f"(limit {MAX_RESPONSE_BYTES})")
        raw_code = self.headers.get("grpc-status")
        if raw_code is None:  # no gRPC answer: the code follows the HTTP status
            code = grpc_wire.HTTP_STATUS_CODES.get(self.http_status or 0, grpc_wire.UNKNOWN_CODE)
            if self.http_status == 200:
                code = grpc_wire.UNKNOWN_CODE  # 200 without grpc-status: a broken server
            detail = f"HTTP {self.http_status}"
        else:
            code = int(raw_code) if raw_code.isdigit() else grpc_wire.UNKNOWN_CODE
            detail = grpc_wire.decode_message(self.headers.get("grpc-message", ""))
        if code != grpc_wire.OK:
            return Outcome.FAILURE, _describe_error(code, detail, service, timeout)
        try:
            status = grpc_wire.decode_response(grpc_wire.unframe(bytes(self.body)))
        except grpc_wire.WireError as exc:
            return Outcome.FAILURE, f"grpc INTERNAL: bad response: {exc}"
        return _describe_status(status)


def _describe_status(status: int) -> tuple[Outcome, str]:
    if status == grpc_wire.SERVING:
        return Outcome.SUCCESS, "grpc SERVING"
    name = grpc_wire.STATUS_NAMES.get(status, f"status {status}")  # proto3 enums are open
    return Outcome.FAILURE, f"grpc {name}"


def _describe_error(code: int, details: str, service: str, timeout: float) -> str:
    if code == grpc_wire.DEADLINE_EXCEEDED:
        return timed_out(timeout)
    if code == grpc_wire.UNIMPLEMENTED:
        return "grpc health service not implemented (UNIMPLEMENTED)"
    if code == grpc_wire.NOT_FOUND:
        return f'grpc NOT_FOUND: service "{sanitize(service, 40)}" unknown'
    name = grpc_wire.code_name(code)
    return f"grpc {name}: {sanitize(details, _DETAIL_CHARS)}" if details.strip() else f"grpc {name}"


def _connect_message(error: ConnectFailed) -> str:
    return REFUSED_MESSAGE if error.refused else f"grpc UNAVAILABLE: {sanitize(str(error), _DETAIL_CHARS)}"
