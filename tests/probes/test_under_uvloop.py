"""The sidecar runs on uvloop when it is installed: every probe type must work there too.

(uvloop lacks some asyncio arguments, e.g. create_subprocess_exec(process_group=...).)"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from probes import build_probe
from probes.result import Outcome
from probes.spec import ExecSpec, GrpcSpec, HttpGetSpec, TcpSocketSpec
from tests.sidecar_process import sidecar_environ
from tests.target_apps import FlipTarget

uvloop = pytest.importorskip("uvloop")


def test_every_probe_type_works_under_uvloop() -> None:
    async def scenario() -> dict[str, tuple[Outcome, str]]:
        from grpc import aio
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        target = await FlipTarget.start(200)
        server = aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        grpc_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            refused = unused.getsockname()[1]
            specs = {
                "http": HttpGetSpec(port=target.port, path="/health"),
                "tcp": TcpSocketSpec(port=target.port),
                "tcp-refused": TcpSocketSpec(port=refused),
                "grpc": GrpcSpec(port=grpc_port),
                "exec": ExecSpec(("sh", "-c", "exit 0")),
                "exec-fail": ExecSpec(("sh", "-c", "echo no; exit 3")),
                "exec-timeout": ExecSpec(("sh", "-c", "sleep 30 & sleep 30")),
            }
            results = {}
            for name, spec in specs.items():
                probe = build_probe(spec)
                result = await probe.attempt(0.5)
                results[name] = (result.outcome, result.message)
        await server.stop(None)
        await target.stop()
        return results

    results = uvloop.run(scenario())
    assert results["http"] == (Outcome.SUCCESS, "HTTP 200")
    assert results["tcp"][0] is Outcome.SUCCESS
    assert results["tcp-refused"][1].startswith("connect ECONNREFUSED")
    assert results["grpc"][0] is Outcome.SUCCESS
    assert results["exec"] == (Outcome.SUCCESS, "exit 0")
    assert results["exec-fail"] == (Outcome.FAILURE, "exec exit 3: no")
    assert results["exec-timeout"] == (Outcome.FAILURE, "timeout after 0.5s")


# Run in a process of its own: libuv's thread pool is per process and, once started, stays.
_REDIRECTS_THEN_THREADS = """
import asyncio, socket, uvloop
from probes.http_get import HttpGetProbe
from probes.spec import HttpGetSpec

def threads():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("Threads:"))

async def redirect(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 302 Found\\r\\nLocation: /again\\r\\nContent-Length: 0\\r\\n\\r\\n")
    await writer.drain()
    writer.close()

async def main():
    listener = socket.create_server(("127.0.0.1", 0))  # start_server(host=) itself starts the pool
    server = await asyncio.start_server(redirect, sock=listener)
    probe = HttpGetProbe(HttpGetSpec(port=listener.getsockname()[1]))
    before = threads()
    for _ in range(20):
        result = await probe.attempt(2.0)
    print(result.message, threads() - before)
    server.close()

uvloop.run(main())
"""


def test_redirect_hops_under_uvloop_start_no_resolver_threads() -> None:
    """uvloop's sock_connect looks every address up, IP literals too, on libuv's thread pool
    (uvloop/loop.pyx sock_connect calls getaddrinfo without the socket type, so the static path
    in dns.pyx never applies): a redirect hop cost a thread round trip and started four threads."""
    done = subprocess.run(
        [sys.executable, "-c", _REDIRECTS_THEN_THREADS],
        capture_output=True,
        text=True,
        timeout=60,
        env=sidecar_environ(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "after", "10", "redirects", "0"]
