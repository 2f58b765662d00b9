"""Probe targets the benchmark flips between ready and not ready at a known instant.

One object per probe type, each holding any number of named endpoints, so one
process can serve the hundreds a fan-out or kubelet baseline needs. A flip is a
synchronous change (listen(), a dict write, a file create) that happens before
set_ready's first await, so a timestamp taken just before the call is T.

    targets = await HttpTargets.start()
    await targets.add("app", ready=False)
    t0 = time.perf_counter(); await targets.set_ready("app", True)   # T
    targets.probe_json("app")   # {"httpGet": {...}} for a containers file
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import grpc
from aiohttp import web
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from probes.spec import ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec

LOOPBACK = "127.0.0.1"
# A listener must keep up with hundreds of simultaneous probe connections (fan-out to 500).
BACKLOG = 2048


class Targets(Protocol):
    kind: str
    # name -> perf_counter() of the first probe that found it ready since it last turned
    # ready (None until then). Kept for http and grpc only: an exec probe's file read leaves
    # no trace, and a TCP handshake completes in the kernel, long before this process's
    # accept() sees it (it is often served in the same loop pass as the long-poll's answer).
    first_hit: dict[str, float | None]

    async def add(self, name: str, *, ready: bool) -> None: ...

    async def set_ready(self, name: str, ready: bool) -> None: ...

    def probe_json(self, name: str) -> dict[str, Any]: ...

    def handler_spec(self, name: str) -> HandlerSpec: ...

    async def close(self) -> None: ...


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_outside_ephemeral(taken: set[int]) -> int:
    """A free port the kernel never hands out as a source port.

    A connect to a closed port inside the ephemeral range can pick that very port
    as its source and connect to itself (TCP simultaneous open): at hundreds of
    attempts a second a never-ready target would then look ready now and then.
    """
    low, _ = _ephemeral_range()
    candidates = range(10000, low) if low > 11000 else range(1024, 10000)
    for _ in range(1000):
        port = random.choice(candidates)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


class _CloseAtOnce(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _first_hit(hits: dict[str, float | None], name: str) -> None:
    if hits.get(name, 0.0) is None:
        hits[name] = time.perf_counter()


class TcpTargets:
    """One port per name; ready means listening."""

    kind = "tcp"

    def __init__(self) -> None:
        self._ports: dict[str, int] = {}
        self._servers: dict[str, asyncio.Server] = {}
        self._taken: set[int] = set()
        self.first_hit: dict[str, float | None] = {}

    @classmethod
    async def start(cls) -> TcpTargets:
        return cls()

    async def add(self, name: str, *, ready: bool) -> None:
        self._ports[name] = free_port_outside_ephemeral(self._taken)
        await self.set_ready(name, ready)

    async def set_ready(self, name: str, ready: bool) -> None:
        server = self._servers.pop(name, None)
        if server is not None:
            server.close()
        if ready:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, self._ports[name]))
            sock.listen(BACKLOG)  # from here on, connects succeed: this is T
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            self._servers[name] = await loop.create_server(_CloseAtOnce, sock=sock, backlog=BACKLOG)

    def port(self, name: str) -> int:
        return self._ports[name]

    def probe_json(self, name: str) -> dict[str, Any]:
        return {"tcpSocket": {"host": LOOPBACK, "port": self._ports[name]}}

    def handler_spec(self, name: str) -> HandlerSpec:
        return TcpSocketSpec(port=self._ports[name], host=LOOPBACK)

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()


class HttpTargets:
    """One aiohttp server; GET /<name> answers 200 when ready, else 503, after `delay`.

    Readiness is read when the request arrives, so an attempt counts only if it
    started after the flip. The first request per name is timed, for fan-out rounds.
    """

    kind = "http"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = 0
        self._ready: dict[str, bool] = {}
        self.first_request: dict[str, tuple[float, float]] = {}  # name -> (arrived, answered)
        self.all_first_requests = asyncio.Event()  # set once every added name has had one
        self.first_hit: dict[str, float | None] = {}
        self._runner: web.AppRunner | None = None

    @classmethod
    async def start(cls, delay: float = 0.0, *, port: int = 0) -> HttpTargets:
        """Listening on `port` (0: any free port) from now on."""
        targets = cls(delay)
        app = web.Application()
        app.router.add_get("/{name}", targets._handle)
        targets._runner = web.AppRunner(app, access_log=None)
        await targets._runner.setup()
        site = web.TCPSite(targets._runner, LOOPBACK, port, backlog=BACKLOG)
        await site.start()
        targets.port = int(targets._runner.addresses[0][1])
        return targets

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        name = request.match_info["name"]
        ready = self._ready.get(name)
        if ready is None:
            return web.Response(status=404, text="unknown")
        if ready:
            _first_hit(self.first_hit, name)
        if self.delay:
            await asyncio.sleep(self.delay)
        if name not in self.first_request:
            self.first_request[name] = (arrived, time.perf_counter())
            if len(self.first_request) == len(self._ready):
                self.all_first_requests.set()
        return web.Response(status=200 if ready else 503, text="ok" if ready else "not ready")

    async def add(self, name: str, *, ready: bool) -> None:
        await self.set_ready(name, ready)

    async def set_ready(self, name: str, ready: bool) -> None:
        if ready:
            self.first_hit[name] = None
        self._ready[name] = ready

    def probe_json(self, name: str) -> dict[str, Any]:
        return http_probe_json(self.port, name)

    def handler_spec(self, name: str) -> HandlerSpec:
        return HttpGetSpec(port=self.port, path=f"/{name}", host=LOOPBACK)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def http_probe_json(port: int, name: str) -> dict[str, Any]:
    """The httpGet probe of HttpTargets' endpoint `name` on `port`, whether or not it listens yet."""
    return {"httpGet": {"host": LOOPBACK, "port": port, "path": f"/{name}"}}


class GrpcTargets:
    """One grpc.aio server; each name is a health service, SERVING when ready."""

    kind = "grpc"

    def __init__(self, server: grpc.aio.Server, servicer: _TimedHealth, port: int) -> None:
        self._server = server
        self._servicer = servicer
        self.port = port
        self.first_hit = servicer.first_hit

    @classmethod
    async def start(cls) -> GrpcTargets:
        server = grpc.aio.server()
        servicer = _TimedHealth()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"{LOOPBACK}:0")
        await server.start()
        return cls(server, servicer, port)

    async def add(self, name: str, *, ready: bool) -> None:
        await self.set_ready(name, ready)

    async def set_ready(self, name: str, ready: bool) -> None:
        # With no Watch callers the servicer's set() stores the status before any await.
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        if ready:
            self.first_hit[name] = None
        await self._servicer.set(name, status)

    def probe_json(self, name: str) -> dict[str, Any]:
        return {"grpc": {"port": self.port, "service": name}}

    def handler_spec(self, name: str) -> HandlerSpec:
        return GrpcSpec(port=self.port, service=name, host=LOOPBACK)

    async def close(self) -> None:
        await self._server.stop(grace=None)


class _TimedHealth(health_aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.first_hit: dict[str, float | None] = {}

    async def Check(self, request: health_pb2.HealthCheckRequest, context: object) -> object:
        response = await super().Check(request, context)
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            _first_hit(self.first_hit, request.service)
        return response


class ExecTargets:
    """`test -f <file>` per name; ready means the file exists."""

    kind = "exec"

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self.first_hit: dict[str, float | None] = {}
        self._test = shutil.which("test") or "/usr/bin/test"

    @classmethod
    async def start(cls) -> ExecTargets:
        return cls(Path(tempfile.mkdtemp(prefix="bench-exec-")))

    def _file(self, name: str) -> Path:
        return self._dir / name

    async def add(self, name: str, *, ready: bool) -> None:
        await self.set_ready(name, ready)

    async def set_ready(self, name: str, ready: bool) -> None:
        if ready:
            os.close(os.open(self._file(name), os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(name))

    def probe_json(self, name: str) -> dict[str, Any]:
        return {"exec": {"command": [self._test, "-f", str(self._file(name))]}}

    def handler_spec(self, name: str) -> HandlerSpec:
        return ExecSpec(command=(self._test, "-f", str(self._file(name))))

    async def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


async def start_targets(kind: str, *, http_delay: float = 0.0) -> Targets:
    if kind == "tcp":
        return await TcpTargets.start()
    if kind == "http":
        return await HttpTargets.start(http_delay)
    if kind == "grpc":
        return await GrpcTargets.start()
    if kind == "exec":
        return await ExecTargets.start()
    raise ValueError(f"unknown target kind {kind!r}")


PROBE_KINDS = ("http", "tcp", "grpc", "exec")
