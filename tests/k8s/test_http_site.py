"""The webhook's aiohttp site (sidecar/http_site.py) over real sockets: what it knows of each
connection without reading aiohttp's private state, and the order connections make room in.

The site hands aiohttp the stream (`runner.server()`, a protocol per connection) and learns that a
request is in flight from a middleware that finds the connection by `request.protocol`. If an
aiohttp upgrade broke either (another protocol object behind the request, a middleware not run),
a review in flight would stop counting as one: `test_a_request_in_flight_is_busy...` fails loudly.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trustme
from aiohttp import web

from sidecar.fd_limit import NEW_CONNECTION_SECONDS, Standing
from sidecar.http_site import HttpSite


@dataclass
class Site:
    site: HttpSite
    port: int
    release: asyncio.Event
    client_context: ssl.SSLContext | None

    def standings(self) -> list[Standing]:
        ranks = [rank for rank in (c.rank() for c in self.site.connections) if rank is not None]
        return sorted(standing for standing, _, _ in ranks)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            "127.0.0.1",
            self.port,
            ssl=self.client_context,
            server_hostname="127.0.0.1" if self.client_context else None,
        )


async def _serve(max_connections: int, tls: bool) -> Site:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def now(request: web.Request) -> web.Response:
        return web.Response(text="now")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/now", now)
    server_context = client_context = None
    if tls:
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    site = HttpSite(app, shutdown_grace=0.5, ssl_context=server_context, max_connections=max_connections)
    port = await site.start("127.0.0.1", 0)
    return Site(site, port, release, client_context)


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    site = await _serve(3, request.param)
    yield site
    site.release.set()
    await site.site.stop()


async def _ask(writer: asyncio.StreamWriter, path: str) -> None:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().partition(b"content-length:")[2].partition(b"\r\n")[0])
    return head.partition(b"\r\n")[0] + b" " + await asyncio.wait_for(reader.readexactly(length), 5)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server ends the connection (FIN or reset) within 5 s, sending nothing first."""
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


async def _until(condition: object, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_request_in_flight_is_busy_an_answered_one_idle_and_a_silent_one_new(served: Site) -> None:
    busy = await served.connect()
    await _ask(busy[1], "/slow")
    idle = await served.connect()
    await _ask(idle[1], "/now")
    assert await _answer(idle[0]) == b"HTTP/1.1 200 OK now"
    silent = await served.connect()
    await _until(lambda: served.standings() == [Standing.IDLE, Standing.BUSY, Standing.NEW])
    await asyncio.sleep(NEW_CONNECTION_SECONDS)
    assert served.standings() == [Standing.DAWDLING, Standing.IDLE, Standing.BUSY]
    served.release.set()
    assert await _answer(busy[0]) == b"HTTP/1.1 200 OK late"
    for _, writer in (busy, idle, silent):
        writer.close()


async def test_at_the_cap_a_newcomer_gets_in_and_the_dawdler_then_the_idlest_make_room(served: Site) -> None:
    busy = await served.connect()
    await _ask(busy[1], "/slow")
    idle = await served.connect()
    await _ask(idle[1], "/now")
    await _answer(idle[0])
    silent = await served.connect()
    await asyncio.sleep(NEW_CONNECTION_SECONDS)  # silent: dawdling now
    first = await served.connect()  # at the cap (3): the dawdler goes
    await _ask(first[1], "/now")
    assert await _answer(first[0]) == b"HTTP/1.1 200 OK now"
    assert await _closed(silent[0])
    second = await served.connect()  # then the idlest keep-alive: `idle`, answered before `first`
    await _ask(second[1], "/now")
    assert await _answer(second[0]) == b"HTTP/1.1 200 OK now"
    assert await _closed(idle[0])
    served.release.set()
    assert await _answer(busy[0]) == b"HTTP/1.1 200 OK late", "the request in flight is left alone"
    for _, writer in (busy, idle, silent, first, second):
        writer.close()
