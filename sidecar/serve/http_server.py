"""A GET-only HTTP/1.1 server on asyncio's Protocol and transport: the health and metrics ports.

Not aiohttp: these ports take bodiless GETs and answer a few hundred bytes, and aiohttp.web
was the largest part of `run`'s memory (docs/architecture.md, "The serve package", has the
figures). Requests are read by `http_wire` (a strict plain-request reader, h11 for the rest).

    server = GetOnlyServer({"/ready": ready, "/ready/{container}": one}, max_body=1024, shutdown_grace=1.0)
    port = await server.start("0.0.0.0", 0)
    await server.stop()

A handler takes a Request and returns an Answer, or None if it answers later: with
`request.hold(key, timeout, answer)` until `server.held.release(key, answer)` (a long-poll,
released from a state observer hook: one Answer written to every waiter, no task woken per
waiter) or with `request.respond_later(coroutine)` (a task, for /live and /wait-for-drain).
Everything else is answered inside `data_received`, without a task.

What a client can make the server hold is bounded: a head of MAX_HEAD, a body of `max_body`
(413 beyond, or for a body of unknown length), one request at a time per connection (a
pipelined one waits, and reading pauses once MAX_HEAD of them is buffered), and time
(`Timeouts`): idle keep-alive connections, unfinished requests, unread answers and the
lingering after a refusal are closed. A refusal is answered with one line and never logged.
Connections: at most `max_connections` (a share of the fd limit, sidecar.fd_limit); a newcomer
beyond it is let in and another makes room (`make_room`), by `fd_limit.Standing`: a dawdling one
(nothing asked yet, a head or body still arriving, an answer unread), else the idlest keep-alive,
else the oldest held long-poll (answered now, as its wait's end would), else the oldest request in
flight. A connection closed by a deadline, or at shutdown, is reset if the client left some of
what we sent unread: a graceful close would wait for that reader (the fd, or the kernel's buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import h11

from sidecar.contract import LOGGER_NAME
from sidecar.fd_limit import NEW_CONNECTION_SECONDS, Standing, connections_per_port, evictee, reset, unsent_bytes
from sidecar.serve.http_wire import (
    MAX_HEAD,
    MAX_HEADER_LINE,
    MAX_REQUEST_LINE,
    Answer,
    NotPlain,
    date_line,
    error_answer,
    h11_asks_to_close,
    h11_fields,
    h11_request_problem,
    header_values,
    read_plain_request,
)
from sidecar.serve.listen import serve_on

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NOT_HELD = object()  # a Request's held_key until it is held
_SERVED_METHODS = (b"GET", b"HEAD")

Handler = Callable[["Request"], Answer | None]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a connection may sit in each state before it is closed, in seconds.

    Checked by one sweep over the connections (never a timer per request), so each is
    kept to within one sweep: a quarter of the shortest, at most a second.
    """

    idle: float = 75.0  # keep-alive between requests, as nginx; Prometheus scrapes reuse it
    request: float = 10.0  # from a request's first byte to its last: a slowloris head or body
    unread: float = 10.0  # an answer the client does not read (the write buffer stays full)
    linger: float = 2.0  # reading and dropping what follows a refused request, so the refusal arrives

    @property
    def sweep_every(self) -> float:
        return min(1.0, min(self.idle, self.request, self.unread, self.linger) / 4)


def _refusals(max_body: int) -> dict[int, Answer]:
    """The one-line (JSON) answers to requests these ports do not take (never logged: docs/security.md)."""
    return {
        400: error_answer(400),
        413: error_answer(413, f"a request body must be at most {max_body} bytes, with a Content-Length"),
        414: error_answer(414, f"request line over {MAX_REQUEST_LINE} bytes"),
        431: error_answer(431, f"request head over {MAX_HEAD} bytes, or a header line over {MAX_HEADER_LINE}"),
        505: error_answer(505, "HTTP/1.1 only"),
    }


_NOT_FOUND = error_answer(404)
_METHOD_NOT_ALLOWED = error_answer(405, headers=b"Allow: GET, HEAD\r\n")
_INTERNAL_ERROR = error_answer(500)


class Request:
    """One request, answered once: now (the handler's return value) or later (`respond`)."""

    __slots__ = (
        "_connection", "_fields", "_on_gone", "answer_headers", "close", "head_only", "held_key", "method", "param",
        "path", "query",
    )

    def __init__(
        self, connection: _Connection, method: bytes, target: bytes, head_only: bool, close: bool, fields: bytes = b""
    ) -> None:
        self.method = method
        self._fields = fields  # the header lines, read only by a handler that asks (`header`)
        raw = target.decode("latin-1")  # h11 and the plain reader take visible ASCII only
        if not raw.startswith("/") and "://" in raw:  # absolute-form (a proxy's): its path
            raw = "/" + raw.partition("://")[2].partition("/")[2]
        self.path, _, self.query = raw.partition("?")
        self.head_only = head_only
        self.close = close
        self.param = ""  # the {…} segment of a one-segment route
        self.answer_headers = b""  # header lines its answer carries beside the answer's own ("Wait-Capped: 300\r\n")
        self._connection: _Connection | None = connection
        self._on_gone: Callable[[], None] | None = None
        self.held_key: Hashable = _NOT_HELD  # what it is held for, once held (HeldRequests)

    def query_value(self, name: str) -> str | None:
        """The first value of `name` in the query string (percent-decoded), or None."""
        if name not in self.query:
            return None
        for key, value in parse_qsl(self.query, keep_blank_values=True):
            if key == name:
                return value
        return None

    def header(self, name: bytes) -> str:
        """Every value of the header `name` (lowercase), comma-joined; "" if it was not sent."""
        return header_values(self._fields, name) if self._fields else ""

    def respond(self, answer: Answer) -> None:
        """Send `answer` (once; later calls, or calls after the client left, do nothing)."""
        connection, self._connection, self._on_gone = self._connection, None, None
        if connection is not None:
            connection.answer_later(self, answer)

    def respond_later(self, work: Coroutine[Any, Any, Answer]) -> None:
        """Answer with what `work` returns, run in a task the server owns (cancelled at stop)."""
        if self._connection is None:
            work.close()
            return
        self._connection.server.spawn(self, work)

    def hold(self, key: Hashable, timeout: float, answer_at_timeout: Callable[[], Answer]) -> None:
        """Hold until `server.held.release(key, …)`, or answer with `answer_at_timeout()` after `timeout`."""
        if self._connection is None:
            return
        self._connection.server.held.hold(key, self, timeout, answer_at_timeout)

    def when_gone(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` if the client goes away before the answer."""
        self._on_gone = callback

    def gone(self) -> None:
        """The client went away unanswered."""
        callback = self._on_gone
        self.detach()
        if callback is not None:
            callback()

    def detach(self) -> None:
        """Answered (or gone): a later respond() does nothing."""
        self._connection, self._on_gone = None, None


class HeldRequests:
    """Requests held until their answer is known (long-polls), grouped by what they wait for.

    `release` writes one Answer to every request of a group at once, from wherever the
    change is learned: a state observer hook, inline, so no task is woken per request.
    """

    def __init__(self) -> None:
        self._groups: dict[Hashable, dict[Request, tuple[asyncio.TimerHandle, Callable[[], Answer]]]] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def waited_for(self) -> list[Hashable]:
        """The keys some request is held under (a copy: releasing changes them)."""
        return list(self._groups)

    def hold(self, key: Hashable, request: Request, timeout: float, answer_at_timeout: Callable[[], Answer]) -> None:
        timer = asyncio.get_running_loop().call_later(timeout, self._time_out, key, request)
        self._groups.setdefault(key, {})[request] = (timer, answer_at_timeout)
        request.held_key = key
        request.when_gone(partial(self._forget, key, request))

    def answer_early(self, request: Request) -> None:
        """Answer one held request now with what its timeout would answer (its connection makes room)."""
        entry = self._take(request.held_key, request)
        if entry is not None:
            entry[0].cancel()
            request.respond(entry[1]())

    def release(self, key: Hashable, answer: Callable[[], Answer]) -> None:
        """Answer every request held under `key` with the one `answer()` (built only if any waits)."""
        group = self._groups.pop(key, None)
        if not group:
            return
        shared = answer()
        for request, (timer, _) in group.items():
            timer.cancel()
            request.respond(shared)  # a write to the socket: no task, nothing rebuilt

    def release_all(self) -> None:
        """Answer every held request now with what its timeout would have answered (at shutdown)."""
        groups, self._groups = self._groups, {}
        for group in groups.values():
            for request, (timer, answer_at_timeout) in group.items():
                timer.cancel()
                request.respond(answer_at_timeout())

    def _time_out(self, key: Hashable, request: Request) -> None:
        entry = self._take(key, request)
        if entry is not None:
            request.respond(entry[1]())

    def _forget(self, key: Hashable, request: Request) -> None:
        entry = self._take(key, request)
        if entry is not None:
            entry[0].cancel()

    def _take(self, key: Hashable, request: Request) -> tuple[asyncio.TimerHandle, Callable[[], Answer]] | None:
        group = self._groups.get(key)
        if group is None:
            return None
        entry = group.pop(request, None)
        if not group:
            del self._groups[key]
        return entry


class Routes:
    """Exact paths, and one-segment templates ("/ready/{container}") whose segment is the request's `param`."""

    def __init__(self, table: Mapping[str, Handler]) -> None:
        self._exact: dict[str, Handler] = {}
        self._one_segment: dict[str, Handler] = {}  # "/ready/" -> handler
        for template, handler in table.items():
            prefix, brace, rest = template.partition("{")
            if not brace:
                self._exact[template] = handler
                continue
            if not (prefix.endswith("/") and rest.endswith("}") and "{" not in rest and "/" not in rest):
                raise ValueError(f"route {template!r}: only a last segment can be a parameter")
            self._one_segment[prefix] = handler

    def find(self, raw_path: str) -> tuple[Handler, str] | None:
        handler = self._exact.get(unquote(raw_path) if "%" in raw_path else raw_path)
        if handler is not None:
            return handler, ""
        prefix, slash, segment = raw_path.rpartition("/")
        handler = self._one_segment.get(unquote(prefix) + slash) if segment else None
        return (handler, unquote(segment)) if handler is not None else None


class GetOnlyServer:
    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        max_body: int,
        shutdown_grace: float,
        timeouts: Timeouts = Timeouts(),
        max_connections: int | None = None,
    ) -> None:
        self.routes = Routes(routes)
        # A share of the fd limit (sidecar.fd_limit): open connections beyond it evict the idlest.
        self.max_connections = connections_per_port() if max_connections is None else max_connections
        self.max_body = max_body
        self.shutdown_grace = shutdown_grace
        self.timeouts = timeouts
        self.held = HeldRequests()
        self.refusals = _refusals(max_body)
        self.logger = logging.getLogger(LOGGER_NAME)
        self.date = date_line()  # refreshed by the sweep: every answer's Date line
        self.tick = 0  # sweeps so far: the clock connections' deadlines are counted in
        self.stopping = False
        self.connections: set[_Connection] = set()
        self.serials = itertools.count()
        self._tasks: set[asyncio.Task[Answer]] = set()
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_gone: asyncio.Event | None = None
        self._limits = tuple(math.ceil(t / timeouts.sweep_every) for t in
                             (timeouts.idle, timeouts.request, timeouts.unread, timeouts.linger))
        self.new_for = math.ceil(NEW_CONNECTION_SECONDS / timeouts.sweep_every)  # in ticks

    async def start(self, bind: str, port: int) -> int:
        """Listen on bind:port (0 picks a free port) and return the bound port; OSError if it can't."""
        loop = asyncio.get_running_loop()
        self._listener = await serve_on(partial(_Connection, self), bind, port)
        self._sweeper = loop.call_later(self.timeouts.sweep_every, self._sweep)
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening; held requests get their answer now, in-flight ones `shutdown_grace`. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self.stopping = True
        listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.held.release_all()
        for connection in list(self.connections):
            connection.close_when_done()
        if self.connections:
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.shutdown_grace):
                    await self._all_gone.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for connection in list(self.connections):
            connection.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports report connection_lost

    def spawn(self, request: Request, work: Coroutine[Any, Any, Answer]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(partial(self._task_done, request))

    def _task_done(self, request: Request, task: asyncio.Task[Answer]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return  # only stop() cancels, and it closes the connection
        error = task.exception()
        if error is not None:
            self.logger.error("error answering %s", request.path, exc_info=error)
            request.close = True
            request.respond(_INTERNAL_ERROR)
        else:
            request.respond(task.result())

    def make_room(self) -> None:
        """At the cap, give up one connection for a newcomer, by `fd_limit.Standing` (and within one, the
        first in it; ticks tie within a sweep, then the first come): the kubelet's probe, a new
        connection that asks at once, gets in whatever a flood holds open, long-polls included."""
        victim = evictee(self.connections, _Connection.rank)
        if victim is not None:
            victim.evict()

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if self._all_gone is not None and not self.connections:
            self._all_gone.set()

    def _sweep(self) -> None:
        self.tick += 1
        self.date = date_line()
        idle, request, unread, linger = self._limits
        for connection in list(self.connections):
            connection.check_deadline(self.tick, idle, request, unread, linger)
        self._sweeper = asyncio.get_running_loop().call_later(self.timeouts.sweep_every, self._sweep)


class _Connection(asyncio.Protocol):
    """One client connection: reads requests in order and answers them in order."""

    def __init__(self, server: GetOnlyServer) -> None:
        self.server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""  # received, not yet read as a request
        self._scanned = 0  # how much of the buffer the plain reader already searched
        self._h11: h11.Connection | None = None  # reading one request that is not plain
        self._h11_request: h11.Request | None = None
        self._current: Request | None = None  # read, not yet answered
        self._since = server.tick  # when the present state (idle, reading, ...) began
        self.serial = next(server.serials)  # connections in the order they came
        self._served = False  # answered a request: idle from then on, not dawdling
        self._reset = False  # aborted: going, whatever connection_lost has yet to say
        self._write_paused = False
        self._reading_paused = False
        self._peer_done = False  # the client sent FIN: answer what it asked, then close
        self._closing = False
        self._lingering = False  # refused: drop what comes until the client closes

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but the same
        if self.server.stopping:
            self.server.connections.add(self)
            self._close()
            return
        if len(self.server.connections) >= self.server.max_connections:
            self.server.make_room()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._closing = True
        self.server.forget(self)
        current, self._current = self._current, None
        if current is not None:
            current.gone()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._h11 is not None:
            self._h11.receive_data(data)
        elif self._buffer:
            self._buffer += data
        else:
            self._buffer = data
            if self._current is None:
                self._since = self.server.tick  # a request begins
        if self._current is None and not self._write_paused:
            self._read_requests()
        elif len(self._buffer) > MAX_HEAD:
            self._pause_reading()  # pipelined requests wait for the one in flight

    def eof_received(self) -> bool:
        if self._lingering:
            return False  # the transport closes
        if self._current is not None:
            # A client that stops sending while its request is in flight has gone (as aiohttp and
            # Go's net/http take it). Held open, a long-poll would keep our socket for its whole
            # wait while the client keeps none: fds for free, at any rate.
            return False
        self._peer_done = True
        if self._h11 is not None:
            self._h11.receive_data(b"")
        if not self._write_paused:
            self._read_requests()
        return True  # we close, once what was asked is answered

    def pause_writing(self) -> None:
        self._write_paused = True
        self._since = self.server.tick
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._since = self.server.tick
        self._resume_reading()
        if self._current is None:
            self._read_requests()

    # -- reading ------------------------------------------------------------------------------

    def _read_requests(self) -> None:
        """Read and answer buffered requests until one is in flight, none is complete, or writing backs up."""
        while not self._closing and self._current is None and not self._write_paused:
            if self._h11 is not None:
                if not self._read_h11():
                    return
                continue
            buffer = self._buffer
            if not buffer:
                if self._peer_done:
                    self._close()
                return
            plain = read_plain_request(buffer, self._scanned)
            if plain is None:
                self._scanned = len(buffer)
                if self._peer_done:
                    self._close()  # the client stopped mid-request
                return
            self._scanned = 0
            if isinstance(plain, NotPlain):
                self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                self._h11.receive_data(buffer)
                self._buffer = b""
                if self._peer_done:
                    self._h11.receive_data(b"")
                continue
            self._buffer = buffer[plain.end :]
            method = b"HEAD" if plain.head_only else b"GET"
            self._dispatch(method, plain.target, plain.head_only, plain.close, plain.fields)

    def _read_h11(self) -> bool:
        """Feed h11 until it has read a whole request (True: dispatched) or needs more (False)."""
        parser = self._h11
        assert parser is not None
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 refuses transfer codings other than chunked (501); any is a body of
                # unknown length, which these ports refuse with 413.
                status = 413 if exc.error_status_hint == 501 else exc.error_status_hint
                self._refuse(status if status in self.server.refusals else 400)
                return False
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.Request):
                problem = h11_request_problem(event, self.server.max_body)
                if problem is not None:
                    self._refuse(problem)
                    return False
                self._h11_request = event
                if parser.they_are_waiting_for_100_continue:
                    self._write(_CONTINUE)  # a body within the limit: let the client send it
            elif isinstance(event, h11.EndOfMessage):
                request, self._h11_request = self._h11_request, None
                self._buffer = parser.trailing_data[0]
                self._h11 = None
                assert request is not None
                self._dispatch(
                    request.method, request.target, request.method == b"HEAD", h11_asks_to_close(request),
                    h11_fields(request),
                )
                return True
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return False
            # h11.Data: a body within the limit, read and dropped

    def _dispatch(self, method: bytes, target: bytes, head_only: bool, close: bool, fields: bytes) -> None:
        request = self._current = Request(self, method, target, head_only, close, fields)
        self._since = self.server.tick  # in flight from now: held or running, the oldest makes room first
        found = self.server.routes.find(request.path)
        answer: Answer | None
        if found is None:
            answer = _NOT_FOUND
        elif method not in _SERVED_METHODS:
            answer = _METHOD_NOT_ALLOWED
        else:
            handler, request.param = found
            try:
                answer = handler(request)
            except Exception:
                self.server.logger.exception("error answering %s", request.path)
                request.close, answer = True, _INTERNAL_ERROR
        if answer is not None:
            request.detach()
            self._answer(request, answer)

    # -- answering ----------------------------------------------------------------------------

    def answer_later(self, request: Request, answer: Answer) -> None:
        """A held or spawned request's answer. It may come from inside a state observer hook:
        requests pipelined behind it are read on the next loop pass, never inside the hook."""
        if request is not self._current or self._transport is None:
            return
        self._answer(request, answer)
        if self._closing:
            return
        self._resume_reading()
        if self._buffer or self._h11 is not None or self._peer_done:
            asyncio.get_running_loop().call_soon(self._read_requests)

    def _answer(self, request: Request, answer: Answer) -> None:
        self._current = None
        close = request.close or self.server.stopping
        extra = request.answer_headers
        self._write(answer.wire(self.server.date, head_only=request.head_only, close=close, extra=extra))
        self._served = True
        self._since = self.server.tick
        if close:
            self._close()

    def _refuse(self, status: int) -> None:
        """Answer a request we won't read with one line, then drop what follows until the client
        closes: closing with its bytes unread would reset the connection, and a reset can
        overtake the answer."""
        self._write(self.server.refusals[status].wire(self.server.date, head_only=False, close=True))
        self._h11 = self._h11_request = None
        self._buffer = b""
        self._closing = self._lingering = True
        self._since = self.server.tick
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if transport.can_write_eof() and not self._peer_done:
                transport.write_eof()
            else:
                transport.close()  # nothing more will come: no lingering

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    # -- closing ------------------------------------------------------------------------------

    def rank(self) -> tuple[Standing, float, int] | None:
        """Where it stands in the order connections make room (fd_limit.evictee); None if already going."""
        transport = self._transport
        if transport is None or self._reset or (transport.is_closing() and not transport.get_write_buffer_size()):
            return None  # gone, reset, or closed with nothing left to write: its fd is free on the next pass
        current = self._current
        if current is not None:
            standing = Standing.HELD if current.held_key is not _NOT_HELD else Standing.BUSY
        elif self._closing or self._write_paused or self._buffer or self._h11 is not None:
            standing = Standing.DAWDLING
        elif not self._served:  # nothing heard yet
            fresh = self.server.tick - self._since < self.server.new_for
            standing = Standing.NEW if fresh else Standing.DAWDLING
        else:
            standing = Standing.IDLE
        return standing, self._since, self.serial

    def evict(self) -> None:
        """Make room: a held long-poll is answered now (as its wait's end would) and closed, any other
        connection reset. Either way its fd is free on the loop's next pass."""
        current = self._current
        if current is None or current.held_key is _NOT_HELD:
            self.abort()
            return
        current.close = True
        self.server.held.answer_early(current)  # written at once; _answer closes
        self._close_or_reset(in_kernel=False)  # the kernel delivers it, if asyncio's buffer took none

    def close_when_done(self) -> None:
        """At shutdown: close now unless a request is in flight, which closes after its answer.

        An answer still in our buffer is dropped with a reset: closing gracefully would wait for a
        reader that may never come, holding the exit for the whole grace. What the kernel holds it
        delivers after we exit."""
        if self._current is None:
            self._close_or_reset(in_kernel=False)

    def check_deadline(self, tick: int, idle: int, request: int, unread: int, linger: int) -> None:
        if self._transport is None:
            return
        age = tick - self._since
        if self._lingering:
            if age >= linger:
                self.abort()
        elif self._write_paused or self._closing:  # an answer the client does not take
            if age >= unread:
                self.abort()
        elif self._current is None:
            reading = bool(self._buffer) or self._h11 is not None
            if age >= (request if reading else idle):
                self._close_or_reset()

    def _close_or_reset(self, *, in_kernel: bool = True) -> None:
        """Close gracefully if the client has taken all we sent, else reset (fd_limit.close_or_reset):
        a small answer it never read, in our buffer or the kernel's, would hold the connection until
        the client leaves, as transport.close() waits for the flush."""
        transport = self._transport
        if transport is not None and unsent_bytes(transport, in_kernel=in_kernel):
            self.abort()
        else:
            self._close()

    def _close(self) -> None:
        if not self._closing:
            self._since = self.server.tick  # closing from now: `unread` bounds the flush
        self._closing = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        """Close at once, with a reset: what the client left unread is dropped, in the kernel too."""
        self._closing = self._reset = True
        transport = self._transport
        if transport is not None:
            reset(transport)

    def _pause_reading(self) -> None:
        transport = self._transport
        if not self._reading_paused and transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._reading_paused = True

    def _resume_reading(self) -> None:
        transport = self._transport
        if self._reading_paused and transport is not None and not transport.is_closing():
            transport.resume_reading()
            self._reading_paused = False
