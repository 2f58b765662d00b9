"""The health port's endpoints (docs/behaviour.md#endpoints), against an in-process sidecar and real targets."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from probes.result import Outcome, ProbeResult
from probes.spec import HttpGetSpec
from sidecar.app import Sidecar
from sidecar.model import ContainerSpec, ProbeTiming, SidecarConfig
from sidecar.runtime.scheduler import AggressivePolicy
from sidecar.runtime.settings import RunSettings
from sidecar.runtime.state import ContainerState, StateObserver
from tests.target_apps import FlipTarget

SETTINGS = RunSettings(health_port=0, grpc_port=None, metrics_port=None, bind="127.0.0.1",
                       drain_seconds=0.5, aggressive=AggressivePolicy(steady_period=0.2))


@pytest.fixture
async def targets() -> AsyncIterator[tuple[FlipTarget, FlipTarget]]:
    app, side = await FlipTarget.start(503), await FlipTarget.start(503)
    yield app, side
    await app.stop()
    await side.stop()


@pytest.fixture
async def sidecar(targets: tuple[FlipTarget, FlipTarget]) -> AsyncIterator[tuple[Sidecar, str]]:
    app, side = targets
    config = SidecarConfig((
        ContainerSpec("app", HttpGetSpec(port=app.port, path="/health"), ProbeTiming(failure_threshold=1)),
        ContainerSpec("side", HttpGetSpec(port=side.port, path="/health"), required=False),
    ))
    car = Sidecar(config, SETTINGS)
    ports = await car.start()
    yield car, f"http://127.0.0.1:{ports.health}"
    await car.stop()


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_ready_is_503_until_every_required_container_is_ready(
    sidecar: tuple[Sidecar, str], targets: tuple[FlipTarget, FlipTarget]
) -> None:
    _, base = sidecar
    app, _ = targets
    status, body = await get(base + "/ready")
    assert status == 503
    assert body["ready"] is False
    containers = body["containers"]
    assert isinstance(containers, dict)
    assert containers["app"]["ready"] is False
    assert containers["side"]["required"] is False
    app.status = 200
    await asyncio.sleep(0.3)
    status, body = await get(base + "/ready")
    assert status == 200, "the optional container 'side' is still 503 but does not gate"
    assert body["ready"] is True


async def test_long_poll_answers_the_moment_the_target_turns_ready(
    sidecar: tuple[Sidecar, str], targets: tuple[FlipTarget, FlipTarget]
) -> None:
    _, base = sidecar
    app, _ = targets
    poll = asyncio.create_task(get(base + "/ready?wait=5s"))
    await asyncio.sleep(0.3)
    assert not poll.done(), "held while not ready"
    app.status = 200
    flipped = time.monotonic()
    status, _ = await poll
    assert status == 200
    assert time.monotonic() - flipped < 0.5


async def test_long_poll_gives_up_with_503_when_the_wait_ends(sidecar: tuple[Sidecar, str]) -> None:
    _, base = sidecar
    start = time.monotonic()
    status, _ = await get(base + "/ready?wait=300ms")
    assert status == 503
    assert 0.25 <= time.monotonic() - start < 2.0


async def test_bad_wait_value_is_a_400_naming_it(sidecar: tuple[Sidecar, str]) -> None:
    _, base = sidecar
    status, body = await get(base + "/ready?wait=soon")
    assert status == 400
    assert "wait" in str(body["error"])


async def test_ready_per_container_and_unknown_container(
    sidecar: tuple[Sidecar, str], targets: tuple[FlipTarget, FlipTarget]
) -> None:
    _, base = sidecar
    _, side = targets
    side.status = 200
    status, body = await get(base + "/ready/side?wait=3s")
    assert (status, body["container"], body["ready"]) == (200, "side", True)
    status, body = await get(base + "/ready/app")
    assert status == 503 and str(body["reason"]).startswith("HTTP 503")
    status, body = await get(base + "/ready/nope")
    assert status == 404


async def test_status_reports_every_container_in_full(
    sidecar: tuple[Sidecar, str], targets: tuple[FlipTarget, FlipTarget]
) -> None:
    _, base = sidecar
    app, _ = targets
    app.status = 200
    await asyncio.sleep(0.3)
    status, body = await get(base + "/status")
    assert status == 200
    assert body["ready"] is True and body["draining"] is False
    assert isinstance(body["uptime_seconds"], float) and body["version"]
    containers = body["containers"]
    assert isinstance(containers, list)
    app_doc = next(c for c in containers if c["name"] == "app")
    assert app_doc["probe"] == "httpGet"
    assert app_doc["target"] == f"http://127.0.0.1:{app.port}/health"
    assert app_doc["status"] == "ready" and app_doc["last_result"] == "success"
    assert app_doc["consecutive_successes"] >= 1 and app_doc["latency_ms"] > 0
    assert app_doc["last_transition_time"].endswith("Z")
    assert 0 < app_doc["time_to_first_ready_seconds"] < 5


async def test_bodies_never_echo_the_targets_response_body(sidecar: tuple[Sidecar, str]) -> None:
    from aiohttp import web

    from probes import build_probe

    async def leaky(request: web.Request) -> web.Response:
        return web.Response(status=500, text="SECRET-TOKEN " * 100)

    app = web.Application()
    app.router.add_get("/", leaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        car, base = sidecar
        car._tasks["app"].cancel()  # its own probing would overwrite the result recorded here
        await asyncio.sleep(0.05)
        port = runner.addresses[0][1]
        car.state.record("app", await build_probe(HttpGetSpec(port=port)).attempt(1.0))
        for path in ("/ready", "/ready/app", "/status"):
            async with aiohttp.ClientSession() as session, session.get(base + path) as resp:
                body = await resp.text()
            assert "HTTP 500" in body and "SECRET" not in body, path
    finally:
        await runner.cleanup()


class _BrokenObserver(StateObserver):
    """A bug in an observer (metrics, logs) raises inside the scheduler that recorded the attempt."""

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        if container.spec.name == "app":
            raise RuntimeError("observer bug")


async def test_healthz_stays_200_when_every_attempt_raises_and_turns_503_when_a_scheduler_dies(
    sidecar: tuple[Sidecar, str],
) -> None:
    # An attempt that raises ends that attempt, never the schedule, as the kubelet's worker
    # goes on (kubernetes pkg/kubelet/prober/worker.go, doProbe: HandleCrash, keepGoing).
    car, base = sidecar
    assert (await get(base + "/healthz"))[0] == 200
    car.state.observe(_BrokenObserver())
    attempts = car.state.containers["app"].attempts
    assert not await car.state.wait_for(lambda: bool(car.state.dead_schedulers), 0.5)
    assert car.state.containers["app"].attempts > attempts, "the schedule went on"
    assert (await get(base + "/healthz"))[0] == 200
    car.state.scheduler_died("app", "RuntimeError('bug')")  # what a scheduler that can't go on reports
    status, body = await get(base + "/healthz")
    assert status == 503 and body["dead_schedulers"] == ["app"]


async def test_wait_for_drain_without_sigterm_resets_readiness_after_about_a_second(
    sidecar: tuple[Sidecar, str], targets: tuple[FlipTarget, FlipTarget]
) -> None:
    _, base = sidecar
    app, _ = targets
    app.status = 200
    assert (await get(base + "/ready?wait=3s"))[0] == 200
    drain = asyncio.create_task(get(base + "/wait-for-drain"))
    await asyncio.sleep(0.2)
    assert (await get(base + "/ready"))[0] == 503, "a preStop starts the drain at once"
    start = time.monotonic()
    status, body = await drain
    assert (status, body["drain"]) == (200, "reset")
    assert time.monotonic() - start < 1.5
    assert (await get(base + "/ready"))[0] == 200, "no SIGTERM came: readiness is not wedged"


async def test_wait_for_drain_returns_when_the_drain_period_ends(sidecar: tuple[Sidecar, str]) -> None:
    car, base = sidecar
    drain = asyncio.create_task(get(base + "/wait-for-drain"))
    await asyncio.sleep(0.1)
    start = time.monotonic()
    car.drainer.begin()
    status, body = await drain
    assert (status, body["drain"]) == (200, "drained")
    assert 0.4 <= time.monotonic() - start < 1.5  # drain_seconds = 0.5
    start = time.monotonic()
    status, body = await get(base + "/ready?wait=5s")
    assert status == 503 and body["draining"] is True
    assert time.monotonic() - start < 1.0, "draining answers at once, never holds"


# -- the answer path: a long-poll is written by the state change itself ------------------------

SUCCESS = ProbeResult(Outcome.SUCCESS, "HTTP 200", 0.001)


def held_polls(port: int, *paths: str) -> list[socket.socket]:
    socks = []
    for path in paths:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        method, _, path = path.rpartition(" ")
        sock.sendall(f"{method or 'GET'} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        socks.append(sock)
    return socks


def answered_now(socks: list[socket.socket]) -> list[bytes]:
    """What each socket holds already, without waiting and without letting the event loop run."""
    readable, _, _ = select.select(socks, [], [], 0)
    assert readable == socks, f"{len(socks) - len(readable)} of {len(socks)} not answered yet"
    return [sock.recv(65536) for sock in socks]


async def wait_held(car: Sidecar, count: int) -> None:
    deadline = time.monotonic() + 2
    while car.http.held_long_polls < count:
        assert time.monotonic() < deadline, "the long-polls were not held"
        await asyncio.sleep(0.01)


async def test_long_polls_are_answered_inside_the_change_before_the_loop_runs_again(
    sidecar: tuple[Sidecar, str],
) -> None:
    car, base = sidecar
    car._tasks["app"].cancel()  # the attempts are recorded here
    await asyncio.sleep(0.05)
    port = int(base.rpartition(":")[2])
    socks = held_polls(port, "/ready?wait=5s", "/ready/app?wait=5s", "HEAD /ready?wait=5s", "/ready?wait=5s")
    try:
        await wait_held(car, 4)
        car.state.record("app", SUCCESS)  # app turns ready, and with it the pod
        replies = answered_now(socks)  # no await since the record: the hook wrote them
        assert [reply.split(b" ", 2)[1] for reply in replies] == [b"200"] * 4
        assert b'"container": "app", "ready": true' in replies[1]
        assert replies[0] == replies[3], "one answer, written to every waiter"
        assert replies[2] == replies[0][: replies[0].index(b"\r\n\r\n") + 4], "HEAD: the same head, no body"
        status, body = await get(base + "/ready")
        assert status == 200 and replies[0].endswith(json.dumps(body, separators=(",", ":")).encode())
        assert car.http.held_long_polls == 0
    finally:
        for sock in socks:
            sock.close()


async def test_draining_answers_held_long_polls_at_once(sidecar: tuple[Sidecar, str]) -> None:
    car, base = sidecar
    port = int(base.rpartition(":")[2])
    socks = held_polls(port, "/ready?wait=5s", "/ready/app?wait=5s")
    try:
        await wait_held(car, 2)
        car.drainer.begin()
        aggregate, app = answered_now(socks)
        assert aggregate.startswith(b"HTTP/1.1 503 ") and b'"ready":false,"draining":true' in aggregate
        assert app.startswith(b"HTTP/1.1 503 ") and b'"container": "app"' in app
    finally:
        for sock in socks:
            sock.close()


async def test_stopping_answers_held_long_polls_with_what_their_wait_would_end_in(
    sidecar: tuple[Sidecar, str],
) -> None:
    car, base = sidecar
    port = int(base.rpartition(":")[2])
    (sock,) = held_polls(port, "/ready?wait=30s")
    try:
        await wait_held(car, 1)
        started = time.monotonic()
        await car.stop()
        assert time.monotonic() - started < 0.5, "a held long-poll needs no grace: its answer is known"
        sock.settimeout(2)
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"Connection: close\r\n" in reply
        assert sock.recv(1) == b"", "then closed"
    finally:
        sock.close()


async def test_head_and_other_methods(sidecar: tuple[Sidecar, str]) -> None:
    _, base = sidecar
    async with aiohttp.ClientSession() as session:
        async with session.head(base + "/ready") as head, session.get(base + "/ready") as full:
            assert head.status == full.status == 503
            assert head.headers["Content-Length"] == full.headers["Content-Length"]
            assert head.headers["Content-Type"] == full.headers["Content-Type"] == "application/json"
            assert "Server" not in full.headers
        async with session.post(base + "/ready", data=b"x") as posted, session.get(base + "/nope") as missing:
            assert (posted.status, missing.status) == (405, 404)


async def test_a_health_server_that_does_not_observe_its_state_refuses_to_start() -> None:
    from sidecar.runtime.attempt import RoutedChecks
    from sidecar.runtime.drain import Drainer
    from sidecar.runtime.state import AggregateState
    from sidecar.serve.health_http import HealthHttpServer

    state = AggregateState([])
    server = HealthHttpServer(state, Drainer(state, 1.0), RoutedChecks([], logging.getLogger("test")))
    with pytest.raises(RuntimeError, match="observe"):
        await server.start("127.0.0.1", 0)
