"""The webhook's HTTPS port: one aiohttp lifecycle (start, bound port, bounded shutdown).

Only `webhook` serves with aiohttp: it takes POSTed AdmissionReviews over TLS. The health
and metrics ports of `run` are GET-only and use sidecar.serve.http_server instead, so `run`
never imports aiohttp (docs/architecture.md, "The serve package").

aiohttp bounds the request line and headers itself (8190 bytes a line, 128 headers,
400 beyond) and the body by the application's `client_max_size` (413 beyond). Time:
`keepalive` bounds both a connection's idling between requests and its first request's
head, as aiohttp arms it at connect and after each answer, never on partial bytes (so a
slowloris head is closed then too); aiohttp's own default is 3630 s. The TLS handshake has
asyncio's 60 s (ssl_handshake_timeout); a body is the application's to bound.

    site = HttpSite(web.Application(client_max_size=2**21), shutdown_grace=5.0, ssl_context=context)
    port = await site.start("0.0.0.0", 0)   # the bound port
    await site.stop()
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from sidecar.contract import LOGGER_NAME
from sidecar.fd_limit import quiet_accept_exhaustion

# Room for a burst of API server connections arriving at once.
BACKLOG = 1024
# Idle keep-alive, and the time a request's head may take to arrive. Longer than a busy API
# server's gap between calls (it keeps its connection), short enough that a client trickling
# a head, or holding connections it does not use, holds each for at most this long.
KEEPALIVE_SECONDS = 15.0


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
    ) -> None:
        self.app = app
        self.keepalive = keepalive
        app.on_response_prepare.append(_without_server_header)
        self.shutdown_grace = shutdown_grace
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None

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
        site = web.TCPSite(
            runner, bind, port, ssl_context=self.ssl_context, reuse_address=True, backlog=BACKLOG
        )
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        return int(runner.addresses[0][1])

    async def stop(self) -> None:
        """In-flight requests get `shutdown_grace` seconds. Idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
