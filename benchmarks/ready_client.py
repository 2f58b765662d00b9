"""Clients of the sidecar's /ready: a timed long-poll and a status poller.

The long-poll is a raw HTTP/1.1 request on its own connection, read by a task that
stamps the moment the status line arrives: no client library sits between the
sidecar's answer and the timestamp.

    poll = await LongPoll.open(port, "/ready?wait=10s")
    t0 = time.perf_counter(); flip_target()
    status, arrived = await poll.result(timeout=5)
    latency = arrived - t0
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

LOOPBACK = "127.0.0.1"


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode()


class LongPoll:
    def __init__(self, writer: asyncio.StreamWriter, task: asyncio.Task[tuple[int, float]]) -> None:
        self._writer = writer
        self._task = task

    @classmethod
    async def open(cls, port: int, path: str) -> LongPoll:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(_request(path))
        await writer.drain()
        return cls(writer, asyncio.create_task(_status_line(reader)))

    @property
    def answered(self) -> bool:
        return self._task.done()

    async def result(self, timeout: float) -> tuple[int, float]:
        """(HTTP status, perf_counter() when its status line arrived)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._task
        finally:
            self.close()

    def close(self) -> None:
        self._task.cancel()
        self._writer.close()


async def _status_line(reader: asyncio.StreamReader) -> tuple[int, float]:
    line = await reader.readline()
    arrived = time.perf_counter()
    if not line:
        raise ConnectionError("sidecar closed the long-poll without an answer")
    return int(line.split()[1]), arrived


async def wait_for_status(
    session: aiohttp.ClientSession, url: str, status: int, *, interval: float, timeout: float
) -> float:
    """Poll `url` on a kept-alive connection until it answers `status`; returns perf_counter() then."""
    async with asyncio.timeout(timeout):
        while True:
            async with session.get(url) as response:
                await response.read()
                if response.status == status:
                    return time.perf_counter()
            await asyncio.sleep(interval)


def new_session() -> aiohttp.ClientSession:
    # One kept-alive connection per concurrent poller; no cookies, no proxies from the environment.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


async def close_quietly(session: aiohttp.ClientSession) -> None:
    with contextlib.suppress(Exception):
        await session.close()
