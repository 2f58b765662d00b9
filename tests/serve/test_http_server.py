"""The GET-only server of the health and metrics ports (sidecar/serve/http_server.py), over real sockets.

Routes here are the test's own, so each behaviour is seen on its own: keep-alive and pipelining
across a held request, HEAD, refusals and limits, hostile clients (garbage, resets, half-closed,
never reading, never finishing a head), and a bounded shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.fd_limit import NEW_CONNECTION_SECONDS
from sidecar.serve.http_server import GetOnlyServer, Request, Timeouts
from sidecar.serve.http_wire import MAX_HEAD, Answer, json_answer

SHORT = Timeouts(idle=0.4, request=0.4, unread=0.4, linger=0.4)
BIG = b"x" * (1 << 20)  # an answer no socket buffer holds at once


@dataclass
class App:
    """The routes under test and what they saw."""

    server: GetOnlyServer = field(init=False)
    forever: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)

    def routes(self) -> dict[str, object]:
        return {
            "/now": self.now,
            "/hold": self.hold,
            "/slow": self.slow,
            "/big": lambda request: Answer(200, BIG, "application/octet-stream"),
            "/boom": self.boom,
            "/item/{name}": lambda request: json_answer({"name": request.param}),
        }

    def now(self, request: Request) -> Answer:
        self.seen.append(request.query_value("q") or "")
        return json_answer({"now": True})

    def hold(self, request: Request) -> None:
        request.hold("k", 30.0, lambda: json_answer("timed out", 503))

    def slow(self, request: Request) -> None:
        async def never() -> Answer:
            await self.forever.wait()
            return json_answer("late")

        request.respond_later(never())

    def boom(self, request: Request) -> Answer:
        raise RuntimeError("a handler bug")


@pytest.fixture
async def app() -> AsyncIterator[tuple[App, int]]:
    test_app = App()
    test_app.server = GetOnlyServer(test_app.routes(), max_body=1024, shutdown_grace=0.5, timeouts=SHORT)  # type: ignore[arg-type]
    port = await test_app.server.start("127.0.0.1", 0)
    yield test_app, port
    await test_app.server.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_reply(reader: asyncio.StreamReader, *, head_only: bool = False) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = 0 if head_only else int(headers["content-length"])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return Reply(int(status_line.split()[1]), headers, body)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    return "\r\n".join((f"{method} {path} HTTP/1.1", "Host: t", *headers, "", "")).encode()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server ends the connection (FIN or reset) within `within` seconds, ignoring data."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def until(condition: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- keep-alive, pipelining, HEAD -------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order_behind_a_held_one(app: tuple[App, int]) -> None:
    test_app, port = app
    reader, writer = await connect(port)
    writer.write(get("/hold") + get("/now?q=1") + get("/now?q=2", method="HEAD"))
    await until(lambda: len(test_app.server.held) == 1)
    await asyncio.sleep(0.1)
    assert test_app.seen == [], "a pipelined request waits for the one held before it"
    test_app.server.held.release("k", lambda: json_answer("released"))
    first, second, third = (await read_reply(reader), await read_reply(reader),
                            await read_reply(reader, head_only=True))
    assert (first.status, first.body) == (200, b'"released"')
    assert (second.status, second.body) == (200, b'{"now": true}')
    assert third.status == 200 and third.headers["content-length"] == str(len(second.body))
    assert test_app.seen == ["1", "2"]
    writer.close()


async def test_head_answers_the_get_headers_without_the_body(app: tuple[App, int]) -> None:
    _, port = app
    reader, writer = await connect(port)
    writer.write(get("/now") + get("/now", method="HEAD") + get("/now"))
    full, head, again = await read_reply(reader), await read_reply(reader, head_only=True), await read_reply(reader)
    assert head.headers == full.headers and head.body == b"" and again.body == full.body
    assert "server" not in full.headers, "no Server header telling versions"
    writer.close()


async def test_the_answer_is_the_same_whichever_reader_took_the_request(app: tuple[App, int]) -> None:
    """A Content-Length makes a request h11's to read; the answer must not tell the difference."""
    _, port = app
    reader, writer = await connect(port)
    for request in (get("/item/a%2Db"), get("/item/a%2Db", "Content-Length: 0"), get("/item/a%2Db", "X: \x01")):
        writer.write(request)
        reply = await read_reply(reader)
        assert (reply.status, reply.body) == (200, b'{"name": "a-b"}'), request
        assert set(reply.headers) == {"content-type", "content-length", "date"}
    writer.close()


async def test_connection_close_http_1_0_and_a_client_that_half_closes_are_answered_then_closed(
    app: tuple[App, int]
) -> None:
    _, port = app
    for request in (get("/now", "Connection: close"), b"GET /now HTTP/1.0\r\n\r\n"):
        reader, writer = await connect(port)
        writer.write(request)
        reply = await read_reply(reader)
        assert reply.status == 200 and reply.headers["connection"] == "close"
        assert await closed_by_server(reader, 1.0)
        writer.close()
    # Half-closed with the request answered at once: answered, then closed.
    reader, writer = await connect(port)
    writer.write(get("/now") + get("/now", method="HEAD"))
    writer.write_eof()
    assert [(await read_reply(reader, head_only=head)).status for head in (False, True)] == [200, 200]
    assert await closed_by_server(reader, 1.0)
    writer.close()


async def test_a_client_that_stops_sending_while_its_request_is_held_has_gone(app: tuple[App, int]) -> None:
    """Kept open, a FIN'd long-poll would hold our socket for its whole wait while the client
    holds nothing: closed at once (aiohttp and Go's net/http do the same)."""
    test_app, port = app
    reader, writer = await connect(port)
    writer.write(get("/hold"))
    await until(lambda: len(test_app.server.held) == 1)
    writer.write_eof()
    assert await closed_by_server(reader, 1.0)
    await until(lambda: not test_app.server.connections and not len(test_app.server.held))
    writer.close()


# -- refusals and limits ----------------------------------------------------------------------


async def test_unknown_paths_other_methods_and_handler_bugs(
    app: tuple[App, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = app
    reader, writer = await connect(port)
    writer.write(get("/nope") + get("/now", "Content-Length: 2", method="POST") + b"{}" + get("/item/")
                 + get("/nope", method="DELETE") + get("http://elsewhere/now"))
    replies = [await read_reply(reader) for _ in range(5)]
    assert [r.status for r in replies] == [404, 405, 404, 404, 200]
    assert replies[1].headers["allow"] == "GET, HEAD"
    writer.write(get("/boom"))
    assert (await read_reply(reader)).status == 500
    assert any("a handler bug" in str(r.exc_info) for r in caplog.records), "our own bug is logged"
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get("/now", "Content-Length: 1025") + b"x" * 1025, 413),
        (get("/now", "Transfer-Encoding: chunked") + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n", 413),
        (get("/now", "Transfer-Encoding: gzip"), 413),
        (get("/" + "a" * 8200), 414),
        (get("/now", "X-Big: " + "h" * 8200), 431),
        (get("/now", *(f"X-{i}: v" for i in range(200))), 431),
        (get("/now", "X-Big: " + "h" * MAX_HEAD), 431),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 400),  # a TLS ClientHello
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET /now HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /now HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"\x00" * 100 + b"\r\n\r\n", 400),
    ],
    ids=["body-over-limit", "chunked", "other-coding", "long-line", "long-header", "many-headers", "huge-head",
         "tls", "http2", "no-host", "two-hosts", "nul"],
)
async def test_refusals_are_one_line_then_the_connection_closes_and_nothing_is_logged(
    app: tuple[App, int], caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    _, port = app
    caplog.set_level(logging.DEBUG)
    reader, writer = await connect(port)
    writer.write(request_bytes)
    reply = await read_reply(reader)
    assert reply.status == status and reply.headers["connection"] == "close"
    assert reply.headers["content-type"] == "application/json" and b"\n" not in reply.body
    assert set(json.loads(reply.body)) == {"error"}, "JSON, as every answer"
    writer.write(b"more bytes the server drops")  # it lingers, reading, until we close
    assert await closed_by_server(reader, 2.0)
    writer.close()
    assert caplog.records == []


async def test_a_small_body_is_read_and_the_connection_goes_on(app: tuple[App, int]) -> None:
    _, port = app
    reader, writer = await connect(port)
    writer.write(get("/now", "Content-Length: 1024", "Expect: 100-continue"))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"b" * 1024 + get("/now"))
    assert [(await read_reply(reader)).status for _ in range(2)] == [200, 200]
    writer.close()


# -- hostile clients --------------------------------------------------------------------------


async def test_idle_and_unfinished_connections_are_closed_but_held_ones_are_not(app: tuple[App, int]) -> None:
    test_app, port = app
    idle = await connect(port)
    idle[1].write(get("/now"))
    await read_reply(idle[0])
    slowloris = await connect(port)
    slowloris[1].write(b"GET /now HTTP/1.1\r\nHost: t\r\nX-A: ")
    slow_body = await connect(port)
    slow_body[1].write(get("/now", "Content-Length: 10") + b"12345")
    held = await connect(port)
    held[1].write(get("/hold"))
    started = time.monotonic()
    for reader, _ in (idle, slowloris, slow_body):
        assert await closed_by_server(reader, 2.0)
    assert time.monotonic() - started < 1.5  # 0.4 s and a sweep (0.1 s)
    assert not await closed_by_server(held[0], 0.5), "a long-poll is bounded by its own wait"
    test_app.server.held.release("k", lambda: json_answer("released"))
    assert (await read_reply(held[0])).status == 200
    for _, writer in (idle, slowloris, slow_body, held):
        writer.close()


async def test_a_partial_request_line_is_closed_by_the_request_timeout(app: tuple[App, int]) -> None:
    """Slowloris at its slowest: three bytes of a request line, then nothing."""
    _, port = app
    reader, writer = await connect(port)
    writer.write(b"GET")
    started = time.monotonic()
    assert await closed_by_server(reader, 3.0)
    assert time.monotonic() - started < 1.5  # SHORT.request (0.4 s) and a sweep, with room for a busy machine
    writer.close()


async def test_at_the_connection_cap_the_idlest_connection_makes_room_for_a_new_one() -> None:
    """A flood of idle connections can't lock out the kubelet: its new connection is answered."""
    test_app = App()
    server = GetOnlyServer(test_app.routes(), max_body=1024, shutdown_grace=0.5, max_connections=4)  # type: ignore[arg-type]
    port = await server.start("127.0.0.1", 0)
    try:
        held = await connect(port)
        held[1].write(get("/hold"))  # a request in flight is never the one evicted
        await asyncio.sleep(0.05)
        idle = [await connect(port) for _ in range(3)]
        await asyncio.sleep(NEW_CONNECTION_SECONDS + 0.6)  # silent past their first second: dawdling, not new
        assert len(server.connections) == 4
        newcomers = []
        for _ in range(5):  # each newcomer evicts an idle one (or an earlier newcomer), and is answered
            newcomers.append(await connect(port))
            newcomers[-1][1].write(get("/now"))
            assert (await read_reply(newcomers[-1][0])).status == 200
        assert len(server.connections) <= 4
        for reader, _ in idle:  # the first come go first
            assert await closed_by_server(reader, 2.0)
        assert not held[0].at_eof()
        server.held.release("k", lambda: json_answer("released"))
        assert (await read_reply(held[0])).status == 200
    finally:
        await server.stop()


async def test_at_the_cap_connections_make_room_dawdling_then_idle_then_held_then_busy() -> None:
    """The order of fd_limit.Standing: a slowloris head, then the idlest keep-alive, then the oldest
    long-poll (answered as its wait's end would, Connection: close), then a request being answered
    (reset). A connection that has said nothing yet is spared for NEW_CONNECTION_SECONDS."""
    test_app = App()
    server = GetOnlyServer(test_app.routes(), max_body=1024, shutdown_grace=0.5, max_connections=5)  # type: ignore[arg-type]
    port = await server.start("127.0.0.1", 0)
    try:
        busy = await connect(port)
        busy[1].write(get("/slow"))
        held = await connect(port)
        held[1].write(get("/hold"))
        idle = await connect(port)
        idle[1].write(get("/now"))
        await read_reply(idle[0])
        dawdler = await connect(port)
        dawdler[1].write(b"GET /now HTTP/1.1\r\nHost: t\r\nX-A: ")
        silent = await connect(port)  # new: spared while the others go
        await until(lambda: len(server.connections) == 5)
        server.make_room()
        assert await closed_by_server(dawdler[0], 2.0)
        server.make_room()
        assert await closed_by_server(idle[0], 2.0)
        server.make_room()
        early = await read_reply(held[0])
        assert (early.status, early.headers.get("connection"), early.body) == (503, "close", b'"timed out"')
        server.make_room()
        assert await closed_by_server(busy[0], 2.0)
        assert not silent[0].at_eof() and len(server.connections) == 1
        for _, writer in (busy, held, idle, dawdler, silent):
            writer.close()
    finally:
        await server.stop()


async def test_a_client_that_never_reads_is_cut_off_and_others_are_served_meanwhile(app: tuple[App, int]) -> None:
    test_app, port = app
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.connect(("127.0.0.1", port))
    sock.sendall(get("/big") * 20)  # 20 MiB of answers asked for, none read
    reader, writer = await connect(port)
    writer.write(get("/now"))
    assert (await read_reply(reader)).status == 200
    writer.close()
    await asyncio.sleep(1.0)  # the unread timeout (0.4 s) and a sweep
    received = 0
    sock.settimeout(2.0)
    with pytest.raises(ConnectionResetError):
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
    assert received < len(BIG), "aborted: what it never read was dropped"
    sock.close()
    await until(lambda: not test_app.server.connections)


async def test_resets_and_garbage_leave_no_connection_held_or_request_behind(app: tuple[App, int]) -> None:
    test_app, port = app
    for payload in (get("/hold"), get("/slow"), b"GET /now HTTP/1.1\r\nHo", get("/now", "Content-Length: 9") + b"x",
                    bytes(range(256)) * 4):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(payload)
        await asyncio.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # an RST
    await until(lambda: not test_app.server.connections and not len(test_app.server.held))
    reader, writer = await connect(port)
    writer.write(get("/now"))
    assert (await read_reply(reader)).status == 200, "still serving"
    writer.close()


async def test_many_connections_come_and_go_without_a_trace(app: tuple[App, int]) -> None:
    test_app, port = app
    tasks_before = len(asyncio.all_tasks())

    async def one() -> int:
        reader, writer = await connect(port)
        writer.write(get("/now", "Connection: close"))
        reply = await read_reply(reader)
        writer.close()
        await writer.wait_closed()
        return reply.status

    assert await asyncio.gather(*(one() for _ in range(200))) == [200] * 200
    await until(lambda: not test_app.server.connections)
    assert len(asyncio.all_tasks()) == tasks_before, "synchronous answers start no task"


# -- shutdown ---------------------------------------------------------------------------------


async def test_stop_answers_held_requests_waits_for_in_flight_ones_only_the_grace_and_closes_all() -> None:
    test_app = App()
    server = test_app.server = GetOnlyServer(test_app.routes(), max_body=1024, shutdown_grace=0.5)  # type: ignore[arg-type]
    port = await server.start("127.0.0.1", 0)
    held, slow, idle = await connect(port), await connect(port), await connect(port)
    held[1].write(get("/hold"))
    slow[1].write(get("/slow"))
    idle[1].write(get("/now"))
    await read_reply(idle[0])
    await until(lambda: len(server.held) == 1)
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 1.0, "in-flight requests get the grace (0.5 s), no more"
    reply = await read_reply(held[0])
    assert (reply.status, reply.body, reply.headers["connection"]) == (503, b'"timed out"', "close")
    for reader, _ in (held, slow, idle):
        assert await closed_by_server(reader, 1.0)
    assert not server.connections and not len(server.held)
    with pytest.raises(OSError):
        await connect(port)
    await server.stop()  # idempotent


# -- what `run` imports -------------------------------------------------------------------------

_IMPORTS = ("import json, sys\nimport {modules}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aiohttp'))))\n")


def _aiohttp_imported_by(modules: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _IMPORTS.format(modules=modules)], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    found: list[str] = json.loads(done.stdout)
    return found


def test_the_health_and_metrics_ports_import_no_aiohttp(sidecar_env: dict[str, str]) -> None:
    """aiohttp.web was ~14 MiB of `run`'s memory (docs/architecture.md, "The serve package")."""
    assert _aiohttp_imported_by("sidecar.serve.health_http, sidecar.serve.metrics", sidecar_env) == []


def test_run_imports_no_aiohttp(sidecar_env: dict[str, str]) -> None:
    assert _aiohttp_imported_by("sidecar.cli.run, sidecar.app, sidecar.serve.health_grpc", sidecar_env) == []


# -- fuzz: whatever arrives, in whatever pieces ---------------------------------------------------

_FRAGMENTS = [
    get("/now"), get("/now", method="HEAD"), get("/item/x"), get("/hold"), get("/now", "Connection: close"),
    get("/now", "Content-Length: 3") + b"abc", b"GET /now HTTP/1.0\r\n\r\n", b"\r\n", b"GET /", b"Host: x\r\n",
    b"\x00\xff", b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"POST / HTTP/1.1\r\n",
    b" HTTP/1.1\r\n", b"\n\n", b"Content-Length: 99999\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=40)), max_size=8), st.data())
async def test_any_bytes_in_any_pieces_get_well_formed_answers_and_no_log_line(
    app: tuple[App, int], caplog: pytest.LogCaptureFixture, fragments: list[bytes], data: st.DataObject
) -> None:
    test_app, port = app
    caplog.set_level(logging.DEBUG)
    payload = b"".join(fragments)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(payload)), max_size=6)))
    reader, writer = await connect(port)
    for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
        writer.write(payload[start:end])
        await asyncio.sleep(0)
    with contextlib.suppress(OSError):  # the server may have closed already (Connection: close, a refusal)
        writer.write_eof()

    async def release_held() -> None:  # a held /hold is answered whenever it is held
        while True:
            test_app.server.held.release("k", lambda: json_answer("released"))
            await asyncio.sleep(0.01)

    releaser = asyncio.create_task(release_held())
    received = b""
    try:
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(3):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        releaser.cancel()
    writer.close()
    statuses = [int(line.split()[1]) for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert received == b"" or received.startswith(b"HTTP/1.1 "), received[:80]
    assert all(status in (100, 200, 400, 404, 405, 413, 414, 431, 503, 505) for status in statuses), statuses
    await until(lambda: not test_app.server.connections, timeout=3.0)
    assert not len(test_app.server.held)
    # The server's own log, and asyncio's errors (an exception in a protocol callback); this test's
    # client may warn of writes after the server closed.
    assert [r for r in caplog.records if r.name != "asyncio" or r.levelno >= logging.ERROR] == []
