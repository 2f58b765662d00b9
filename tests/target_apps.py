"""Controllable probe targets for tests: real servers on loopback."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class FlipTarget:
    """An aiohttp app whose /health answers `status` (flip it at will), counting requests.

        target = await FlipTarget.start()
        target.status = 200
        ...
        await target.stop()
    """

    status: int = 503
    delay: float = 0.0
    request_times: list[float] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @classmethod
    async def start(cls, status: int = 503, delay: float = 0.0) -> FlipTarget:
        target = cls(status=status, delay=delay)
        app = web.Application()
        app.router.add_get("/health", target._handle)
        target._runner = web.AppRunner(app, access_log=None)
        await target._runner.setup()
        site = web.TCPSite(target._runner, "127.0.0.1", 0)
        await site.start()
        target.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return target

    async def _handle(self, request: web.Request) -> web.Response:
        self.request_times.append(time.monotonic())
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="x")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def requests_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.request_times if start <= t < end)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
