"""The webhook's HTTPS port: one aiohttp lifecycle (start, bound port, bounded shutdown).

Only `webhook` serves with aiohttp: it takes POSTed AdmissionReviews over TLS. The health
and metrics ports of `run` are GET-only and use sidecar.serve.http_server instead, so `run`
never imports aiohttp (docs/architecture.md, "The serve package").

aiohttp bounds the request line and headers itself (8190 bytes a line, 128 headers,
400 beyond) and the body by the application's `client_max_size` (413 beyond). Time:
`keepalive` bounds both a connection's idling between requests and its first request's
head, as aiohttp arms it at connect and after each answer, never on partial bytes (so a
slowloris head is closed then too); aiohttp's own default is 3630 s. The TLS handshake has
TLS_HANDSHAKE_SECONDS, the closing exchange TLS_SHUTDOWN_SECONDS; a body is the application's
to bound.

Connections: at most `fd_limit.connections_per_port()`, TLS handshakes in progress included,
with the run ports' rule at the cap (fd_limit.Standing): a newcomer is let in and a dawdling
connection (a handshake, a head, an answer unread) makes room, else the idlest keep-alive, else
the oldest request in flight. To see a handshake as a connection, and reset one, the site owns
the listening socket and the TCP transport: each connection is a `_Connection` that does the
TLS handshake itself (loop.start_tls) and hands the decrypted stream to aiohttp's own protocol
(`runner.server()`, aiohttp's documented low-level server, a protocol factory), passing every
Protocol call through. Whether a request is in flight comes from a middleware: no private
attribute of aiohttp is read (tests/k8s/test_http_site.py pins that path, tests/reliability/test_limits.py
the webhook's at the cap).

    site = HttpSite(web.Application(client_max_size=2**21), shutdown_grace=5.0, ssl_context=context)
    port = await site.start("0.0.0.0", 0)   # the bound port
    await site.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from sidecar.contract import LOGGER_NAME
from sidecar.fd_limit import (
    NEW_CONNECTION_SECONDS,
    Standing,
    close_or_reset,
    connections_per_port,
    evictee,
    quiet_accept_exhaustion,
    reset,
)

# Room for a burst of API server connections arriving at once.
BACKLOG = 1024
# Idle keep-alive, and the time a request's head may take to arrive. Longer than a busy API
# server's gap between calls (it keeps its connection), short enough that a client trickling
# a head, or holding connections it does not use, holds each for at most this long.
KEEPALIVE_SECONDS = 15.0
# The API server's TLS handshake takes milliseconds; asyncio's default (60 s) would let a client
# that connects and sends nothing hold a connection for a minute.
TLS_HANDSHAKE_SECONDS = 10.0
# For the client's close_notify after ours (asyncio's default is 30 s): closing is then done either way.
TLS_SHUTDOWN_SECONDS = 2.0


def _not_a_client_protocol_error(record: logging.LogRecord) -> bool:
    """aiohttp logs every malformed or oversized request at ERROR, with a traceback quoting
    100 bytes of it. The client got its 400 already; logging it would let any client fill
    (and, with --log-format json, break) the log at the rate it sends garbage."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, HttpProcessingError)


async def _without_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp sends `Server: Python/3.11 aiohttp/3.x`: it tells anyone who reaches the port
    which versions to attack. The run ports send none either (serve.http_wire.Answer).

    Every answer of the application goes through here (its 404s and 405s too); the 400 aiohttp
    sends for a request it can't parse, before any application sees it, does not, and keeps the
    header: aiohttp has no switch for it (aio-libs/aiohttp issue 8870)."""
    response.headers.popall(hdrs.SERVER, None)


class HttpSite:
    """One aiohttp application listening on one address, with a bounded shutdown."""

    def __init__(
        self,
        app: web.Application,
        *,
        shutdown_grace: float,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
        max_connections: int | None = None,
    ) -> None:
        self.app = app
        self.keepalive = keepalive
        app.on_response_prepare.append(_without_server_header)
        app.middlewares.append(self._in_flight)
        self.shutdown_grace = shutdown_grace
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()  # from accept: TLS handshakes in progress included
        self.by_handler: dict[web.RequestHandler, _Connection] = {}  # what a middleware finds it by
        self.serials = itertools.count()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._cap = 0

    async def start(self, bind: str, port: int) -> int:
        """Listen on bind:port (0 picks a free port) and return the bound port; OSError if it can't."""
        # Added once per process however often this runs: the same function is one filter.
        logging.getLogger("aiohttp.server").addFilter(_not_a_client_protocol_error)
        quiet_accept_exhaustion(asyncio.get_running_loop(), logging.getLogger(LOGGER_NAME))
        # No access log: every review logs its own line.
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.shutdown_grace,
            keepalive_timeout=self.keepalive,
        )
        await runner.setup()
        self._runner = runner
        self._cap = connections_per_port() if self.max_connections is None else self.max_connections
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                partial(_Connection, self, runner.server), bind, port, reuse_address=True, backlog=BACKLOG
            )
        except BaseException:
            await self.stop()
            raise
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """In-flight requests get `shutdown_grace` seconds; a connection whose answer is still in our
        buffer is then reset, not closed (which would wait for that reader). Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for connection in list(self.connections):
            if connection.handler is None:
                connection.reset()  # a handshake in progress: nothing to finish
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()  # aiohttp closes idle connections, waits for in-flight ones
        for connection in list(self.connections):
            connection.close_or_reset()
        if listener is not None:
            await listener.wait_closed()
        await asyncio.sleep(0)  # let the transports report connection_lost

    # -- connections --------------------------------------------------------------------------

    def admit(self, connection: _Connection) -> None:
        """A new connection (at accept, before any handshake): at the cap another makes room."""
        if len(self.connections) >= self._cap:
            victim = evictee(self.connections, _Connection.rank)
            if victim is not None:
                victim.reset()
        self.connections.add(connection)

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if connection.handler is not None:
            self.by_handler.pop(connection.handler, None)

    @web.middleware
    async def _in_flight(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection busy while the application answers (the only state aiohttp does not show)."""
        connection = self.by_handler.get(request.protocol)
        if connection is None:
            return await handler(request)
        connection.begin_request()
        try:
            return await handler(request)
        finally:
            connection.end_request()


class _Connection(asyncio.Protocol):
    """One TCP connection: its TLS handshake, then aiohttp's protocol for it, each call passed through."""

    def __init__(self, site: HttpSite, server: web.Server) -> None:
        self.site = site
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.raw: asyncio.Transport | None = None  # the TCP transport: counted, reset, checked for unsent bytes
        self.handler: web.RequestHandler | None = None  # aiohttp's protocol, once the handshake is done
        self.serial = next(site.serials)
        self._since = self._loop.time()  # when the present state began
        self._early: list[bytes] = []  # decrypted before aiohttp had the stream
        self._early_eof = False
        self._busy = False  # the application is answering a request
        self._arriving = False  # bytes came since the last answer: a request on its way
        self._served = False
        self._reset = False
        self._handshake: asyncio.Task[None] | None = None

    # -- asyncio.Protocol: the TCP connection, then (with TLS) the decrypted stream -------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]  # a socket transport; uvloop's is not a subclass
        self.site.admit(self)
        context = self.site.ssl_context
        if context is None:
            self._hand_over(transport)  # type: ignore[arg-type]
            return
        transport.pause_reading()  # type: ignore[attr-defined]  # the handshake's bytes are start_tls's
        self._handshake = self._loop.create_task(self._start_tls(context))

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        assert self.raw is not None
        try:
            tls = await self._loop.start_tls(
                self.raw, self, context, server_side=True, ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS,
                ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS,
            )  # fmt: skip
        except Exception:  # SSLError, a reset, the handshake's time out: asyncio closed it
            return  # a failed handshake is the client's problem alone, and not logged
        finally:
            self._handshake = None
        if tls is not None and not self._reset:
            self._hand_over(tls)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        handler = self.handler = self._server()
        self.site.by_handler[handler] = self
        self._since = self._loop.time()
        handler.connection_made(transport)
        for data in self._early:
            handler.data_received(data)
        self._early.clear()
        if self._early_eof:  # as the transport would have, had aiohttp had the stream then
            handler.eof_received()
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._busy and not self._arriving:
            self._arriving, self._since = True, self._loop.time()
        if self.handler is None:
            self._early.append(data)
        else:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self.handler is None:
            self._early_eof = True
            return True  # aiohttp is told, and the transport closed, once aiohttp has the stream
        self.handler.eof_received()
        return None  # what aiohttp's says: the transport closes

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.site.forget(self)
        if self._handshake is not None:
            self._handshake.cancel()
        handler, self.raw = self.handler, None
        if handler is not None:
            handler.connection_lost(exc)

    # -- the site's view ----------------------------------------------------------------------

    def begin_request(self) -> None:
        self._busy, self._since = True, self._loop.time()

    def end_request(self) -> None:
        self._busy = self._arriving = False
        self._served, self._since = True, self._loop.time()

    def rank(self) -> tuple[Standing, float, int] | None:
        """Where it stands in the order connections make room (fd_limit.evictee); None if already going."""
        raw = self.raw
        if raw is None or self._reset or raw.is_closing():
            return None
        if self._busy:
            return Standing.BUSY, self._since, self.serial
        fresh = not self._arriving and not self._served and self._loop.time() - self._since < NEW_CONNECTION_SECONDS
        if fresh and not raw.get_write_buffer_size():  # a handshake begun less than a second ago: NEW
            return Standing.NEW, self._since, self.serial
        if self.handler is None or self._arriving or not self._served or raw.get_write_buffer_size():
            return Standing.DAWDLING, self._since, self.serial  # a handshake, a head, an answer unread
        return Standing.IDLE, self._since, self.serial

    def reset(self) -> None:
        if self.raw is not None and not self._reset:
            self._reset = True
            reset(self.raw)

    def close_or_reset(self) -> None:
        """At shutdown: reset if our buffer still holds what the client does not read (a close would
        wait for it); what the kernel holds it delivers after we exit."""
        if self.raw is not None and not self._reset:
            self._reset = True
            close_or_reset(self.raw, in_kernel=False)
