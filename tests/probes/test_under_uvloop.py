"""The sidecar runs on uvloop when it is installed: every probe type must work there too.

(uvloop lacks some asyncio arguments, e.g. create_subprocess_exec(process_group=...).)"""

from __future__ import annotations

import socket

import pytest

from probes import build_probe
from probes.result import Outcome
from probes.spec import ExecSpec, GrpcSpec, HttpGetSpec, TcpSocketSpec
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
