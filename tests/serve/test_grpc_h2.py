"""The gRPC health port's HTTP/2 (sidecar/serve/grpc_h2.py), against h2's client on a raw socket and grpcio's.

grpcio's client shows that real clients get what they expect; the raw client sends what
grpcio never would (GET, another content type, garbage, 100 streams at once, a window of
nothing) and sees what grpcio hides (trailers-only answers, RST_STREAM, GOAWAY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.grpc_wire import (
    CHECK_PATH,
    LIST_PATH,
    UNAVAILABLE,
    WATCH_PATH,
    decode_response,
    encode_request,
    frame,
    unframe,
)
from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.fd_limit import NEW_CONNECTION_SECONDS
from sidecar.model import ContainerSpec, ProbeTiming
from sidecar.runtime.state import AggregateState
from sidecar.serve.grpc_h2 import MAX_CLOSED_STREAMS, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_BYTES, ConnectionLimits
from sidecar.serve.health_grpc import MAX_REQUEST_BYTES, GrpcHealthServer

SERVING, NOT_SERVING = 1, 2
ONE_SHOT = ProbeTiming(success_threshold=1, failure_threshold=1)
# Short enough for a test to wait them out, long enough for loopback on a busy machine.
SHORT = ConnectionLimits(handshake=0.3, request=0.3, unread=0.3, idle=0.3, linger=0.3)
WITHIN = 3.0  # generous bound for what must happen "promptly"


def make_state() -> AggregateState:
    state = AggregateState([ContainerSpec("app", TcpSocketSpec(port=1), ONE_SHOT)])
    state.record("app", ProbeResult(Outcome.SUCCESS, "ok", 0.001))
    return state


@dataclass
class Response:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None
    ended: bool = False

    @property
    def grpc_status(self) -> int:
        """From the trailers, or from the headers of a trailers-only response."""
        return int((self.trailers or self.headers)[b"grpc-status"])


class RawClient:
    """h2's client state machine over asyncio streams, every event kept."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ack_data: bool = True) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.events: list[h2.events.Event] = []
        self.responses: dict[int, Response] = {}
        self.eof = False
        self.ack_data = ack_data

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", *, settings: dict[int, int] | None = None, ack_data: bool = True
    ) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer, ack_data)
        client.h2.initiate_connection()
        if settings:
            client.h2.update_settings(settings)
        client.flush()
        await client.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events))
        return client

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(
        self,
        path: str = CHECK_PATH,
        body: bytes | None = None,
        *,
        method: bytes = b"POST",
        content_type: bytes = b"application/grpc",
        extra: Iterable[tuple[bytes, bytes]] = (),
        end: bool = True,
    ) -> int:
        body = frame(encode_request("")) if body is None else body
        stream_id = self.h2.get_next_available_stream_id()
        headers = [(b":method", method), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"t"),
                   (b"content-type", content_type), (b"te", b"trailers"), *extra]
        self.h2.send_headers(stream_id, headers, end_stream=end and not body)
        if body:
            self.h2.send_data(stream_id, body, end_stream=end)
        self.responses[stream_id] = Response()
        self.flush()
        return stream_id

    async def read_once(self, timeout: float = WITHIN) -> None:
        async with asyncio.timeout(timeout):
            data = await self.reader.read(65536)
        if not data:
            self.eof = True
            return
        for event in self.h2.receive_data(data):
            self.events.append(event)
            self._record(event)
        self.flush()

    def _record(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        response = self.responses.get(stream_id)
        if response is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            response.headers = dict(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            response.trailers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            response.data += event.data
            if self.ack_data:
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            response.ended = True
        elif isinstance(event, h2.events.StreamReset):
            response.reset = event.error_code

    async def until(self, done: Callable[[], bool], timeout: float = WITHIN) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                if self.eof:
                    raise AssertionError("connection closed before the condition held")
                await self.read_once(timeout)

    async def response(self, stream_id: int, timeout: float = WITHIN) -> Response:
        response = self.responses[stream_id]
        await self.until(lambda: response.ended or response.reset is not None, timeout)
        return response

    async def closed(self, timeout: float = WITHIN, *, close: bool = True) -> float:
        """Read until the server closes, then close too, as a real client does (unless not `close`).

        Returns how long the server took to close."""
        began = time.perf_counter()
        async with asyncio.timeout(timeout):
            while not self.eof:
                try:
                    await self.read_once(timeout)
                except ConnectionResetError:
                    self.eof = True
        took = time.perf_counter() - began
        if close:
            self.writer.close()
        return took

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass
class Served:
    state: AggregateState
    server: GrpcHealthServer
    port: int

    def connections(self) -> int:
        inner = self.server._server
        return len(inner.connections) if inner is not None else 0


async def serve(limits: ConnectionLimits | None = None) -> Served:
    state = make_state()
    server = GrpcHealthServer(state, limits=limits) if limits else GrpcHealthServer(state)
    port = await server.start("127.0.0.1", 0)
    return Served(state, server, port)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    it = await serve()
    yield it
    await it.server.stop()


@pytest.fixture
async def short() -> AsyncIterator[Served]:
    it = await serve(SHORT)
    yield it
    await it.server.stop()


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_quiet(log: pytest.LogCaptureFixture) -> None:
    """Nothing a client did reached the log: no record at WARNING or above, asyncio's included."""
    loud = [r for r in log.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


# -- the wire -----------------------------------------------------------------------------------


async def test_a_check_is_headers_one_framed_message_and_ok_trailers(served: Served) -> None:
    client = await RawClient.connect(served.port)
    response = await client.response(client.request(CHECK_PATH, frame(encode_request("app"))))
    assert response.headers[b":status"] == b"200"
    assert response.headers[b"content-type"] == b"application/grpc"
    assert decode_response(unframe(response.data)) == SERVING
    assert response.trailers == {b"grpc-status": b"0"}
    await client.aclose()


async def test_errors_are_trailers_only_with_a_percent_encoded_message(served: Served) -> None:
    client = await RawClient.connect(served.port)
    response = await client.response(client.request(CHECK_PATH, frame(encode_request("nope"))))
    assert response.data == b"" and response.trailers == {}
    assert response.headers == {b":status": b"200", b"content-type": b"application/grpc", b"grpc-status": b"5",
                                b"grpc-message": b"unknown service"}
    malformed = await client.response(client.request(CHECK_PATH, frame(b"\xff\xff")))
    assert malformed.grpc_status == 13 and malformed.headers[b"grpc-message"] == b"malformed HealthCheckRequest"
    await client.aclose()


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"method": b"GET"}, (b"405", 13)),
        ({"method": b"PUT"}, (b"405", 13)),
        ({"content_type": b"application/json"}, (b"415", 13)),
        ({"content_type": b"application/grpc-web"}, (b"415", 13)),
        ({"content_type": b"application/grpc+proto"}, (b"200", 0)),
        ({"path": "/grpc.health.v1.Health/Nope"}, (b"200", 12)),
        ({"path": "/other.Service/Check"}, (b"200", 12)),
        ({"body": b""}, (b"200", 13)),  # no request message
        ({"body": b"\x00\x00\x00\x00\x09abc"}, (b"200", 13)),  # the stream ends inside the message
        ({"body": b"\x01\x00\x00\x00\x00"}, (b"200", 13)),  # compressed, without grpc-encoding
        ({"body": b"\x01\x00\x00\x00\x00", "extra": [(b"grpc-encoding", b"gzip")]}, (b"200", 12)),
        ({"body": frame(b"\x0a" + bytes([0x81, 0x20]) + b"s" * 4097)}, (b"200", 8)),
    ],
    ids=["GET", "PUT", "json", "grpc-web", "grpc+proto", "unknown-method", "unknown-service", "no-message",
         "truncated", "compressed", "gzip", "oversized"],
)
async def test_requests_gRPC_does_not_serve_get_the_answer_gRPC_servers_give(
    served: Served, how: dict[str, Any], expected: tuple[bytes, int]
) -> None:
    client = await RawClient.connect(served.port)
    response = await client.response(client.request(**how))
    assert (response.headers[b":status"], response.grpc_status) == expected
    if expected[1] == 12 and "extra" in how:
        assert response.headers[b"grpc-accept-encoding"] == b"identity"
    # The connection still serves.
    assert (await client.response(client.request())).grpc_status == 0
    await client.aclose()


async def test_unknown_method_is_unimplemented_for_grpcio(served: Served) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        nope = channel.unary_unary("/grpc.health.v1.Health/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await nope(b"", timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_an_answer_before_the_request_ended_stops_the_client_sending(served: Served) -> None:
    """As grpcio: the answer, then RST_STREAM NO_ERROR, for an oversized prefix or a unary that never half-closes."""
    client = await RawClient.connect(served.port)
    oversized = await client.response(client.request(body=b"\x00\x00\x01\x00\x00", end=False))
    assert oversized.grpc_status == 8
    await client.until(lambda: oversized.reset is not None)
    assert oversized.reset == h2.errors.ErrorCodes.NO_ERROR
    unended = client.request(body=frame(encode_request("app")), end=False)
    await client.until(lambda: client.responses[unended].reset is not None)
    assert client.responses[unended].trailers == {b"grpc-status": b"0"}
    assert client.responses[unended].reset == h2.errors.ErrorCodes.NO_ERROR
    await client.aclose()


async def test_oversized_request_is_resource_exhausted_for_grpcio(served: Served) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for size in (MAX_REQUEST_BYTES + 1, 64 * 1024, 1024 * 1024):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(service="s" * size), timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Check(health_pb2.HealthCheckRequest(service="app"), timeout=5)).status == SERVING


# -- limits ---------------------------------------------------------------------------------------


async def test_settings_bound_streams_and_metadata(served: Served) -> None:
    client = await RawClient.connect(served.port)
    remote = client.h2.remote_settings
    assert remote.max_concurrent_streams == MAX_CONCURRENT_STREAMS
    assert remote.max_header_list_size == MAX_HEADER_LIST_BYTES
    await client.aclose()


async def test_oversized_metadata_closes_that_connection_only(served: Served, log: pytest.LogCaptureFixture) -> None:
    other = await RawClient.connect(served.port)
    client = await RawClient.connect(served.port)
    client.request(extra=[(b"x-big", b"m" * MAX_HEADER_LIST_BYTES)])
    await client.closed()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert (await other.response(other.request())).grpc_status == 0
    await other.aclose()
    assert_quiet(log)


async def test_a_client_gets_at_most_max_concurrent_streams_watches_on_one_connection(served: Served) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        calls = [stub.Watch(health_pb2.HealthCheckRequest(service="app")) for _ in range(MAX_CONCURRENT_STREAMS + 1)]
        firsts = [asyncio.ensure_future(call.read()) for call in calls]
        waiting = set(firsts)
        async with asyncio.timeout(WITHIN):
            while len(waiting) > 1:
                _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.2)
        # grpcio holds one back: the server said 100.
        assert not waiting.pop().done()
        assert served.server.open_watches == MAX_CONCURRENT_STREAMS
        held = next(call for call, first in zip(calls, firsts, strict=True) if not first.done())
        next(call for call in calls if call is not held).cancel()
        async with asyncio.timeout(WITHIN):
            assert (await firsts[calls.index(held)]).status == SERVING
        for call in calls:
            call.cancel()
    async with asyncio.timeout(WITHIN):
        while served.server.open_watches:  # noqa: ASYNC110 - no event for a cancel seen by the server
            await asyncio.sleep(0.01)


async def test_a_client_opening_more_streams_than_allowed_is_disconnected(served: Served,
                                                                          log: pytest.LogCaptureFixture) -> None:
    client = await RawClient.connect(served.port)
    client.h2.remote_settings.max_concurrent_streams = 1000  # pretend not to have heard
    client.h2.remote_settings.acknowledge()
    for _ in range(MAX_CONCURRENT_STREAMS + 1):
        client.request(WATCH_PATH)
    await client.closed()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert served.server.open_watches == 0
    assert_quiet(log)


async def test_flow_control_acknowledges_what_it_receives(served: Served) -> None:
    """Far more than one 64 KiB window of requests on one connection: each byte is handed back."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        big = health_pb2.HealthCheckRequest(service="x" * (MAX_REQUEST_BYTES - 10))
        for _ in range(64):  # 256 KiB
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(big, timeout=2)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    client = await RawClient.connect(served.port)
    for _ in range(64):
        assert (await client.response(client.request(body=frame(b"\x12\x00" + b"\x00" * 4090)))).grpc_status == 0
    await client.aclose()


async def test_output_waits_for_the_clients_window(served: Served) -> None:
    """A client with a 4-byte window gets a List response in 4-byte DATA frames, then its trailers."""
    client = await RawClient.connect(served.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4})
    response = await client.response(client.request(LIST_PATH, frame(b"")))
    statuses = health_pb2.HealthListResponse.FromString(unframe(response.data)).statuses
    assert {name: s.status for name, s in statuses.items()} == {"": SERVING, "app": SERVING}
    sizes = [len(e.data) for e in client.events if isinstance(e, h2.events.DataReceived)]
    assert max(sizes) <= 4 and sum(sizes) == len(response.data)
    assert response.trailers == {b"grpc-status": b"0"}
    await client.aclose()


async def test_a_long_lived_connection_does_not_grow(served: Served) -> None:
    """h2 remembers closed streams (65,536 by default, ~6 MiB); a load balancer's one connection must stay flat."""
    tracemalloc.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="app")
            for _ in range(MAX_CLOSED_STREAMS + 200):  # h2's record of closed streams is full
                await stub.Check(request, timeout=2)
            settled = tracemalloc.get_traced_memory()[0]
            more = 2 * MAX_CLOSED_STREAMS
            for _ in range(more):
                await stub.Check(request, timeout=2)
            grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes more after {more} more calls"  # h2's default: ~190 KB


# -- hostile clients --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        bytes(range(256)) * 4,
    ],
    ids=["http1", "bad-preface", "tls", "garbage"],
)
async def test_a_client_that_does_not_speak_http2_is_disconnected_quietly(
    served: Served, sent: bytes, log: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(sent)
    async with asyncio.timeout(WITHIN):
        while await reader.read(65536):
            pass
    writer.close()
    await asyncio.sleep(0.05)
    assert served.connections() == 0
    assert_quiet(log)


async def test_garbage_after_a_good_preface_gets_goaway(served: Served, log: pytest.LogCaptureFixture) -> None:
    client = await RawClient.connect(served.port)
    client.writer.write(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\xff" * 64)  # a bad WINDOW_UPDATE, then junk
    await client.closed()
    assert client.goaway() is not None
    assert_quiet(log)


# Whole frames (a length that matches, any type, flags and stream) and loose bytes.
frames = st.binary(min_size=9, max_size=64).map(lambda b: len(b[9:]).to_bytes(3, "big") + b[3:])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"8 bytes!"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(frames | st.binary(max_size=40), min_size=1, max_size=6))
async def test_any_bytes_after_the_preface_leave_the_server_serving(
    served: Served, log: pytest.LogCaptureFixture, junk: list[bytes]
) -> None:
    """Whatever follows the preface, the server answers (a PING) or closes that connection, quietly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(PREFACE + b"".join(junk) + PING)
    received = b""
    try:
        async with asyncio.timeout(0.05):  # loose bytes can leave a frame unfinished: the server waits
            while b"\x06\x01\x00\x00\x00\x008 bytes!" not in received:
                data = await reader.read(65536)
                if not data:
                    break
                received += data
    except (TimeoutError, ConnectionResetError):
        pass
    writer.transport.abort()
    client = await RawClient.connect(served.port)
    assert (await client.response(client.request())).grpc_status == 0
    await client.aclose()
    assert_quiet(log)


GOAWAY = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00" * 8  # last stream 0, NO_ERROR
requests = st.tuples(st.just("request"), st.sampled_from([CHECK_PATH, WATCH_PATH, LIST_PATH, "/x.Y/Z"]),
                     st.sampled_from([b"POST", b"GET"]), st.sampled_from([b"application/grpc", b"text/plain"]),
                     st.sampled_from([None, b"", frame(b"\x0a\x03app"), b"\x00\x00\x00"]), st.booleans())
operations = st.lists(st.one_of(requests, st.tuples(st.just("reset")), st.tuples(st.just("goaway")),
                                st.tuples(st.just("frame"), frames)), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, piece=st.integers(min_value=1, max_value=400))
async def test_any_mix_of_requests_resets_goaways_and_junk_is_answered_or_closed_quietly(
    served: Served, log: pytest.LogCaptureFixture, ops: list[tuple[Any, ...]], piece: int
) -> None:
    """What a client sends can end a call, a stream or its connection; never the server, and never in the log."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    data, open_streams = [client.data_to_send()], []
    for op in ops:
        if op[0] == "request":
            _, path, method, content_type, body, end = op
            stream_id = client.get_next_available_stream_id()
            headers = [(b":method", method), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"t"),
                       (b"content-type", content_type)]
            client.send_headers(stream_id, headers, end_stream=body is None and end)
            if body is not None:
                client.send_data(stream_id, body, end_stream=end)
            open_streams.append(stream_id)
        elif op[0] == "reset" and open_streams:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                client.reset_stream(open_streams.pop())
        elif op[0] == "goaway":
            data.append(client.data_to_send())
            data.append(GOAWAY)
            continue
        elif op[0] == "frame":
            data.append(client.data_to_send())
            data.append(op[1])
            continue
        data.append(client.data_to_send())
    sent = b"".join(data)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    for at in range(0, len(sent), piece):
        writer.write(sent[at : at + piece])
        await asyncio.sleep(0)
    try:
        async with asyncio.timeout(0.05):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionResetError):
        pass
    writer.transport.abort()
    fresh = await RawClient.connect(served.port)
    assert (await fresh.response(fresh.request())).grpc_status == 0
    await fresh.aclose()
    assert_quiet(log)


async def test_a_client_that_never_reads_is_cut_off_and_stalls_nobody(short: Served) -> None:
    """PINGs by the thousand, answers never read: the server stops reading it, and closes it after `unread`."""
    hog = await RawClient.connect(short.port)
    # PING frames by hand: h2's client would keep every one for its own bookkeeping.
    flood = b"".join(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + i.to_bytes(8, "big") for i in range(20000))
    began = time.perf_counter()
    try:
        while time.perf_counter() - began < 1.0:
            hog.writer.write(flood)
            await asyncio.wait_for(hog.writer.drain(), 0.2)
    except (TimeoutError, ConnectionError):
        pass  # our socket filled: the server stopped reading
    other = await RawClient.connect(short.port)
    latency = time.perf_counter()
    assert (await other.response(other.request())).grpc_status == 0
    assert time.perf_counter() - latency < 0.5
    await other.aclose()
    async with asyncio.timeout(WITHIN):
        while short.connections():  # noqa: ASYNC110 - the hog's close is ours to wait for
            await asyncio.sleep(0.02)
    hog.writer.transport.abort()


async def test_a_flood_of_streams_opened_and_reset_does_not_hold_the_loop(served: Served) -> None:
    """Rapid reset: ~300 KiB of HEADERS+RST_STREAM pairs is over half a second of h2's work if taken in one
    read; handed to h2 MAX_READ_STEP at a time, the loop (probes, the other ports) keeps turning."""
    client = await RawClient.connect(served.port)
    for _ in range(12000):
        stream_id = client.h2.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", CHECK_PATH.encode()), (b":authority", b"t"),
                   (b"content-type", b"application/grpc")]
        client.h2.send_headers(stream_id, headers)
        client.h2.reset_stream(stream_id)
    flood = client.h2.data_to_send()
    assert len(flood) > 256 * 1024

    lags: list[float] = []

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.002
            await asyncio.sleep(0.002)
            lags.append(loop.time() - due)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    client.writer.write(flood + PING)
    await client.writer.drain()
    await client.until(lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events), timeout=10)
    ticker.cancel()
    print(f"longest loop stall {max(lags) * 1000:.0f} ms")
    # Taken in one read, the flood stalls the loop for over 0.5 s; in steps, the longest stall is tens of ms (71 ms
    # with other jobs on the two cores), 201 ms once under heavy load. 0.4 s still tells the two apart.
    assert max(lags) < 0.4, f"the loop stood still for {max(lags) * 1000:.0f} ms"
    assert (await client.response(client.request())).grpc_status == 0
    await client.aclose()


async def test_requests_sent_before_a_half_close_are_all_answered(served: Served) -> None:
    """More than one read step of requests, then the client's FIN: every one answered, then the close."""
    client = await RawClient.connect(served.port)
    ids = [client.request(body=frame(encode_request("app" + "x" * 300))) for _ in range(60)]
    client.writer.write_eof()
    await client.closed(close=False)
    assert [client.responses[i].grpc_status for i in ids] == [5] * 60  # NOT_FOUND, each of them


# -- time -------------------------------------------------------------------------------------------


async def test_an_idle_connection_gets_goaway_then_is_closed(short: Served) -> None:
    client = await RawClient.connect(short.port)
    assert (await client.response(client.request())).grpc_status == 0
    took = await client.closed(close=False)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert 0.2 < took < WITHIN
    # We keep the socket open: the server waits `linger` for our close, then cuts us off.
    async with asyncio.timeout(WITHIN):
        while short.connections():  # noqa: ASYNC110 - the server exposes no event for it
            await asyncio.sleep(0.02)


async def test_a_connection_without_a_handshake_is_closed(short: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", short.port)
    began = time.perf_counter()
    async with asyncio.timeout(WITHIN):
        while await reader.read(65536):  # nothing (our SETTINGS answer the client's preface), then the close
            pass
    assert SHORT.handshake * 0.8 < time.perf_counter() - began < WITHIN
    writer.close()


async def test_a_request_that_never_completes_is_reset(short: Served) -> None:
    client = await RawClient.connect(short.port)
    stream_id = client.request(body=b"\x00\x00\x00\x00\x09ab", end=False)
    response = await client.response(stream_id)
    assert response.reset == h2.errors.ErrorCodes.CANCEL and not response.headers
    await client.aclose()


async def test_at_the_cap_connections_make_room_dawdling_then_idle_then_watching(served: Served) -> None:
    """The order of fd_limit.Standing on the gRPC port: a handshake never begun and a request whose
    message never comes (oldest first), then an idle connection, then a Watch, which ends
    UNAVAILABLE (the code gRPC clients retry) before GOAWAY. A connection accepted under a second
    ago that has said nothing is spared."""
    silent = await asyncio.open_connection("127.0.0.1", served.port)  # no preface, ever
    partial = await RawClient.connect(served.port)
    partial.request(body=b"", end=False)  # HEADERS, and no message
    idle = await RawClient.connect(served.port)
    idle_id = idle.request()
    await idle.response(idle_id)
    watching = await RawClient.connect(served.port)
    watch_id = watching.request(WATCH_PATH)
    await watching.until(lambda: bool(watching.responses[watch_id].data))
    await asyncio.sleep(NEW_CONNECTION_SECONDS)
    newest = await asyncio.open_connection("127.0.0.1", served.port)
    inner = served.server._server
    assert inner is not None
    deadline = time.monotonic() + WITHIN
    while len(inner.connections) < 5:
        assert time.monotonic() < deadline, "the newest connection was not accepted"
        await asyncio.sleep(0.01)
    inner.make_room()
    async with asyncio.timeout(WITHIN):
        while await silent[0].read(65536):  # our SETTINGS, then the close
            pass
    inner.make_room()
    await partial.closed()
    inner.make_room()
    await idle.closed()
    inner.make_room()
    ended = await watching.response(watch_id)
    assert ended.grpc_status == UNAVAILABLE
    assert watching.goaway() is not None
    await watching.closed()
    assert not newest[0].at_eof() and len(inner.connections) == 1
    for writer in (silent[1], newest[1]):
        writer.close()


async def test_a_watch_outlives_the_idle_limit(short: Served) -> None:
    client = await RawClient.connect(short.port)
    stream_id = client.request(WATCH_PATH)
    await client.until(lambda: bool(client.responses[stream_id].data))
    await asyncio.sleep(SHORT.idle * 3)
    assert client.goaway() is None and short.server.open_watches == 1
    short.state.record("app", ProbeResult(Outcome.FAILURE, "down", 0.001))
    await client.until(lambda: len(client.responses[stream_id].data) == 2 * 7)
    await client.aclose()


async def test_a_window_that_never_opens_is_cut_off(short: Served) -> None:
    client = await RawClient.connect(short.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.request(LIST_PATH, frame(b""))
    took = await client.closed()
    assert took < WITHIN


async def test_keepalive_pings_are_answered(served: Served) -> None:
    client = await RawClient.connect(served.port)
    client.h2.ping(b"12345678")
    client.flush()
    await client.until(lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events))
    await client.aclose()
    options = [("grpc.keepalive_time_ms", 50), ("grpc.keepalive_permit_without_calls", 1),
               ("grpc.http2.max_pings_without_data", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        await asyncio.sleep(0.5)  # ten pings
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        assert (await stub.Check(health_pb2.HealthCheckRequest(service="app"), timeout=2)).status == SERVING


# -- stop ---------------------------------------------------------------------------------------------


async def test_stop_sends_goaway_and_closes_idle_connections_at_once() -> None:
    it = await serve()
    client = await RawClient.connect(it.port)
    assert (await client.response(client.request())).grpc_status == 0
    closed = asyncio.create_task(client.closed())  # and closes in turn, as grpcio does
    began = time.perf_counter()
    await it.server.stop(grace=3.0)
    assert time.perf_counter() - began < 1.0
    await closed
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR


async def test_stop_gives_a_call_in_flight_its_grace_and_refuses_new_ones() -> None:
    it = await serve()
    client = await RawClient.connect(it.port)
    in_flight = client.request(body=b"\x00\x00\x00\x00\x02", end=False)  # the prefix; the message still to come
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(it.server.stop(grace=3.0))
    await asyncio.sleep(0.1)
    assert not stopping.done()
    refused = client.request()
    await client.until(lambda: client.responses[refused].reset is not None)
    assert client.responses[refused].reset == h2.errors.ErrorCodes.REFUSED_STREAM
    client.h2.send_data(in_flight, b"\x0a\x00", end_stream=True)
    client.flush()
    response = await client.response(in_flight)
    assert response.grpc_status == 0 and decode_response(unframe(response.data)) == NOT_SERVING
    await client.closed()
    async with asyncio.timeout(1.0):
        await stopping


async def test_a_request_read_after_our_goaway_is_dropped_quietly(log: pytest.LogCaptureFixture) -> None:
    """The last call of a stopping server ends, so GOAWAY goes out, while the same read holds a new request."""
    it = await serve()
    client = await RawClient.connect(it.port)
    in_flight = client.request(body=b"\x00\x00\x00\x00\x02", end=False)
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(it.server.stop(grace=3.0))
    await asyncio.sleep(0.1)
    client.h2.send_data(in_flight, b"\x0a\x00", end_stream=True)
    client.request()  # one write: the end of the call in flight, then a new one
    await client.closed()
    await stopping
    assert client.responses[in_flight].grpc_status == 0
    assert_quiet(log)


async def test_stop_cuts_off_what_outlasts_the_grace() -> None:
    it = await serve()
    client = await RawClient.connect(it.port)
    client.request(body=b"\x00\x00\x00\x00\x02", end=False)
    await asyncio.sleep(0.05)
    began = time.perf_counter()
    await it.server.stop(grace=0.3)
    assert 0.25 < time.perf_counter() - began < 1.0
    await client.closed()
