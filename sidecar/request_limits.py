"""What a client may send the health and metrics ports: a GET without a body.

aiohttp bounds the request line and headers itself (8190 bytes a line, a bounded count,
400 beyond). A body is ours to bound: `client_max_size` only applies when a handler reads
the body, and no handler here does, so without this any size was accepted (and drained).

    app = web.Application(middlewares=[refuse_bodies_over(1024)])
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


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
