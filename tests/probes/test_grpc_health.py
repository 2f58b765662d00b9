"""The gRPC probe against real grpc.aio servers (and non-gRPC peers) on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from probes.grpc_health import MAX_RESPONSE_BYTES, GrpcHealthProbe
from probes.result import MAX_MESSAGE_CHARS, Outcome, ProbeResult
from probes.spec import KUBE_PROBE_USER_AGENT, GrpcSpec, join_host_port

TIMEOUT = 0.3
# Time an attempt may take beyond its timeout: scheduling noise, closing the channel.
SLACK = 0.3
Status = health_pb2.HealthCheckResponse


class RecordingHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """The stock aio servicer, remembering who asked: user agents and client addresses."""

    def __init__(self) -> None:
        super().__init__()
        self.user_agents: list[str] = []
        self.peers: list[str] = []

    async def Check(self, request: Any, context: Any) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        self.user_agents.append(str(metadata.get("user-agent", "")))
        self.peers.append(str(context.peer()))
        return await super().Check(request, context)


async def serve(*handlers: Any, host: str = "127.0.0.1") -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    if handlers:
        server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port(join_host_port(host, 0))
    await server.start()
    return server, port


@pytest.fixture
async def health() -> AsyncIterator[tuple[RecordingHealth, int]]:
    servicer = RecordingHealth()
    server, port = await serve()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    yield servicer, port
    await server.stop(None)


def check_handler(behaviour: Any, serializer: Any = None) -> Any:
    """A Health/Check method whose answer the test controls."""
    method = grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=serializer or Status.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": method})


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def attempt(port: int, service: str = "", host: str = "127.0.0.1") -> Any:
    probe = GrpcHealthProbe(GrpcSpec(port=port, service=service, host=host))
    return await probe.attempt(timeout=TIMEOUT)


async def test_serving_is_success(health: tuple[RecordingHealth, int]) -> None:
    _, port = health
    result = await attempt(port)
    assert result.outcome is Outcome.SUCCESS
    assert result.message == "grpc SERVING"
    assert 0 < result.duration < TIMEOUT


@pytest.mark.parametrize("status", ["NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN"])
async def test_any_status_but_serving_is_failure_named(
    health: tuple[RecordingHealth, int], status: str
) -> None:
    servicer, port = health
    await servicer.set("api", Status.ServingStatus.Value(status))
    result = await attempt(port, service="api")
    assert result.outcome is Outcome.FAILURE
    assert result.message == f"grpc {status}"


async def test_named_service_serving_is_success(health: tuple[RecordingHealth, int]) -> None:
    servicer, port = health
    await servicer.set("api", Status.SERVING)
    assert (await attempt(port, service="api")).outcome is Outcome.SUCCESS


async def test_unknown_service_is_not_found_failure(health: tuple[RecordingHealth, int]) -> None:
    _, port = health
    result = await attempt(port, service="nope")
    assert result.outcome is Outcome.FAILURE
    assert result.message == 'grpc NOT_FOUND: service "nope" unknown'


async def test_server_sees_kube_probe_user_agent(health: tuple[RecordingHealth, int]) -> None:
    servicer, port = health
    await attempt(port)
    assert servicer.user_agents
    assert servicer.user_agents[0].startswith(f"{KUBE_PROBE_USER_AGENT} ")


async def test_every_attempt_dials_a_new_connection(health: tuple[RecordingHealth, int]) -> None:
    servicer, port = health
    for _ in range(3):
        assert (await attempt(port)).outcome is Outcome.SUCCESS
    assert len(set(servicer.peers)) == 3  # three client ports: nothing was reused


async def test_ipv6_literal_host_is_bracketed() -> None:
    try:
        server, port = await serve(host="::1")
    except RuntimeError:
        pytest.skip("no IPv6 loopback here")
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    try:
        result = await attempt(port, host="::1")
    finally:
        await server.stop(None)
    assert result.outcome is Outcome.SUCCESS


async def test_server_without_health_service_is_unimplemented() -> None:
    server, port = await serve()
    try:
        result = await attempt(port)
    finally:
        await server.stop(None)
    assert result.outcome is Outcome.FAILURE
    assert result.message == "grpc health service not implemented (UNIMPLEMENTED)"


async def test_out_of_range_status_is_failure_not_crash() -> None:
    server, port = await serve(check_handler(lambda request, context: Status(status=99)))
    try:
        result = await attempt(port)
    finally:
        await server.stop(None)
    assert result.outcome is Outcome.FAILURE
    assert result.message == "grpc status 99"


async def test_oversized_response_is_refused() -> None:
    huge = b"\x0a" + b"\xff\xff\x07" + b"x" * 131071  # a length-delimited field of 128 KiB
    assert len(huge) > MAX_RESPONSE_BYTES
    server, port = await serve(
        check_handler(lambda request, context: huge, serializer=lambda reply: reply)
    )
    try:
        result = await attempt(port)
    finally:
        await server.stop(None)
    assert result.outcome is Outcome.FAILURE
    assert result.message.startswith("grpc RESOURCE_EXHAUSTED: ")
    assert "larger than max" in result.message
    assert len(result.message) <= MAX_MESSAGE_CHARS


async def test_rpc_that_never_answers_times_out() -> None:
    async def hang(request: Any, context: Any) -> Any:
        await asyncio.Event().wait()

    server, port = await serve(check_handler(hang))
    try:
        started = time.monotonic()
        result = await attempt(port)
        elapsed = time.monotonic() - started
    finally:
        await server.stop(None)
    assert result.outcome is Outcome.FAILURE
    assert result.message == f"timeout after {TIMEOUT:g}s"
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


async def test_peer_that_accepts_and_never_speaks_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        result = await attempt(port)
        elapsed = time.monotonic() - started
    finally:
        server.close()
        await server.wait_closed()
    assert result.outcome is Outcome.FAILURE
    assert result.message == f"timeout after {TIMEOUT:g}s"
    assert elapsed < TIMEOUT + SLACK


async def test_http1_server_is_short_failure() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>" + "x" * 5000)

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        result = await attempt(port)
    finally:
        await runner.cleanup()
    assert result.outcome is Outcome.FAILURE
    assert result.message == "grpc UNAVAILABLE: not a gRPC server (HTTP/1.x answered)"


async def test_nothing_listening_is_connect_refused() -> None:
    started = time.monotonic()
    result = await attempt(unused_port())
    assert result.outcome is Outcome.FAILURE
    assert result.message == "grpc UNAVAILABLE: connect refused"
    assert time.monotonic() - started < TIMEOUT  # refused fast, not waited out


async def test_a_refusing_port_is_answered_at_once_then_one_connection_once_it_listens() -> None:
    # The kernel has refused the connect when it returns (probes/dial.py): no event loop,
    # no HTTP/2. Once the port listens, the very connection that dial made carries the RPC.
    probe = GrpcHealthProbe(GrpcSpec(port=unused_port()))
    refused = probe.start(TIMEOUT)
    assert isinstance(refused, ProbeResult), "a refusing port needs no event loop"
    assert refused.message == "grpc UNAVAILABLE: connect refused"
    servicer = RecordingHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"127.0.0.1:{probe.spec.port}") == probe.spec.port
    await server.start()
    try:
        listening = await probe.attempt(TIMEOUT)
    finally:
        await server.stop(None)
    assert (listening.outcome, listening.message) == (Outcome.SUCCESS, "grpc SERVING")
    assert len(servicer.peers) == 1


async def test_cancellation_propagates() -> None:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = GrpcHealthProbe(GrpcSpec(port=port))
    task = asyncio.create_task(probe.attempt(timeout=5.0))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        server.close()
