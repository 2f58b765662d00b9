"""Every HTTP port the sidecar opens (health, metrics, webhook): one aiohttp lifecycle, one body limit.

aiohttp bounds the request line and headers itself (8190 bytes a line, a bounded count,
400 beyond). A body is ours to bound: `client_max_size` only applies when a handler reads
the body, and the GET-only ports never do, so without `refuse_bodies_over` any size was
accepted (and drained).

    site = HttpSite(get_only_app(1024), shutdown_grace=1.0)
    port = await site.start("0.0.0.0", 0)   # the bound port
    await site.stop()
"""

from __future__ import annotations

import ssl

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

# Room for a burst of kubelet, load-balancer and mesh connections arriving at once.
BACKLOG = 1024


def refuse_bodies_over(limit: int) -> Middleware:
    """413 for a body over `limit` bytes, or of unknown length (chunked), before any handler runs."""

    @web.middleware
    async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            size = request.content_length
            if size is None or size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size or limit + 1)
        return await handler(request)

    return refuse


def get_only_app(max_request_bytes: int) -> web.Application:
    """An application for ports that serve GETs only: no body above `max_request_bytes` is taken."""
    return web.Application(
        client_max_size=max_request_bytes, middlewares=[refuse_bodies_over(max_request_bytes)]
    )


class HttpSite:
    """One aiohttp application listening on one address, with a bounded shutdown."""

    def __init__(
        self, app: web.Application, *, shutdown_grace: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.shutdown_grace = shutdown_grace
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None

    async def start(self, bind: str, port: int) -> int:
        """Listen on bind:port (0 picks a free port) and return the bound port; OSError if it can't."""
        # No access log: the health port is hit every few milliseconds, and every review logs its own line.
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_grace
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
