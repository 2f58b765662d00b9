"""gRPC calls over HTTP/2 on asyncio's Protocol and transport, with h2 (python-hyper) for HTTP/2.

Not grpcio: the gRPC health port serves three small methods, and grpcio with protobuf
added 10-13 MiB to `run`. This module knows gRPC's wire (grpc's doc/PROTOCOL-HTTP2.md)
and nothing of health: a handler gets a `Call` holding the request message, and answers
it once (`reply`, `fail`) or streams (`send` … `finish`). Unary and server-streaming
calls only, the two kinds `grpc.health.v1.Health` has.

    server = GrpcServer({"/pkg.Service/Method": handler}, max_request_bytes=4096)
    port = await server.start("0.0.0.0", 8551)
    await server.stop(grace=0.5)

A handler runs inline, in `data_received`, as soon as the request message is complete
(before the client half-closes, as grpcio's server does); no task is started per call.

What a client can make the server hold is bounded: MAX_CONCURRENT_STREAMS streams per
connection, a header list of MAX_HEADER_LIST_BYTES, a request message of
`max_request_bytes` (RESOURCE_EXHAUSTED beyond), what HTTP/2 flow control lets it send
(every byte received is acknowledged at once, so a client is never stalled), and time
(`ConnectionLimits`): an unfinished handshake or request, output the client does not
read, an idle connection. What it makes the loop do is bounded too: a read goes to h2
MAX_READ_STEP bytes at a time, so a flood of tiny frames cannot hold up the probes and the
other ports. A client that sends what is not HTTP/2 is disconnected and never logged; an
HTTP/2 request that is not gRPC gets the answer gRPC servers give (405 for a method other
than POST, 415 for another content type). Connections: at most `max_connections` (a share of
the fd limit); a newcomer beyond it is let in and another makes room by `fd_limit.Standing` (a
handshake or a request message that never comes, else the idlest, else the oldest Watch, which
ends UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from probes.grpc_wire import (
    INTERNAL,
    OK,
    PREFIX_BYTES,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    UNIMPLEMENTED,
    encode_message,
    frame,
    framed_length,
)
from sidecar.contract import LOGGER_NAME
from sidecar.fd_limit import NEW_CONNECTION_SECONDS, Standing, close_or_reset, connections_per_port, evictee
from sidecar.serve.listen import serve_on

# HTTP/2's recommended minimum (RFC 9113, 6.5.2): room for many Watch streams on one
# connection, while a client cannot make one connection hold unbounded stream state.
# It is also h2's own default, which h2 enforces from the first frame.
MAX_CONCURRENT_STREAMS = 100
# gRPC's default limit on a request's metadata.
MAX_HEADER_LIST_BYTES = 8192
# Bytes handed to h2 per loop step; the rest of a read waits for the next step. A read can
# be 256 KiB, and 256 KiB of tiny frames (streams opened and reset at once, PINGs) is about
# half a second of h2's work; 8 KiB is 15-25 ms of it, so one client cannot hold the loop
# that the probes and the other ports share. A health check's request is a few hundred bytes.
MAX_READ_STEP = 8 * 1024
# Closed streams h2 remembers per connection, to tell a late frame on one from a protocol
# error. Its default (65,536) grows a long-lived connection by ~6 MiB; a late frame
# arrives within a round trip, when far fewer streams can have closed.
MAX_CLOSED_STREAMS = 1024

Handler = Callable[["Call"], None]

_GRPC_CONTENT_TYPE = b"application/grpc"
_HEADERS = ((b":status", b"200"), (b"content-type", _GRPC_CONTENT_TYPE))
# We take and send only uncompressed messages, and say so (PROTOCOL-HTTP2.md, "Compression").
_ACCEPT_ENCODING = (b"grpc-accept-encoding", b"identity")
_RESPONSE_HEADERS = (*_HEADERS, _ACCEPT_ENCODING)
_IDENTITY = (b"", b"identity")
# A Watch ended to make room: UNAVAILABLE is the code gRPC clients retry (grpc's doc/statuscodes.md).
_EVICTED_TEXT = "server at its connection limit"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a connection may sit in each state before it is closed, in seconds."""

    handshake: float = 10.0  # from accept to the client's preface and its ACK of our SETTINGS
    request: float = 10.0  # from a request's HEADERS to its whole message
    unread: float = 10.0  # output the client does not take: a full socket or a closed flow-control window
    idle: float = 300.0  # no stream open; a load balancer checking every few seconds keeps its connection
    linger: float = 2.0  # after our GOAWAY, for the client to close first (so our close sends no RST)


DEFAULT_LIMITS = ConnectionLimits()


class Call:
    """One call on one stream: the request message, and the way back to the client.

    Answer once with `reply(message)` or `fail(code, text)`, or stream: `send(message)`
    any number of times, then `finish()`. Once the call has ended (answered, cancelled
    by the client, or its connection lost) every method does nothing; `on_gone`, if set,
    is called once if the client goes away before the call ended.
    """

    __slots__ = (
        "_body",
        "_connection",
        "_encoding_named",
        "_handler",
        "_opened_at",
        "_pending",
        "_trailers",
        "ended",
        "headers_sent",
        "on_gone",
        "request",
        "stream_id",
    )

    def __init__(self, connection: _Connection, stream_id: int, handler: Handler, opened_at: float) -> None:
        self.stream_id = stream_id
        self.request: bytes | None = None  # the message, once it all arrived
        self.ended = False
        self.headers_sent = False
        self.on_gone: Callable[[], None] | None = None
        self._connection = connection
        self._handler: Handler | None = handler
        self._opened_at = opened_at
        self._body = bytearray()  # the request as it arrives
        self._pending = bytearray()  # framed messages that flow control holds back
        self._trailers: list[tuple[bytes, bytes]] | None = None  # sent once _pending is
        self._encoding_named = False  # a compressed message is then UNIMPLEMENTED, not INTERNAL

    def send(self, message: bytes) -> None:
        if not self.ended:
            self._connection.send_message(self, frame(message))

    def reply(self, message: bytes) -> None:
        """The one response message of a unary call, then OK."""
        if not self.ended:
            self._connection.send_message(self, frame(message))
            self.finish()

    def fail(self, code: int, text: str = "") -> None:
        self.finish(code, text)

    def finish(self, code: int = OK, text: str = "") -> None:
        """End the call with `code` (and grpc-message `text`, a fixed phrase: never the client's bytes)."""
        if self.ended:
            return
        self.ended = True
        self.on_gone = None
        self._connection.finish(self, code, text)

    def _gone(self) -> None:
        """The client reset the stream or the connection was lost."""
        callback = self.on_gone
        self.ended = True
        self.on_gone = None
        if callback is not None:
            callback()


class GrpcServer:
    """An asyncio server answering gRPC calls by path; see the module docstring."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        max_request_bytes: int,
        limits: ConnectionLimits = DEFAULT_LIMITS,
        max_connections: int | None = None,
    ) -> None:
        self.routes = {path.encode(): handler for path, handler in routes.items()}
        # A share of the fd limit (sidecar.fd_limit): beyond it the idlest connection makes room.
        self.max_connections = connections_per_port() if max_connections is None else max_connections
        self.max_request_bytes = max_request_bytes
        self.limits = limits
        self.logger = logging.getLogger(LOGGER_NAME)
        self.stopping = False
        self.connections: set[_Connection] = set()
        self.serials = itertools.count()
        self._listener: asyncio.Server | None = None
        self._all_gone: asyncio.Event | None = None
        # A fixed phrase: a grpc-message that varied with the client's bytes would also
        # grow the HPACK table a client sizes.
        self.oversized_text = f"request message over {max_request_bytes} bytes"

    def make_room(self) -> None:
        """At the cap, give up one connection for a newcomer, by `fd_limit.Standing`: a new client (the
        kubelet's grpc probe opens one per probe) gets in whatever a flood holds open: handshakes that
        never finish, requests that never arrive whole, idle connections, Watch streams."""
        victim = evictee(self.connections, _Connection.rank)
        if victim is not None:
            victim.evict()

    async def start(self, bind: str, port: int) -> int:
        """Listen on bind:port (0 picks a free port) and return the bound port; OSError if it can't.

        No SO_REUSEPORT: a second server on the same port must fail to bind, not share it.
        """
        if self._listener is not None:
            raise RuntimeError("gRPC server already started")
        self.stopping = False
        self._listener = await serve_on(partial(_Connection, self), bind, port)
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop listening; GOAWAY to every connection once its calls ended, each given `grace` seconds. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self.stopping = True
        listener.close()
        for connection in list(self.connections):
            connection.shut_down()
        if self.connections:
            self._all_gone = asyncio.Event()
            try:
                async with asyncio.timeout(grace):
                    await self._all_gone.wait()
            except TimeoutError:
                pass
        for connection in list(self.connections):
            connection.abort()
        await listener.wait_closed()
        await asyncio.sleep(0)  # let aborted transports report connection_lost

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if self._all_gone is not None and not self.connections:
            self._all_gone.set()


class _H2Connection(h2.connection.H2Connection):
    MAX_CLOSED_STREAMS = MAX_CLOSED_STREAMS
    # The SETTINGS we send, and the decoder's limit from the first byte, not only once the
    # client acknowledged the setting.
    DEFAULT_MAX_HEADER_LIST_SIZE = MAX_HEADER_LIST_BYTES


def _h2_config() -> h2.config.H2Configuration:
    # Our own headers are fixed and valid: checking and normalising them on every call is
    # CPU for nothing. The client's are validated.
    return h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
    )


_CONFIG = _h2_config()


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/2 through h2, each stream one Call."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._h2 = _H2Connection(config=_CONFIG)
        self._streams: dict[int, Call] = {}  # open streams: awaiting their request, running, or flushing
        self._blocked: dict[int, Call] = {}  # calls whose output flow control holds back
        self._new_calls: list[Call] = []  # opened by the data being read, for the request deadline
        self._opened_at = self._loop.time()
        self._idle_since = self._opened_at
        self._stalled_since: float | None = None  # output waiting on the client since
        self._closing_at: float | None = None  # GOAWAY sent: abort at this time if the client has not closed
        self._handshaken = False  # the client sent its preface and acknowledged our SETTINGS
        self._shutting_down = False  # the server stops: no new streams, GOAWAY once none is open
        self._write_paused = False
        self._backlog = bytearray()  # read, not yet handed to h2 (beyond MAX_READ_STEP)
        self._eof_after_backlog = False
        self._reading_paused = False
        self._reading = False  # in data_received: what handlers send is written once, at its end
        self._timer: asyncio.TimerHandle | None = None
        self._serial = next(server.serials)  # connections in the order they came
        self._asked = False  # a call was opened on it: idle from then on, not new or dawdling
        self._reset = False  # aborted: going, whatever connection_lost has yet to say

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but the same
        if len(self._server.connections) >= self._server.max_connections and not self._server.stopping:
            self._server.make_room()
        self._server.connections.add(self)
        if self._server.stopping:
            self.abort()
            return
        if self._h2.local_settings.max_concurrent_streams != MAX_CONCURRENT_STREAMS:  # another h2's default
            self._h2.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
                },
            )
        # Our SETTINGS go out with the answer to the client's preface, in one write: a
        # client sends its preface without waiting for ours (RFC 9113, 3.4).
        self._h2.initiate_connection()
        self._arm(self._opened_at + self._server.limits.handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.forget(self)
        self._drop_calls()

    def data_received(self, data: bytes) -> None:
        if self._closing_at is not None or self._transport is None:
            return  # GOAWAY sent: what follows is dropped until the client closes
        if self._backlog:  # still working through an earlier read: this waits its turn
            self._backlog += data
            return
        if len(data) > MAX_READ_STEP:
            self._backlog += data[MAX_READ_STEP:]
            data = data[:MAX_READ_STEP]
            self._update_reading()
            self._loop.call_soon(self._read_backlog)
        self._receive(data)

    def _read_backlog(self) -> None:
        if self._closing_at is not None or self._transport is None:
            self._backlog.clear()
            return
        step = bytes(self._backlog[:MAX_READ_STEP])
        del self._backlog[:MAX_READ_STEP]
        if self._backlog:
            self._loop.call_soon(self._read_backlog)
        self._receive(step)
        if not self._backlog:
            if self._eof_after_backlog and self._transport is not None:
                self._transport.close()
            else:
                self._update_reading()

    def _receive(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._close_after_goaway(send_goaway=False)  # h2 queued one, naming the error
            return
        except Exception:  # bytes that break h2 some other way: still only that client's problem
            self.abort()
            return
        if self._h2.state_machine.state is h2.connection.ConnectionState.CLOSED:
            # The client's GOAWAY was in this read: h2 lets us send nothing more, not even
            # answers to requests that came before it.
            self._close_after_goaway()
            return
        self._reading = True
        try:
            for event in events:
                if self._closing_at is not None:
                    break  # a GOAWAY (the client's, or ours for an error) ends what h2 lets us send
                self._handle(event)
            self._arm_request_deadline()
        except Exception:
            self._server.logger.exception("gRPC health server: error handling a request; connection closed")
            self.abort()
            return
        finally:
            self._reading = False
        self._write()

    def eof_received(self) -> bool:
        if self._backlog:
            self._eof_after_backlog = True  # answer what it sent first
            return True
        return False  # the client is done: close, and every call still open is gone

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()  # read no more requests while their answers cannot leave
        self._stall()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        self._unstall()

    def _update_reading(self) -> None:
        """Read from the socket unless answers cannot leave or an earlier read is still being handled."""
        paused = self._write_paused or bool(self._backlog)
        transport = self._transport
        if paused == self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # -- events -------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._stream_ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event.stream_id)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._flush_blocked()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self._handshaken = True
        # ConnectionTerminated (the client's GOAWAY) closed h2 before any event is seen: see _receive.
        # PING and SETTINGS are acknowledged by h2 itself; PRIORITY and unknown frames mean nothing here.

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self._shutting_down:
            if self._is_open(stream_id):  # the client may retry elsewhere
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        method = path = content_type = encoding = b""
        for name, value in event.headers:
            if name == b":method":
                method = bytes(value)
            elif name == b":path":
                path = bytes(value)
            elif name == b"content-type":
                content_type = bytes(value)
            elif name == b"grpc-encoding":
                encoding = bytes(value)
        if method != b"POST":
            self._refuse(stream_id, INTERNAL, "method must be POST", http_status=b"405")
            return
        if not _is_grpc(content_type):
            self._refuse(stream_id, INTERNAL, "content-type must be application/grpc", http_status=b"415")
            return
        handler = self._server.routes.get(path)
        if handler is None:
            self._refuse(stream_id, UNIMPLEMENTED, "unknown method")
            return
        call = Call(self, stream_id, handler, self._loop.time())
        call._encoding_named = encoding not in _IDENTITY
        self._streams[stream_id] = call
        self._asked = True
        self._new_calls.append(call)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        # Taken off the window at once, even for bytes we drop: the message size limit,
        # not flow control, bounds what a request may be.
        self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        call = self._streams.get(stream_id)
        if call is None or call._handler is None:
            return  # a message after the first is ignored, as grpcio does
        body = call._body
        body += event.data
        length = framed_length(bytes(body[:PREFIX_BYTES]))
        if length is None:
            return
        if length - PREFIX_BYTES > self._server.max_request_bytes:
            call.fail(RESOURCE_EXHAUSTED, self._server.oversized_text)
            return
        if body[0] != 0:
            if call._encoding_named:
                call.ended, call.on_gone = True, None
                self.finish(call, UNIMPLEMENTED, "compressed messages are not supported", (_ACCEPT_ENCODING,))
            else:
                call.fail(INTERNAL, "compressed flag set without grpc-encoding")
            return
        if len(body) >= length:
            call.request = bytes(body[PREFIX_BYTES:length])
            handler, call._handler, call._body = call._handler, None, bytearray()
            handler(call)

    def _stream_ended(self, stream_id: int) -> None:
        call = self._streams.get(stream_id)
        if call is None:
            return
        if call._handler is not None:  # no whole message came
            call.fail(INTERNAL, "truncated request message" if call._body else "no request message")

    def _stream_reset(self, stream_id: int) -> None:
        call = self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        if call is not None:
            self._after_stream_closed()
            call._gone()

    # -- sending --------------------------------------------------------------------------------

    def send_message(self, call: Call, data: bytes) -> None:
        if self._transport is None or call.stream_id not in self._streams or not self._is_open(call.stream_id):
            return
        try:
            if not call.headers_sent:
                call.headers_sent = True
                self._h2.send_headers(call.stream_id, _RESPONSE_HEADERS)
            call._pending += data
            self._flush(call)
        except h2.exceptions.H2Error:
            self._broken()
            return
        self._write()

    def finish(self, call: Call, code: int, text: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        if self._transport is None or call.stream_id not in self._streams:
            return
        if not self._is_open(call.stream_id):  # reset by a frame still to be handled
            self._forget(call)
            return
        trailers = [*extra, (b"grpc-status", b"%d" % code)]
        if text:
            trailers.append((b"grpc-message", encode_message(text).encode()))
        call._handler = None
        try:
            if call.headers_sent:
                call._trailers = trailers
                self._flush(call)
            else:  # trailers-only: one HEADERS frame, the status in it
                self._h2.send_headers(call.stream_id, [*_HEADERS, *trailers], end_stream=True)
                self._sent_last(call)
        except h2.exceptions.H2Error:
            self._broken()
            return
        self._write()

    def _broken(self) -> None:
        """h2 refused what we sent: a bug of ours, not the client's. That connection alone is closed."""
        self._server.logger.exception("gRPC health server: cannot answer a call; connection closed")
        self.abort()

    def _refuse(self, stream_id: int, code: int, text: str, http_status: bytes = b"200") -> None:
        """Answer a stream we do not serve with a trailers-only response."""
        if not self._is_open(stream_id):
            return
        headers = [(b":status", http_status), (b"content-type", _GRPC_CONTENT_TYPE), (b"grpc-status", b"%d" % code),
                   (b"grpc-message", encode_message(text).encode())]
        self._h2.send_headers(stream_id, headers, end_stream=True)
        self._stop_client_sending(stream_id)

    def _is_open(self, stream_id: int) -> bool:
        """Whether h2 lets us send on the stream. h2 has read a whole batch of frames before
        we see its first event, so a stream can be reset or ended by frames we have yet to handle."""
        stream = self._h2.streams.get(stream_id)
        return stream is not None and not stream.closed

    def _stop_client_sending(self, stream_id: int) -> None:
        """After our last frame: a client still sending is told to stop (RST_STREAM NO_ERROR), as grpcio does."""
        if self._is_open(stream_id):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)

    def _flush(self, call: Call) -> None:
        """Send what flow control allows of the call's pending output, then its trailers once all is sent."""
        pending = call._pending
        stream_id = call.stream_id
        if not self._is_open(stream_id):
            return  # reset: its StreamReset event, still to be handled, forgets it
        while pending:
            size = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size, len(pending))
            if size <= 0:
                self._blocked[stream_id] = call
                self._stall()
                return
            self._h2.send_data(stream_id, bytes(pending[:size]))
            del pending[:size]
        self._blocked.pop(stream_id, None)
        if call._trailers is not None:
            trailers, call._trailers = call._trailers, None
            self._h2.send_headers(stream_id, trailers, end_stream=True)
            self._sent_last(call)
        if not self._blocked:
            self._unstall()

    def _flush_blocked(self) -> None:
        for call in list(self._blocked.values()):
            self._flush(call)

    def _sent_last(self, call: Call) -> None:
        self._stop_client_sending(call.stream_id)
        self._forget(call)

    def _forget(self, call: Call) -> None:
        if self._streams.pop(call.stream_id, None) is not None:
            self._after_stream_closed()

    def _after_stream_closed(self) -> None:
        if self._streams:
            return
        if self._shutting_down:
            self._close_after_goaway()
        else:
            self._idle_since = self._loop.time()
            self._arm(self._idle_since + self._server.limits.idle)

    def _write(self) -> None:
        if not self._reading:  # else data_received writes it all at once, at its end
            self._write_now()

    def _write_now(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # -- time and closing -------------------------------------------------------------------------

    def _stall(self) -> None:
        if self._stalled_since is None:
            self._stalled_since = self._loop.time()
            self._arm(self._stalled_since + self._server.limits.unread)

    def _unstall(self) -> None:
        if not self._write_paused and not self._blocked:
            self._stalled_since = None

    def _arm_request_deadline(self) -> None:
        new_calls, self._new_calls = self._new_calls, []
        for call in new_calls:
            if call._handler is not None:  # still waiting for its message
                self._arm(call._opened_at + self._server.limits.request)
                return  # the first is the earliest

    def _arm(self, when: float) -> None:
        """Make sure the timer fires by `when`; it re-arms itself for what is due later."""
        if self._transport is None:
            return
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        now = self._loop.time()
        limits = self._server.limits
        later: list[float] = []

        def due(deadline: float) -> bool:
            if deadline <= now:
                return True
            later.append(deadline)
            return False

        if self._closing_at is not None:
            if due(self._closing_at):
                self.abort()
            else:
                self._arm(min(later))
            return
        if (not self._handshaken and due(self._opened_at + limits.handshake)) or (
            self._stalled_since is not None and due(self._stalled_since + limits.unread)
        ):
            self.abort()
            return
        for call in list(self._streams.values()):
            if call._handler is not None and due(call._opened_at + limits.request):
                if self._is_open(call.stream_id):
                    self._h2.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)
                self._forget(call)
                call._gone()
        self._write()
        if not self._streams and due(self._idle_since + limits.idle):
            self._close_after_goaway()
            return
        if later:
            self._arm(min(later))

    def shut_down(self) -> None:
        """The server stops: refuse new streams, and GOAWAY once the open ones ended."""
        self._shutting_down = True
        if not self._streams:
            self._close_after_goaway()

    def _close_after_goaway(self, send_goaway: bool = True) -> None:
        """GOAWAY, then our FIN; the client closes in turn, or is cut off after the linger."""
        if self._closing_at is not None or self._transport is None or self._transport.is_closing():
            return
        self._closing_at = self._loop.time() + self._server.limits.linger
        if send_goaway:
            self._h2.close_connection()
        self._write_now()  # before the FIN, even in data_received
        self._drop_calls()  # h2 sends nothing more on this connection
        try:
            self._transport.write_eof()
        except (OSError, RuntimeError):  # the client is already gone (uvloop says so with RuntimeError)
            self.abort()
            return
        self._arm(self._closing_at)

    def rank(self) -> tuple[Standing, float, int] | None:
        """Where it stands in the order connections make room (fd_limit.evictee); None if already going."""
        transport = self._transport
        if transport is None or self._reset or transport.is_closing():
            return None
        if not self._asked and self._stalled_since is None and self._closing_at is None:
            # Nothing asked yet: new for a second (its handshake and call may be unread), then dawdling.
            new = self._loop.time() - self._opened_at < NEW_CONNECTION_SECONDS
            return Standing.NEW if new else Standing.DAWDLING, self._opened_at, self._serial
        owed = [t for t in (self._stalled_since, None if self._handshaken else self._opened_at) if t is not None]
        if self._closing_at is not None:
            owed.append(self._closing_at - self._server.limits.linger)
        if owed:  # output unread, a handshake unfinished, or our GOAWAY not yet answered
            return Standing.DAWDLING, min(owed), self._serial
        if not self._streams:
            return Standing.IDLE, self._idle_since, self._serial
        watching = [call._opened_at for call in self._streams.values() if call._handler is None]
        if watching:  # a handler ran and the call goes on: a Watch
            return Standing.HELD, min(watching), self._serial
        return Standing.DAWDLING, min(call._opened_at for call in self._streams.values()), self._serial

    def evict(self) -> None:
        """Make room: every open Watch ends UNAVAILABLE (its client retries), GOAWAY; then close, or
        reset if what we sent does not leave at once (as any other connection is closed)."""
        transport = self._transport
        watching = [call for call in self._streams.values() if call._handler is None]
        if transport is None or not watching:
            self.abort()
            return
        for call in watching:
            told = call.on_gone  # the handler forgets the call: it ended, if not by the client
            call.finish(UNAVAILABLE, _EVICTED_TEXT)
            if told is not None:
                told()
        self._h2.close_connection()  # GOAWAY: the streams still arriving were never taken
        self._write_now()
        self._drop_calls()
        self._reset = True  # going: never chosen twice
        close_or_reset(transport, in_kernel=False)  # just written: the kernel delivers it

    def abort(self) -> None:
        """Close now: gracefully if the client took all we sent, else with a reset (fd_limit.close_or_reset)."""
        if self._transport is not None:
            self._reset = True
            close_or_reset(self._transport)
            self._drop_calls()  # now, not at connection_lost: nothing is written to it meanwhile

    def _drop_calls(self) -> None:
        """Every call still open is over: its client is gone, or h2 will send nothing more."""
        streams, self._streams = self._streams, {}
        self._blocked.clear()
        for call in streams.values():
            call._gone()


def _is_grpc(content_type: bytes) -> bool:
    """application/grpc, application/grpc+proto, application/grpc;… (PROTOCOL-HTTP2.md)."""
    if not content_type.startswith(_GRPC_CONTENT_TYPE):
        return False
    rest = content_type[len(_GRPC_CONTENT_TYPE) :]
    return not rest or rest[:1] in (b"+", b";")
