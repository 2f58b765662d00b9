"""The gRPC health port (asyncio and h2, no grpcio) against grpcio's real client on 127.0.0.1 and ::1.

Its HTTP/2 (limits, hostile clients, GOAWAY) is tests/serve/test_grpc_h2.py's.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from probes import grpc_wire
from probes.result import Outcome, ProbeResult
from probes.spec import GrpcSpec, TcpSocketSpec
from sidecar.model import ContainerSpec, ProbeTiming
from sidecar.runtime.state import AggregateState
from sidecar.serve.health_grpc import MAX_REQUEST_BYTES, GrpcHealthServer
from tests.reliability import procfs

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

# Generous: this pins "pushed, not polled"; real latency belongs to benchmarks/.
PROMPT = 0.5
ONE_SHOT = ProbeTiming(success_threshold=1, failure_threshold=1)


def make_state() -> AggregateState:
    return AggregateState(
        [
            ContainerSpec("app", TcpSocketSpec(port=1), ONE_SHOT),
            ContainerSpec("cache", TcpSocketSpec(port=2), ONE_SHOT, required=False),
            ContainerSpec("legacy", None),  # unobserved: left to the kubelet
        ]
    )


def succeed(state: AggregateState, name: str) -> None:
    state.record(name, ProbeResult(Outcome.SUCCESS, "ok", 0.001))


def fail(state: AggregateState, name: str) -> None:
    state.record(name, ProbeResult(Outcome.FAILURE, "connect ECONNREFUSED", 0.001))


@dataclass
class Served:
    state: AggregateState
    server: GrpcHealthServer
    port: int
    stub: Any  # health_pb2_grpc.HealthStub

    async def check(self, service: str) -> int:
        reply = await self.stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        return int(reply.status)

    def watch(self, service: str) -> Any:
        return self.stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=10.0)


async def next_status(call: Any, within: float = PROMPT) -> int:
    async with asyncio.timeout(within):
        reply = await call.read()
    assert reply is not grpc.aio.EOF, "Watch stream ended"
    return int(reply.status)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    state = make_state()
    server = GrpcHealthServer(state)
    port = await server.start("127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(state, server, port, health_pb2_grpc.HealthStub(channel))
    await server.stop()


async def test_port_zero_binds_a_free_port_that_answers(served: Served) -> None:
    assert 0 < served.port < 65536
    _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.close()
    await writer.wait_closed()
    assert await served.check("") == NOT_SERVING


async def test_aggregate_is_not_serving_until_every_required_container_is_ready(
    served: Served,
) -> None:
    assert await served.check("") == NOT_SERVING
    succeed(served.state, "cache")  # not required: does not gate
    assert await served.check("") == NOT_SERVING
    succeed(served.state, "app")
    assert await served.check("") == SERVING
    fail(served.state, "cache")
    assert await served.check("") == SERVING


async def test_container_service_reports_that_container_alone(served: Served) -> None:
    assert await served.check("app") == NOT_SERVING
    succeed(served.state, "cache")
    assert await served.check("cache") == SERVING
    assert await served.check("app") == NOT_SERVING
    succeed(served.state, "app")
    assert await served.check("app") == SERVING


async def test_unobserved_container_is_service_unknown(served: Served) -> None:
    assert await served.check("legacy") == SERVICE_UNKNOWN
    succeed(served.state, "app")
    assert await served.check("legacy") == SERVICE_UNKNOWN


async def test_check_of_unknown_service_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.check("no-such-container")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_aggregate_streams_each_change_once_and_promptly(served: Served) -> None:
    state, call = served.state, served.watch("")
    assert await next_status(call) == NOT_SERVING

    began = time.perf_counter()
    succeed(state, "app")
    assert await next_status(call) == SERVING
    assert time.perf_counter() - began < PROMPT

    # Attempts that keep "app" ready, and flips of a container that does not gate,
    # change nothing for "": the next message must be the real change.
    for _ in range(3):
        succeed(state, "app")
    succeed(state, "cache")
    fail(state, "cache")
    await asyncio.sleep(0.02)
    began = time.perf_counter()
    fail(state, "app")
    assert await next_status(call) == NOT_SERVING
    assert time.perf_counter() - began < PROMPT
    call.cancel()


async def test_watch_container_ignores_changes_elsewhere(served: Served) -> None:
    state = served.state
    succeed(state, "app")
    call = served.watch("app")
    assert await next_status(call) == SERVING
    state.set_draining(True)
    succeed(state, "cache")
    state.set_draining(False)
    await asyncio.sleep(0.02)
    fail(state, "app")
    assert await next_status(call) == NOT_SERVING
    call.cancel()


async def test_draining_turns_aggregate_not_serving_but_not_containers(served: Served) -> None:
    state = served.state
    succeed(state, "app")
    aggregate = served.watch("")
    assert await next_status(aggregate) == SERVING

    state.set_draining(True)
    assert await next_status(aggregate) == NOT_SERVING
    assert await served.check("") == NOT_SERVING
    assert await served.check("app") == SERVING
    aggregate.cancel()


async def test_watch_of_unknown_service_streams_service_unknown_and_stays_open(
    served: Served,
) -> None:
    call = served.watch("no-such-container")
    assert await next_status(call) == SERVICE_UNKNOWN
    succeed(served.state, "app")
    await asyncio.sleep(0.05)
    assert not call.done()
    assert served.server.open_watches == 1
    call.cancel()


async def test_list_reports_every_service(served: Served) -> None:
    succeed(served.state, "app")
    reply = await served.stub.List(health_pb2.HealthListRequest(), timeout=1.0)
    statuses = {name: int(r.status) for name, r in reply.statuses.items()}
    assert statuses == {
        "": SERVING,
        "app": SERVING,
        "cache": NOT_SERVING,
        "legacy": SERVICE_UNKNOWN,
    }


async def test_client_cancelling_a_watch_releases_it(served: Served) -> None:
    calls = [served.watch(""), served.watch("app")]
    for call in calls:
        await next_status(call)
    assert served.server.open_watches == 2
    for call in calls:
        call.cancel()
    # The server learns of a cancel asynchronously and exposes no event for it.
    async with asyncio.timeout(PROMPT):
        while served.server.open_watches:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_oversized_request_is_refused(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.check("x" * (MAX_REQUEST_BYTES + 1))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_stop_ends_open_watch_streams_cleanly_before_the_grace_runs_out() -> None:
    state = make_state()
    succeed(state, "app")
    server = GrpcHealthServer(state)
    port = await server.start("127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        calls = {
            name: stub.Watch(health_pb2.HealthCheckRequest(service=name)) for name in ("", "app")
        }
        for call in calls.values():
            assert await next_status(call) == SERVING

        grace = 3.0
        began = time.perf_counter()
        await server.stop(grace=grace)
        assert time.perf_counter() - began < grace / 2  # the streams ended, not the grace

        for call in calls.values():
            assert await next_status(call) == NOT_SERVING  # the server is going away
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
    assert server.open_watches == 0


async def test_second_server_on_a_busy_port_fails_to_start(served: Served) -> None:
    other = GrpcHealthServer(served.state)
    with pytest.raises(OSError, match="cannot listen"):
        await other.start("127.0.0.1", served.port)


@pytest.mark.skipif(
    importlib.util.find_spec("probes.grpc_health") is None,
    reason="probes/grpc_health.py (GrpcHealthProbe) is not written yet",
)
async def test_kubelet_grpc_probe_sees_aggregate_and_container(served: Served) -> None:
    from probes.grpc_health import GrpcHealthProbe

    aggregate = GrpcHealthProbe(GrpcSpec(port=served.port))
    app = GrpcHealthProbe(GrpcSpec(port=served.port, service="app"))
    unknown = GrpcHealthProbe(GrpcSpec(port=served.port, service="no-such-container"))
    assert (await aggregate.attempt(timeout=1.0)).outcome is Outcome.FAILURE
    succeed(served.state, "app")
    assert (await aggregate.attempt(timeout=1.0)).outcome is Outcome.SUCCESS
    assert (await app.attempt(timeout=1.0)).outcome is Outcome.SUCCESS
    assert (await unknown.attempt(timeout=1.0)).outcome is Outcome.FAILURE
    served.state.set_draining(True)
    assert (await aggregate.attempt(timeout=1.0)).outcome is Outcome.FAILURE
    assert (await app.attempt(timeout=1.0)).outcome is Outcome.SUCCESS


async def test_second_server_fails_even_with_reuse_port_on_the_first() -> None:
    """grpcio set SO_REUSEPORT unless told not to; we never set it, so the bind must fail."""
    state = make_state()
    first = GrpcHealthServer(state)
    port = await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await GrpcHealthServer(state).start("127.0.0.1", port)
        with pytest.raises(OSError, match="cannot listen"):
            await GrpcHealthServer(state).start("0.0.0.0", port)
    finally:
        await first.stop()


@pytest.mark.parametrize("bind", ["::1", "[::1]"])
async def test_serves_on_ipv6_loopback(bind: str) -> None:
    state = make_state()
    server = GrpcHealthServer(state)
    port = await server.start(bind, 0)
    try:
        succeed(state, "app")
        async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert (await stub.Check(health_pb2.HealthCheckRequest(service="app"), timeout=2)).status == SERVING
        # The given address only, not 127.0.0.1: read from this process's own sockets, since a connect to
        # 127.0.0.1:port could reach another process that happens to hold that port there.
        mine = [(address, p) for kind, address, p in procfs.listening_sockets(os.getpid()) if p == port]
        assert mine == [("::1", port)], mine
    finally:
        await server.stop()


def test_the_grpc_port_imports_neither_grpc_nor_protobuf() -> None:
    code = (
        "import asyncio, sys\n"
        "from sidecar.runtime.state import AggregateState\n"
        "from sidecar.serve.health_grpc import GrpcHealthServer\n"
        "async def main():\n"
        "    server = GrpcHealthServer(AggregateState([]))\n"
        "    await server.start('127.0.0.1', 0)\n"
        "    await server.stop()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'grpc_health', 'google')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "[]"


def test_list_response_bytes_are_grpcios() -> None:
    statuses = [("", SERVING), ("app", NOT_SERVING), ("legacy", SERVICE_UNKNOWN), ("x" * 200, 0)]
    parsed = health_pb2.HealthListResponse.FromString(grpc_wire.encode_list_response(statuses))
    assert {k: v.status for k, v in parsed.statuses.items()} == dict(statuses)
    # Byte for byte, entry by entry (grpcio orders a map's entries its own way).
    for name, status in statuses:
        one = health_pb2.HealthListResponse()
        one.statuses[name].status = status  # type: ignore[assignment]
        assert grpc_wire.encode_list_response([(name, status)]) == one.SerializeToString()


def test_everything_works_on_uvloop() -> None:
    """The sidecar's default loop: Check, Watch, List, a change pushed, and stop ending the stream with OK."""

    async def scenario() -> list[object]:
        state = make_state()
        server = GrpcHealthServer(state)
        port = await server.start("127.0.0.1", 0)
        seen: list[object] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            seen.append((await stub.Check(health_pb2.HealthCheckRequest(service="legacy"), timeout=2)).status)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="app"))
            seen.append(await next_status(watch))
            succeed(state, "app")
            seen.append(await next_status(watch))
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=2)
            seen.append(len(listed.statuses))
            await server.stop(grace=3.0)
            seen.append(await next_status(watch))
            seen.append(await watch.code())
        return seen

    assert uvloop.run(scenario()) == [SERVICE_UNKNOWN, NOT_SERVING, SERVING, 4, NOT_SERVING, grpc.StatusCode.OK]
