"""HttpGetProbe against real servers on loopback: the kubelet's httpGet semantics, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvloop
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from probes import http_get
from probes.http_get import HttpGetProbe
from probes.result import MAX_MESSAGE_CHARS, Outcome, ProbeResult
from probes.spec import KUBE_PROBE_USER_AGENT, HttpGetSpec
from tests.conftest import finishes_without_suspending

TIMEOUT = 0.3  # per attempt: short, so the hanging cases stay fast
SLACK = 0.5  # what a loaded CI machine may add to a bounded attempt

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class TargetApp:
    """An aiohttp app that records what each request looked like."""

    port: int
    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    chain_requests: int = 0


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # don't wait out the slow handlers
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner


def _port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


@pytest.fixture
async def target() -> AsyncIterator[TargetApp]:
    app = web.Application()
    state = TargetApp(port=0)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def headers(request: web.Request) -> web.Response:
        state.headers.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        return web.Response(text="ok")

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        state.chain_requests += 1
        if left == 0:
            return web.Response(text="end of chain")
        return web.Response(status=302, headers={"Location": f"/chain/{left - 1}"})

    async def redirect(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        location = request.query["to"].replace("PORT", str(state.port))
        return web.Response(status=status, headers={"Location": location})

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/loop"})

    async def record_host(request: web.Request) -> web.Response:
        state.hosts.append(request.headers["Host"])
        return web.Response(text="ok")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (1 << 20))

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(b"y" * 65536)
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"z")
            await asyncio.sleep(1)
        return response

    async def sick(request: web.Request) -> web.Response:
        return web.Response(status=503, text="database not ready\x1b[31m\nsecond line")

    app.router.add_get("/status/{code}", status)
    app.router.add_get("/headers", headers)
    app.router.add_get("/chain/{left}", chain)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/dir/redirect", redirect)
    app.router.add_get("/dir/status/{code}", status)
    app.router.add_get("/loop", loop)
    app.router.add_get("/host", record_host)
    app.router.add_get("/dir/host", record_host)
    app.router.add_get("/big", big)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/sick", sick)
    runner = await _serve(app)
    state.port = _port(runner)
    yield state
    await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(respond: Respond, *, read_request: bool = True) -> AsyncIterator[int]:
    """A hand-written HTTP peer: `respond` writes whatever bytes the test needs."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            if read_request:
                await reader.readuntil(b"\r\n\r\n")
            await respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _probe(
    port: int,
    path: str = "/",
    *,
    host: str = "127.0.0.1",
    scheme: str = "http",
    headers: tuple[tuple[str, str], ...] = (),
) -> ProbeResult:
    spec = HttpGetSpec(port=port, path=path, host=host, scheme=scheme, headers=headers)
    probe = HttpGetProbe(spec)
    return await probe.attempt(TIMEOUT)


def _reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


def _expected(code: int) -> Outcome:
    if 200 <= code < 300:
        return Outcome.SUCCESS
    if 300 <= code < 400:
        return Outcome.WARNING
    return Outcome.FAILURE


# --- statuses -------------------------------------------------------------------------------


async def test_every_final_status_from_200_to_599_maps_like_the_kubelet(target: TargetApp) -> None:
    wrong = {}
    for code in range(200, 600):
        result = await _probe(target.port, f"/status/{code}")
        if (result.outcome, result.message) != (_expected(code), f"HTTP {code}"):
            wrong[code] = result
    assert wrong == {}


async def test_informational_status_then_close_is_a_failure_for_every_1xx() -> None:
    async def informational_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        code = (await r.readuntil(b"\r\n\r\n")).split()[1].lstrip(b"/")  # GET /<code>
        w.write(b"HTTP/1.1 " + code + b" Informational\r\n\r\n")
        await w.drain()

    wrong = {}
    async with raw_server(informational_then_close, read_request=False) as port:
        for code in range(100, 200):
            result = await _probe(port, f"/{code}")
            expected = "HTTP 101" if code == 101 else "connection closed before response"
            if (result.outcome, result.message) != (Outcome.FAILURE, expected):
                wrong[code] = result
    assert wrong == {}


async def test_up_to_five_informational_responses_are_skipped_and_six_fail() -> None:
    def continues(count: int) -> Respond:
        async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * count)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

        return respond

    async with raw_server(continues(5)) as port:
        assert (await _probe(port)).message == "HTTP 200"
    async with raw_server(continues(6)) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.FAILURE, "too many 1xx responses")


async def test_failure_message_never_quotes_the_body(target: TargetApp) -> None:
    result = await _probe(target.port, "/sick")  # "database not ready\x1b[31m\nsecond line"
    assert (result.outcome, result.message) == (Outcome.FAILURE, "HTTP 503")


async def test_refused_connection_names_errno_and_address() -> None:
    with socket.socket() as reserved:  # bound, never listening: connects are refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        result = await _probe(port)
    assert (result.outcome, result.message) == (
        Outcome.FAILURE,
        f"connect ECONNREFUSED 127.0.0.1:{port}",
    )


# --- redirects ------------------------------------------------------------------------------


async def test_same_host_redirects_are_followed(target: TargetApp) -> None:
    result = await _probe(target.port, "/chain/3")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_is_followed(target: TargetApp, status: int) -> None:
    result = await _probe(target.port, f"/redirect?status={status}&to=/status/204")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 204")


async def test_nine_redirects_make_ten_requests_and_succeed(target: TargetApp) -> None:
    result = await _probe(target.port, "/chain/9")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")
    assert target.chain_requests == 10


@pytest.mark.parametrize("redirects", [10, 11])
async def test_ten_or_more_redirects_fail_without_an_eleventh_request(
    target: TargetApp, redirects: int
) -> None:
    result = await _probe(target.port, f"/chain/{redirects}")
    assert (result.outcome, result.message) == (Outcome.FAILURE, "stopped after 10 redirects")
    assert target.chain_requests == 10


async def test_redirect_loop_fails(target: TargetApp) -> None:
    result = await _probe(target.port, "/redirect?to=/redirect%3Fto%3D/status/200")
    assert result.outcome is Outcome.SUCCESS  # two hops through the same route do end
    looping = await _probe(target.port, "/loop")
    assert (looping.outcome, looping.message) == (Outcome.FAILURE, "stopped after 10 redirects")


async def test_redirect_to_another_hostname_is_a_warning_not_followed(target: TargetApp) -> None:
    result = await _probe(target.port, "/redirect?to=http://localhost:PORT/status/200")
    assert (result.outcome, result.message) == (
        Outcome.WARNING,
        "HTTP 302: redirect to other host localhost not followed",
    )
    assert result.outcome.ok


async def test_hostnames_compare_case_insensitively_and_ignore_the_port(target: TargetApp) -> None:
    other = web.Application()
    other.router.add_get("/", _ok)
    runner = await _serve(other)
    try:
        to = f"http://LocalHost:{_port(runner)}/"
        result = await _probe(target.port, f"/redirect?to={to}", host="localhost")
    finally:
        await runner.cleanup()
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/redirect", "/status/200"),
        ("/dir/redirect", "../status/200"),
        ("/dir/redirect", "status/200"),
        ("/redirect", "//127.0.0.1:PORT/status/200"),
    ],
)
async def test_relative_locations_resolve_against_the_current_url(
    target: TargetApp, path: str, location: str
) -> None:
    result = await _probe(target.port, f"{path}?to={location}")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")


async def test_redirect_without_location_or_not_a_redirect_code_is_a_warning(
    target: TargetApp,
) -> None:
    no_location = await _probe(target.port, "/status/302")
    not_followed = await _probe(target.port, "/redirect?status=300&to=/status/200")
    assert (no_location.outcome, no_location.message) == (Outcome.WARNING, "HTTP 302")
    assert (not_followed.outcome, not_followed.message) == (Outcome.WARNING, "HTTP 300")


async def test_host_override_survives_relative_redirects_only(target: TargetApp) -> None:
    headers = (("Host", "app.example"),)
    await _probe(target.port, "/redirect?to=/dir/host", headers=headers)
    await _probe(target.port, "/redirect?to=http://127.0.0.1:PORT/host", headers=headers)
    await _probe(target.port, "/host", headers=headers)
    assert target.hosts == ["app.example", f"127.0.0.1:{target.port}", "app.example"]


async def test_redirect_to_an_unsupported_scheme_on_the_same_host_fails(target: TargetApp) -> None:
    result = await _probe(target.port, "/redirect?to=ftp://127.0.0.1/file")
    assert (result.outcome, result.message) == (
        Outcome.FAILURE,
        "unsupported scheme ftp",
    )


# --- request headers ------------------------------------------------------------------------


async def test_default_headers_are_the_kubelets(target: TargetApp) -> None:
    await _probe(target.port, "/headers")
    assert target.headers == [
        [
            ("Host", f"127.0.0.1:{target.port}"),
            ("User-Agent", KUBE_PROBE_USER_AGENT),
            ("Accept", "*/*"),
            ("Connection", "close"),
        ]
    ]
    assert KUBE_PROBE_USER_AGENT == "kube-probe/1.37"


async def test_user_headers_override_host_and_user_agent_case_insensitively(
    target: TargetApp,
) -> None:
    headers = (("host", "app.example"), ("user-agent", "custom/2"), ("ACCEPT", "text/plain"))
    await _probe(target.port, "/headers", headers=headers)
    assert target.headers == [
        [
            ("Host", "app.example"),
            ("User-Agent", "custom/2"),
            ("ACCEPT", "text/plain"),
            ("Connection", "close"),
        ]
    ]


async def test_empty_accept_and_empty_user_agent_are_not_sent(target: TargetApp) -> None:
    await _probe(target.port, "/headers", headers=(("Accept", ""), ("User-Agent", "")))
    assert target.headers == [[("Host", f"127.0.0.1:{target.port}"), ("Connection", "close")]]


async def test_repeated_custom_headers_all_arrive_in_order(target: TargetApp) -> None:
    headers = (("X-Token", "a"), ("X-Other", "b"), ("X-Token", "c"), ("X-Empty", ""))
    await _probe(target.port, "/headers", headers=headers)
    (received,) = target.headers
    assert [h for h in received if h[0].startswith("X-")] == list(headers)


async def test_framing_headers_from_the_user_are_dropped_as_go_does(target: TargetApp) -> None:
    headers = (("Content-Length", "5"), ("Transfer-Encoding", "chunked"), ("X-Kept", "1"))
    result = await _probe(target.port, "/headers", headers=headers)
    assert result.outcome is Outcome.SUCCESS
    (received,) = target.headers
    names = [name for name, _ in received]
    assert names == ["Host", "User-Agent", "X-Kept", "Accept", "Connection"]


async def test_a_header_value_with_a_newline_fails_without_sending(target: TargetApp) -> None:
    result = await _probe(target.port, "/headers", headers=(("X-Bad", "a\r\nInjected: 1"),))
    assert (result.outcome, result.message) == (Outcome.FAILURE, "invalid request header")
    assert target.headers == []


# --- body -----------------------------------------------------------------------------------


async def test_a_one_mebibyte_body_succeeds(target: TargetApp) -> None:
    result = await _probe(target.port, "/big")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")


async def test_an_endless_body_succeeds_after_reading_ten_kib(target: TargetApp) -> None:
    result = await _probe(target.port, "/endless")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")
    assert result.duration < TIMEOUT


async def test_reading_stops_after_ten_kib_of_a_body_that_never_completes() -> None:
    async def promise_a_mebibyte(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 10241)
        await w.drain()
        await asyncio.Event().wait()  # the rest never comes: reading it all would time out

    async with raw_server(promise_a_mebibyte) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10240\r\n\r\n" + b"x" * 10240,
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["content-length", "chunked", "exactly-10KiB", "no-content"],
)
async def test_framed_body_from_a_keep_alive_server_does_not_hang(response: bytes) -> None:
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()
        await asyncio.Event().wait()

    async with raw_server(keep_alive) as port:
        result = await _probe(port)
    assert result.outcome is Outcome.SUCCESS
    assert result.duration < TIMEOUT


async def test_body_until_close_is_read_to_the_close() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 500 Oops\r\n\r\nbody until close")
        await writer.drain()

    async with raw_server(http10) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.FAILURE, "HTTP 500")


async def test_a_slow_body_is_bounded_by_the_attempt_timeout_and_is_an_error(target: TargetApp) -> None:
    # Go's Client.Timeout also covers reading the body, and an error from ReadAtMost is a
    # probe error, not a failure (kubernetes pkg/probe/http/http.go, DoHTTPProbe).
    result = await _probe(target.port, "/slow")
    assert (result.outcome, result.message) == (Outcome.ERROR, "error reading body: timeout after 0.3s")
    assert TIMEOUT <= result.duration < TIMEOUT + SLACK


@pytest.mark.parametrize(
    ("sent", "outcome", "message"),
    [
        (10240, Outcome.SUCCESS, "HTTP 200"),
        (10239, Outcome.ERROR, "error reading body: timeout after 0.3s"),
    ],
    ids=["exactly-10KiB-is-a-success", "one-byte-short-is-an-error"],
)
async def test_reading_stops_at_ten_kib_so_a_stall_after_it_passes(sent: int, outcome: Outcome, message: str) -> None:
    # ReadAtMost(body, 10 KiB) stops at the limit (kubernetes pkg/util/io ReadAtMost,
    # maxRespBodyLength in pkg/probe/http/http.go): it never asks for byte 10,241.
    async def stall_after(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + b"x" * sent)
        await w.drain()
        await asyncio.Event().wait()

    async with raw_server(stall_after) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (outcome, message)
    if outcome is Outcome.SUCCESS:
        assert result.duration < TIMEOUT


async def test_after_a_complete_response_the_target_sees_a_fin_never_a_reset() -> None:
    # As the kubelet's ProbeDialer closes (kubernetes pkg/probe/dialer_others.go, issue 89898).
    ends: list[str] = []

    async def answer_then_watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        try:
            ends.append("fin" if await reader.read(1) == b"" else "data")
        except ConnectionResetError:
            ends.append("rst")

    async with raw_server(answer_then_watch) as port:
        results = [await _probe(port) for _ in range(10)]
        for _ in range(100):
            if len(ends) == 10:
                break
            await asyncio.sleep(0.01)
    assert {r.message for r in results} == {"HTTP 503"}
    assert ends == ["fin"] * 10


async def test_a_redirect_carries_the_previous_url_as_referer() -> None:
    # Go's client adds Referer to a redirected request (net/http client.go, refererForURL);
    # the kubelet's client keeps that default.
    seen: list[bytes] = []

    async def redirect_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        if head.startswith(b"GET /start"):
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /next?x=1\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with raw_server(redirect_once, read_request=False) as port:
        result = await _probe(port, "/start?q=a%20b")
        explicit = await _probe(port, "/start", headers=(("Referer", "https://mine.example/"),))
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")
    first, second, third, fourth = (head.split(b"\r\n") for head in seen)
    assert not any(line.lower().startswith(b"referer:") for line in first), "no Referer on the first request"
    assert f"Referer: http://127.0.0.1:{port}/start?q=a%20b".encode() in second
    assert explicit.outcome is Outcome.SUCCESS
    assert [line for line in fourth if line.lower().startswith(b"referer:")] == [b"Referer: https://mine.example/"]
    assert third[0] == b"GET /start HTTP/1.1"


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
async def tls_target() -> AsyncIterator[tuple[int, list[str | None]]]:
    """An HTTPS app with a self-signed cert; records the SNI each handshake carried."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    names: list[str | None] = []

    def record_sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record_sni
    app = web.Application()
    app.router.add_get("/", _ok)
    runner = await _serve(app, context)
    yield _port(runner), names
    await runner.cleanup()


async def test_https_succeeds_with_a_self_signed_cert_and_no_ca(
    tls_target: tuple[int, list[str | None]],
) -> None:
    port, names = tls_target
    result = await _probe(port, scheme="https")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")
    assert names == [None]  # no SNI for an IP address


async def test_https_sends_sni_for_a_host_name(tls_target: tuple[int, list[str | None]]) -> None:
    port, names = tls_target
    result = await _probe(port, scheme="https", host="localhost")
    assert result.outcome is Outcome.SUCCESS
    assert names == ["localhost"]


async def test_redirect_from_http_to_https_on_the_same_host_is_followed(
    target: TargetApp, tls_target: tuple[int, list[str | None]]
) -> None:
    port, _ = tls_target
    result = await _probe(target.port, f"/redirect?to=https://127.0.0.1:{port}/")
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")


async def test_a_redirect_from_https_to_http_carries_no_referer() -> None:
    # refererForURL returns "" when the hop goes from https to http (net/http client.go).
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with raw_server(record, read_request=False) as plain:

        async def to_plain(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": f"http://127.0.0.1:{plain}/next"})

        app = web.Application()
        app.router.add_get("/", to_plain)
        runner = await _serve(app, context)
        try:
            result = await _probe(_port(runner), scheme="https")
        finally:
            await runner.cleanup()
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "HTTP 200")
    (head,) = heads
    assert head.startswith(b"GET /next ") and b"referer:" not in head.lower()


async def test_https_to_a_plain_http_server_fails_the_handshake(target: TargetApp) -> None:
    result = await _probe(target.port, scheme="https")
    assert result.outcome is Outcome.FAILURE
    assert result.message.startswith("TLS handshake failed")


# --- hostile and broken peers ---------------------------------------------------------------


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\x01 this is not http at all\r\n\r\n")
    await writer.drain()


async def _reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()
    _reset(writer)


async def _close_silently(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return None


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up


async def _close_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()


async def _header_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(1000):
        writer.write(b"X-Flood: " + b"f" * 100 + b"\r\n")
        await writer.drain()
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (_garbage, "invalid HTTP response"),
        (_close_silently, "connection closed before response"),
        (_never_answer, "timeout after 0.3s"),
        (_header_flood, "response headers too large"),
    ],
    ids=["garbage", "closed", "never-answers", "header-flood"],
)
async def test_broken_peers_fail_with_a_short_message_within_the_timeout(
    respond: Respond, message: str
) -> None:
    async with raw_server(respond) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.FAILURE, message)
    assert len(result.message) <= MAX_MESSAGE_CHARS
    assert result.duration < TIMEOUT + SLACK


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (_reset_mid_body, "error reading body: connection reset"),
        (_close_mid_body, "error reading body: connection closed during body"),
    ],
    ids=["reset-mid-body", "truncated-content-length"],
)
async def test_a_body_that_breaks_after_the_headers_is_an_error_not_a_failure(
    respond: Respond, message: str
) -> None:
    # The headers arrived, so client.Do succeeded; the body read failed: DoHTTPProbe returns
    # the error (kubernetes pkg/probe/http/http.go), and the kubelet's worker throws such an
    # attempt away instead of counting it (pkg/kubelet/prober/worker.go, doProbe).
    async with raw_server(respond) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.ERROR, message)
    assert not result.outcome.ok and not result.outcome.conclusive


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


async def test_a_peer_that_never_reads_the_request_times_out() -> None:
    async with raw_server(_hang, read_request=False) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.FAILURE, "timeout after 0.3s")
    assert TIMEOUT <= result.duration < TIMEOUT + SLACK


async def test_cancellation_propagates_out_of_an_attempt() -> None:
    async with raw_server(_never_answer) as port:
        probe = HttpGetProbe(HttpGetSpec(port=port))
        attempt = asyncio.create_task(probe.attempt(5.0))
        await asyncio.sleep(0.05)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt


async def test_no_file_descriptors_leak_across_hundreds_of_failing_attempts(
    target: TargetApp,
) -> None:
    rounds = 30  # eight kinds of failure each, and ten connections per redirect chain
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        refused = reserved.getsockname()[1]
        async with (
            raw_server(_garbage) as garbage,
            raw_server(_reset_mid_body) as reset,
            raw_server(_close_silently) as closed,
            raw_server(_never_answer) as silent,
        ):
            kinds = [
                HttpGetProbe(HttpGetSpec(port=refused)),
                HttpGetProbe(HttpGetSpec(port=garbage)),
                HttpGetProbe(HttpGetSpec(port=reset)),
                HttpGetProbe(HttpGetSpec(port=closed)),
                HttpGetProbe(HttpGetSpec(port=target.port, path="/status/503")),
                HttpGetProbe(HttpGetSpec(port=target.port, path="/chain/20")),
                HttpGetProbe(HttpGetSpec(port=target.port, scheme="https")),
            ]
            await asyncio.gather(*(p.attempt(1.0) for p in kinds))  # warm every code path
            await _settle()
            before = _open_fds()
            failures = 0
            with warnings.catch_warnings(record=True) as caught:
                # A transport left open would be closed by the GC, hiding the leak from the count.
                warnings.simplefilter("always", ResourceWarning)
                for _ in range(rounds):
                    for probe in kinds:
                        failures += not (await probe.attempt(1.0)).outcome.ok
                    timed_out = await HttpGetProbe(HttpGetSpec(port=silent)).attempt(0.005)
                    failures += timed_out.outcome is Outcome.FAILURE
                after = await _settle(until=before)
                gc.collect()
    assert failures == rounds * 8
    assert after == before
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _settle(until: int | None = None) -> int:
    """Let closing transports finish: a close completes on a later turn of the loop."""
    count = _open_fds()
    for _ in range(100):
        await asyncio.sleep(0.02)
        previous, count = count, _open_fds()
        if count == previous if until is None else count <= until:
            break
    return count


async def test_a_refused_connect_is_answered_without_the_event_loop() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        result = finishes_without_suspending(HttpGetProbe(HttpGetSpec(port=port)).attempt(TIMEOUT))
    assert (result.outcome, result.message) == (Outcome.FAILURE, f"connect ECONNREFUSED 127.0.0.1:{port}")


# --- the fast path: simple responses judged without h11 ------------------------------------


@contextlib.contextmanager
def h11_only() -> Iterator[None]:
    """Every response parsed by h11, as before the fast path: the reference it must agree with."""
    fast = http_get.parse_simple_head
    http_get.parse_simple_head = lambda data: None
    try:
        yield
    finally:
        http_get.parse_simple_head = fast


async def test_the_request_bytes_are_the_kubelets_and_the_same_on_every_attempt() -> None:
    # The headers of newProbeRequest (kubernetes pkg/probe/http/request.go) in the order
    # Go's Request.write puts them (net/http request.go): Host first.
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with raw_server(record, read_request=False) as port:
        probe = HttpGetProbe(HttpGetSpec(port=port, path="/ready?x=a b", headers=(("X-Token", "t"),)))
        results = [await probe.attempt(TIMEOUT) for _ in range(3)]
        with h11_only():
            results.append(await probe.attempt(TIMEOUT))
    expected = (
        f"GET /ready?x=a%20b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {KUBE_PROBE_USER_AGENT}\r\n"
        "X-Token: t\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    assert heads == [expected] * 4
    assert {(r.outcome, r.message) for r in results} == {(Outcome.FAILURE, "HTTP 503")}


@pytest.mark.parametrize(
    ("response", "outcome", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", Outcome.SUCCESS, "HTTP 200"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", Outcome.SUCCESS, "HTTP 200"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", Outcome.FAILURE,
         "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", Outcome.FAILURE, "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n", Outcome.SUCCESS, "HTTP 200"),
        (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", Outcome.FAILURE, "invalid HTTP response"),
        (b"HTTP/1.1 503 X\nContent-Length: 0\n\n", Outcome.FAILURE, "HTTP 503"),
        (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", Outcome.FAILURE, "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", Outcome.FAILURE, "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Outcome.FAILURE, "invalid HTTP response"),
        (b"HTTP/1.1 099 Low\r\n\r\n", Outcome.FAILURE, "invalid HTTP response"),
        (b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n", Outcome.FAILURE, "HTTP 600"),
        (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", Outcome.SUCCESS, "HTTP 200"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", Outcome.SUCCESS, "HTTP 204"),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", Outcome.WARNING, "HTTP 304"),
        (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", Outcome.WARNING, "HTTP 302"),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the close", Outcome.SUCCESS, "HTTP 200"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut", Outcome.ERROR,
         "error reading body: connection closed during body"),
    ],
    ids=["length-list", "repeated-length", "conflicting-lengths", "negative-length", "obs-fold",
         "fold-first", "bare-lf", "bad-name", "nul", "gzip", "status-099", "status-600", "http2-line",
         "204-with-length", "304", "302-no-location", "until-close", "cut-short"],
)
async def test_responses_at_the_fast_paths_border_get_h11s_verdict(
    response: bytes, outcome: Outcome, message: str
) -> None:
    # h11 is the parser of record; the fast path takes only what h11 reads the same way
    # and hands it everything else (probes/http_fast_path.py).
    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()

    async with raw_server(answer_and_close) as port:
        fast = await _probe(port)
        with h11_only():
            reference = await _probe(port)
    assert (fast.outcome, fast.message) == (reference.outcome, reference.message) == (outcome, message)


@pytest.mark.parametrize(
    ("first", "rest"),
    [
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\n", b"not ready"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Len", b"gth: 9\r\n\r\nnot ready"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nnot", b" ready"),
    ],
    ids=["head-then-body", "head-split", "body-split"],
)
async def test_a_response_in_two_reads_is_judged_as_in_one(first: bytes, rest: bytes) -> None:
    async def in_two_writes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(0.02)  # long enough that the probe reads the first part alone
        writer.write(rest)
        await writer.drain()
        await asyncio.Event().wait()  # no close: the length must end the body

    async with raw_server(in_two_writes) as port:
        result = await _probe(port)
    assert (result.outcome, result.message) == (Outcome.FAILURE, "HTTP 503")
    assert result.duration < TIMEOUT


@dataclass
class Script:
    response: bytes = b""
    close: bool = True  # after the response; otherwise held until the probe hangs up


class ScriptedPeer:
    """A loopback peer on a thread and loop of its own, answering every request with `script`,
    so that each hypothesis example can run its probes on a fresh loop of either kind."""

    def __init__(self) -> None:
        self.script = Script()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScriptedPeer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._answer, "127.0.0.1", 0)

        server = self._loop.run_until_complete(start())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.script
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(script.response)
            await writer.drain()
            if not script.close:
                await reader.read()  # until the probe hangs up
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def scripted_peer() -> Iterator[ScriptedPeer]:
    with ScriptedPeer() as peer:
        yield peer


def _response_parts() -> st.SearchStrategy[bytes]:
    statuses = st.sampled_from([200, 204, 301, 302, 304, 404, 503, 600, 101, 100, 99])
    lines = st.lists(
        st.sampled_from(
            [b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: 20000", b"content-length: 5, 5",
             b"Content-Length: x", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Location: /next",
             b"Connection: close", b"X-A: b", b" folded", b"Bad Name: 1", b"X: \x00", b"Server: \xe9"]
        ),
        max_size=4,
    )
    line_end = st.sampled_from([b"\r\n"] * 12 + [b"\n"])
    body = st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"b" * 10240, b"b" * 10241, b"\x00\xff"])
    version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x"])
    return st.tuples(version, statuses, lines, line_end, body, st.integers(0, 20)).map(
        lambda p: p[3].join([b"%s %03d Reason" % (p[0], p[1]), *p[2], b""])
        + (p[3] if p[5] else b"")  # now and then an unfinished head
        + p[4]
    )


# A held response that is not complete waits out its timeout, in both paths; a closed one ends at once.
HELD_TIMEOUT = 0.2
CLOSED_TIMEOUT = 2.0


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
@settings(max_examples=150, deadline=None)
# Held in about one example of 15: a held response that is not complete waits out its timeout twice.
# (7, not 0: hypothesis favours the ends of a range.)
@given(response=_response_parts(), held=st.integers(0, 14).map(lambda pick: pick == 7))
def test_the_fast_path_agrees_with_h11_on_generated_responses(
    scripted_peer: ScriptedPeer, run: Callable[[Coroutine[Any, Any, list[ProbeResult]]], list[ProbeResult]],
    response: bytes, held: bool,
) -> None:
    scripted_peer.script = Script(response, close=not held)
    timeout = HELD_TIMEOUT if held else CLOSED_TIMEOUT

    async def both() -> list[ProbeResult]:
        probe = HttpGetProbe(HttpGetSpec(port=scripted_peer.port))
        fast = await probe.attempt(timeout)
        with h11_only():
            reference = await probe.attempt(timeout)
        return [fast, reference]

    fast, reference = run(both())
    assert (fast.outcome, fast.message) == (reference.outcome, reference.message)
