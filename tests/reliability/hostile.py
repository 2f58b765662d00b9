"""Hostile probe targets, served by one fleet process that every reliability test shares.

The fleet is its own process so that what it costs (writing 100 MB bodies, keeping
slowloris connections) never competes with the test's own event loop, and so that a
sidecar's file descriptors and children are the sidecar's alone.

    fleet = HostileFleet.start()              # blocks until every listener is up
    flags = [case.flag(fleet.ports, ";timeout=500ms") for case in ALL_CASES]
    fleet.set_status("healthy", 200)          # flip targets: /flip/<name>
    fleet.stop()

Run `python -m tests.reliability.hostile` to serve them by hand: it prints the ports
as one JSON line and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import select
import shlex
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2

from tests.conftest import REPO

# Bytes every hostile peer sends where a careless sidecar might echo them; no endpoint,
# log line or metric of the sidecar may ever contain them.
BODY_MARKER = "HOSTILE-BODY-9c41"
# Exec output after the first line: never shown (only a sanitised first line is).
OUTPUT_MARKER = "HOSTILE-EXEC-OUTPUT-5b7e"
EXEC_FIRST_LINE = "hostile first line"
# Where /away on the flip port redirects: never resolved, since another host is not followed.
REDIRECT_HOST = "elsewhere.invalid"

HUNDRED_MB = 100 * 1024 * 1024
_CHUNK = (BODY_MARKER * 4096).encode()[: 64 * 1024]
# The ServerHello that never comes: a handshake record header announcing more than is sent.
_PARTIAL_SERVER_HELLO = b"\x16\x03\x03\x00\x64\x02\x00\x00\x60\x03\x03"
_LINGER_RESET = struct.pack("ii", 1, 0)
_TCP_ESTABLISHED = 1
# How long a held connection outlives a peer that vanished without us reading.
_REAP_EVERY = 0.2
# A hanging handler gives up eventually, so a forgotten fleet never holds sockets forever.
_HANG_LIMIT = 120.0

TIMEOUT_REASON = r"timeout after [0-9.]+s"


@dataclass(frozen=True, slots=True)
class HostileCase:
    """One hostile container: what it points at and the reason /status must show for it."""

    name: str
    scheme: str  # http, https, grpc or exec
    reason: str  # a regex the whole /status message must match
    server: str = ""  # the fleet listener it targets (not for exec)
    path: str = "/"
    service: str = ""
    command: tuple[str, ...] = ()
    # What /status calls its attempts: "failure", or "error" where the kubelet's own probe
    # errs (a body that breaks after the headers: kubernetes pkg/probe/http/http.go).
    outcome: str = "failure"

    def target(self, ports: Mapping[str, int]) -> str:
        if self.scheme == "exec":
            return "exec:" + shlex.join(self.command)
        port = ports[self.server]
        if self.scheme == "grpc":
            return f"grpc://127.0.0.1:{port}" + (f"/{self.service}" if self.service else "")
        return f"{self.scheme}://127.0.0.1:{port}{self.path}"

    def flag(self, ports: Mapping[str, int], options: str = "") -> str:
        """The `--probe` value for this case; `options` like ";timeout=500ms"."""
        return f"{self.name}={self.target(ports)}{options}"


HTTP_CASES = (
    HostileCase("http-slowloris", "http", TIMEOUT_REASON, "slowloris"),
    HostileCase("http-endless-body", "http", r"HTTP 503", "endless_body"),
    HostileCase("http-100mb-body", "http", r"HTTP 503", "huge_body"),
    HostileCase("http-redirect-loop", "http", r"stopped after 10 redirects", "redirect_loop"),
    HostileCase("http-garbage", "http", r"invalid HTTP response", "garbage"),
    HostileCase("http-rst-mid-response", "http", rf"error reading body: (connection reset|{TIMEOUT_REASON})",
                "rst_mid_response", outcome="error"),
    HostileCase("https-handshake-stalls", "https", TIMEOUT_REASON, "tls_stall"),
    HostileCase("http-never-reads", "http", TIMEOUT_REASON, "never_reads"),
)
GRPC_CASES = (
    HostileCase("grpc-hang", "grpc", TIMEOUT_REASON, "grpc", service="hang"),
    HostileCase("grpc-unknown", "grpc", r"grpc UNKNOWN", "grpc", service="unknown"),
    HostileCase("grpc-not-serving", "grpc", r"grpc NOT_SERVING", "grpc", service="not-serving"),
    HostileCase("grpc-service-unknown", "grpc", r"grpc SERVICE_UNKNOWN", "grpc", service="service-unknown"),
    HostileCase("grpc-status-99", "grpc", r"grpc status 99", "grpc", service="status-99"),
    HostileCase(
        "grpc-closes-mid-stream", "grpc",
        r"grpc (UNAVAILABLE|INTERNAL|UNKNOWN): [ -~]{1,100}", "grpc_mid_stream",
    ),
    HostileCase(
        "grpc-http1-server", "grpc", r"grpc UNAVAILABLE: not a gRPC server \(HTTP/1\.x answered\)",
        "grpc_http1",
    ),
)
EXEC_CASES = (
    HostileCase("exec-ignores-sigterm", "exec", TIMEOUT_REASON,
                command=("sh", "-c", 'trap "" TERM INT HUP && sleep 60')),
    # Two background children, one double-forked orphan and the shell: all in one group.
    HostileCase("exec-forks-grandchildren", "exec", TIMEOUT_REASON,
                command=("sh", "-c", "sleep 60 & sleep 60 & (sleep 60 &) && sleep 60")),
    HostileCase(
        "exec-prints-100mb", "exec",
        rf"exec exit 3: {EXEC_FIRST_LINE}|{TIMEOUT_REASON}",
        # The marker is put together by the shell, so the command line (on /status) lacks it.
        command=("sh", "-c", f"echo '{EXEC_FIRST_LINE}' && m={OUTPUT_MARKER[:-5]} && yes \"$m{OUTPUT_MARKER[-5:]}\""
                 f" | head -c {HUNDRED_MB}; exit 3"),
    ),
    HostileCase("exec-closes-stdout-keeps-running", "exec", TIMEOUT_REASON,
                command=("sh", "-c", "exec >&- 2>&- && sleep 60")),
)
ALL_CASES = HTTP_CASES + GRPC_CASES + EXEC_CASES


def short_printable(message: str, limit: int = 160) -> bool:
    """What every reason on /status must be: one short line of printable ASCII."""
    return 0 < len(message) <= limit and all(32 <= ord(ch) < 127 for ch in message)


# -- HTTP peers ------------------------------------------------------------------------------


async def _until_peer_closes(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        async with asyncio.timeout(_HANG_LIMIT):
            while await reader.read(64 * 1024):
                pass


async def _request_head(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.LimitOverrunError):
        await reader.readuntil(b"\r\n\r\n")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


async def slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Response headers, one byte per second, for as long as the peer waits."""
    head = f"HTTP/1.1 200 OK\r\nX-Marker: {BODY_MARKER}\r\n".encode()
    closed = asyncio.ensure_future(_until_peer_closes(reader))
    for byte in head:
        writer.write(bytes([byte]))
        await asyncio.wait([closed], timeout=1.0)
        if closed.done():
            break


async def _body_forever(writer: asyncio.StreamWriter, head: bytes, size: int | None) -> None:
    writer.write(head)
    sent = 0
    while size is None or sent < size:
        chunk = _CHUNK if size is None else _CHUNK[: size - sent]
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if size is None else chunk)
        await writer.drain()
        sent += len(chunk)


async def endless_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    await _body_forever(writer, b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n", None)


async def huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % HUNDRED_MB
    await _body_forever(writer, head, HUNDRED_MB)


async def redirect_loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    writer.write(
        b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(BODY_MARKER), BODY_MARKER.encode())
    )
    await writer.drain()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    writer.write(os.urandom(256) + BODY_MARKER.encode() + b"\r\n\r\n" + os.urandom(256))
    await writer.drain()


async def rst_mid_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + BODY_MARKER.encode() * 8)
    await writer.drain()
    _reset(writer)


async def tls_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Take the ClientHello, start a ServerHello, never finish it."""
    await reader.read(16 * 1024)
    writer.write(_PARTIAL_SERVER_HELLO)
    await writer.drain()
    await _until_peer_closes(reader)


class NeverReads:
    """Accepts connections and never reads a byte; drops them once the peer is gone."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reaper = asyncio.ensure_future(self._reap())
        try:
            while True:
                conn, _ = await loop.sock_accept(self.sock)
                self._held.append(conn)
        finally:
            reaper.cancel()
            for conn in self._held:
                conn.close()
            self.sock.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(_REAP_EVERY)
            alive = []
            for conn in self._held:
                if conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_ESTABLISHED:
                    alive.append(conn)
                else:
                    conn.close()
            self._held = alive


# -- gRPC peers ------------------------------------------------------------------------------

_STATUS_BY_SERVICE = {
    "unknown": health_pb2.HealthCheckResponse.UNKNOWN,
    "not-serving": health_pb2.HealthCheckResponse.NOT_SERVING,
    "service-unknown": health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
    "status-99": 99,  # proto3 enums are open: a server may send any number
    "": health_pb2.HealthCheckResponse.SERVING,
}


async def _grpc_check(request: Any, context: Any) -> bytes:
    if request.service == "hang":
        await asyncio.sleep(_HANG_LIMIT)
    status = _STATUS_BY_SERVICE.get(request.service)
    if status is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    return b"\x08" + bytes([status]) if status else b""  # field 1, varint; 0 is the default


async def start_grpc_server() -> tuple[Any, int]:
    server = grpc.aio.server()
    check = grpc.unary_unary_rpc_method_handler(
        _grpc_check,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=lambda raw: raw,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": check}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


_H2_SETTINGS, _H2_HEADERS, _H2_DATA = 4, 1, 0
_H2_ACK, _H2_END_HEADERS = 1, 4
# HPACK: ":status: 200" (static index 8), then content-type (index 31) as a literal.
_GRPC_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10\x10application/grpc"


async def grpc_mid_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speaks HTTP/2 until the response message has begun, then resets the connection."""
    await reader.readexactly(24)  # the client preface
    writer.write(_h2_frame(_H2_SETTINGS, 0, 0))
    while True:
        header = await reader.readexactly(9)
        size, kind, flags = int.from_bytes(header[:3], "big"), header[3], header[4]
        stream = int.from_bytes(header[5:], "big") & 0x7FFFFFFF
        await reader.readexactly(size)
        if kind == _H2_SETTINGS and not flags & _H2_ACK:
            writer.write(_h2_frame(_H2_SETTINGS, _H2_ACK, 0))
        if kind == _H2_HEADERS:
            message_start = b"\x00" + (1000).to_bytes(4, "big") + BODY_MARKER.encode()
            writer.write(_h2_frame(_H2_HEADERS, _H2_END_HEADERS, stream, _GRPC_RESPONSE_HEADERS))
            writer.write(_h2_frame(_H2_DATA, 0, stream, message_start))
            await writer.drain()
            _reset(writer)
            return


# -- HTTP/1 apps: a web page on the gRPC port, and the flip targets --------------------------


class FlipTargets:
    """GET /flip/<name> answers that target's status (503 until set); GET /control/<name>?status=N sets it.
    GET /away redirects to another host, with the marker in the Location's path."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.flips: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/flip/{name}", self._flip)
        app.router.add_get("/control/{name}", self._control)
        app.router.add_get("/away", self._away)
        return app

    async def _away(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{REDIRECT_HOST}/{BODY_MARKER}?{BODY_MARKER}")

    async def _flip(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status.get(request.match_info["name"], 503), text=BODY_MARKER)

    async def _control(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        status = int(request.query["status"])
        if status != self.status.get(name, 503):
            self.flips[name] = self.flips.get(name, 0) + 1
        self.status[name] = status
        return web.json_response({"flips": self.flips.get(name, 0)})


async def _web_page(request: web.Request) -> web.Response:
    return web.Response(text=BODY_MARKER * 400)


def _web_page_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _web_page)
    return app


# -- the fleet -------------------------------------------------------------------------------

_StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
_STREAM_SERVERS: dict[str, _StreamHandler] = {
    "slowloris": slowloris,
    "endless_body": endless_body,
    "huge_body": huge_body,
    "redirect_loop": redirect_loop,
    "garbage": garbage,
    "rst_mid_response": rst_mid_response,
    "tls_stall": tls_stall,
    "grpc_mid_stream": grpc_mid_stream,
}


def _quietly(handler: _StreamHandler) -> _StreamHandler:
    """A peer that vanishes mid-write is the normal case here, not an error to report."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # The fleet is shutting down. Nothing awaits this task, and asyncio 3.11's
            # streams would log a cancelled connection task as an error.
            return
        finally:
            writer.transport.abort()

    return run


async def _start_web(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    return runner, int(runner.addresses[0][1])


@contextlib.asynccontextmanager
async def serve_fleet() -> AsyncIterator[dict[str, int]]:
    """Every hostile listener on 127.0.0.1; yields {listener: port}."""
    ports: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, handler in _STREAM_SERVERS.items():
            server = await asyncio.start_server(_quietly(handler), "127.0.0.1", 0, backlog=1024)
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
            ports[name] = server.sockets[0].getsockname()[1]
        never_reads = NeverReads()
        holder = asyncio.ensure_future(never_reads.serve())
        stack.callback(holder.cancel)
        ports["never_reads"] = never_reads.port
        grpc_server, ports["grpc"] = await start_grpc_server()
        stack.push_async_callback(grpc_server.stop, None)
        for name, app in (("grpc_http1", _web_page_app()), ("flip", FlipTargets().app())):
            runner, ports[name] = await _start_web(app)
            stack.push_async_callback(runner.cleanup)
        yield ports


async def _serve_until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    async with serve_fleet() as ports:
        print(json.dumps(ports), flush=True)
        # The test process holds our stdin: when it goes (or dies), so do we.
        await loop.run_in_executor(None, sys.stdin.buffer.read)


def main() -> None:
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # hostile on purpose: no tracebacks
    asyncio.run(_serve_until_stdin_closes())


@dataclass
class HostileFleet:
    """The fleet as a child process of the test."""

    proc: subprocess.Popen[bytes]
    ports: dict[str, int]

    @classmethod
    def start(cls, timeout: float = 20.0) -> HostileFleet:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.hostile"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, env=env,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            proc.wait()
            raise AssertionError("the hostile fleet did not start")
        return cls(proc, json.loads(line))

    def set_status(self, name: str, status: int) -> int:
        """Set flip target `name` (at /flip/<name>); returns how often it has flipped."""
        connection = http.client.HTTPConnection("127.0.0.1", self.ports["flip"], timeout=5)
        try:
            connection.request("GET", f"/control/{name}?status={status}")
            return int(json.load(connection.getresponse())["flips"])
        finally:
            connection.close()

    def flip_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports['flip']}/flip/{name}"

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()
