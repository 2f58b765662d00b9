"""Load and faults together: a flood of /ready and /status clients while targets flap.

The flood is wrk (where installed: .ci/run installs it) on 64 connections, plus aiohttp
clients, some on keep-alive connections and some opening a new connection per request,
whose replies are timestamped: they are how a flip is seen on /ready. The flapping
targets live in the hostile fleet (another process), so the test drives each flip and
knows exactly how many there were. Every flip must show
on /ready/<container> within the failure budget, and the sidecar must count exactly one
transition per flip: none missed, none extra. Then the same with a container whose
target hangs every probe for its full timeout; then SIGTERM in the middle of a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability.hostile import HostileFleet
from tests.reliability.running import RunningSidecar

FLAPPERS = ("flap-a", "flap-b", "flap-c")
FLIPS = 8  # per flapping container: four to ready, four back
TIMEOUT = 1.0
STEADY_PERIOD = 0.25
MAX_NOT_READY_INTERVAL = 0.1  # the widest aggressive interval (the default)
FAILURE_THRESHOLD = 3
# The load and the other helpers' tests share two cores with us: generous, on purpose.
SLACK = 1.0
# docs/behaviour.md#scheduling: to ready within one not-ready interval and one attempt; to not ready within
# a steady period and failureThreshold fast re-probes, each up to the timeout.
BUDGET = {
    200: MAX_NOT_READY_INTERVAL + TIMEOUT + SLACK,
    503: STEADY_PERIOD + FAILURE_THRESHOLD * (0.005 + TIMEOUT) + SLACK,
}
WRK = shutil.which("wrk")
WRK_CONNECTIONS = 64
# With wrk doing the bulk, fewer of our own: they observe more than they load.
KEEP_ALIVE_CLIENTS = 16 if WRK else 48
NEW_CONNECTION_CLIENTS = 8 if WRK else 16
GRPC_CLIENTS = 4
DRAIN_SECONDS = 2.0


@dataclass
class Reply:
    sent: float
    received: float
    path: str
    status: int


@dataclass
class Watch:
    """A flip waiting to be seen on /ready/<name>."""

    want: int
    since: float
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    seen_at: float = 0.0


@dataclass
class Flood:
    """Clients hammering the sidecar until stopped, recording every reply and error."""

    base: str
    paths: tuple[str, ...]
    replies: list[Reply] = field(default_factory=list)
    # (sent, failed, what): the refusal or reset happened somewhere between the two.
    errors: list[tuple[float, float, str]] = field(default_factory=list)
    watches: dict[str, Watch] = field(default_factory=dict)
    running: bool = True

    async def client(self, session: aiohttp.ClientSession, offset: int) -> None:
        index = offset
        while self.running:
            path = self.paths[index % len(self.paths)]
            index += 1
            sent = time.monotonic()
            try:
                async with session.get(self.base + path) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError) as exc:
                self.errors.append((sent, time.monotonic(), f"{path}: {type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.01)
                continue
            received = time.monotonic()
            self.replies.append(Reply(sent, received, path, status))
            name = path.rpartition("/")[2]
            watch = self.watches.get(name)
            if watch is not None and status == watch.want and sent >= watch.since and not watch.seen.is_set():
                watch.seen_at = received
                watch.seen.set()

    async def run(self, until: Callable[[], Awaitable[None]]) -> None:
        """Flood with every client while `until()` runs."""
        keep_alive = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        try:
            clients = [asyncio.create_task(self.client(keep_alive, i)) for i in range(KEEP_ALIVE_CLIENTS)]
            clients += [asyncio.create_task(self.client(fresh, i)) for i in range(NEW_CONNECTION_CLIENTS)]
            try:
                await until()
            finally:
                self.running = False
                await asyncio.gather(*clients)
        finally:
            await keep_alive.close()
            await fresh.close()

    def summary(self, seconds: float) -> str:
        latencies = sorted(r.received - r.sent for r in self.replies)
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
        return (f"{len(self.replies)} replies in {seconds:.1f}s ({len(self.replies) / seconds:.0f}/s), "
                f"p99 {p99 * 1000:.1f} ms, {len(self.errors)} errors")


@dataclass
class WrkResult:
    requests: int = 0
    socket_errors: str = ""  # wrk's own line, empty when there were none
    output: str = ""


@contextlib.asynccontextmanager
async def wrk_load(base: str, paths: tuple[str, ...], workdir: Path) -> AsyncIterator[WrkResult]:
    """wrk on every path in turn until the block ends (nothing, where wrk is not installed)."""
    result = WrkResult()
    if WRK is None:
        yield result
        return
    script = workdir / "paths.lua"
    lua_paths = ", ".join(f'"{path}"' for path in paths)
    script.write_text(f"local paths = {{{lua_paths}}}\nlocal i = 0\n"
                      "request = function()\n  i = i + 1\n  return wrk.format('GET', paths[i % #paths + 1])\nend\n")
    proc = await asyncio.create_subprocess_exec(
        WRK, "-t1", f"-c{WRK_CONNECTIONS}", "-d120s", "--timeout", "5s", "-s", str(script), base + paths[0],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        yield result
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        output = (await proc.communicate())[0].decode()
        result.output = output
        if match := re.search(r"(\d+) requests in", output):
            result.requests = int(match[1])
        if match := re.search(r"Socket errors: .*", output):
            result.socket_errors = match[0]


async def _set_status(session: aiohttp.ClientSession, fleet: HostileFleet, name: str, status: int) -> None:
    async with session.get(f"http://127.0.0.1:{fleet.ports['flip']}/control/{name}?status={status}") as response:
        assert response.status == 200


async def _flap(flood: Flood, fleet: HostileFleet, name: str, latencies: dict[int, list[float]]) -> None:
    rng = random.Random(name)
    async with aiohttp.ClientSession() as control:
        for flip in range(FLIPS):
            want = 200 if flip % 2 == 0 else 503
            await _set_status(control, fleet, name, want)
            watch = flood.watches[name] = Watch(want, time.monotonic())
            try:
                await asyncio.wait_for(watch.seen.wait(), BUDGET[want])
            except TimeoutError:
                raise AssertionError(f"{name}: flip {flip} to {want} not on /ready/{name} "
                                     f"within {BUDGET[want]:.2f}s") from None
            latencies[want].append(watch.seen_at - watch.since)
            await asyncio.sleep(rng.uniform(0.05, 0.3))


@pytest.fixture
def flappers(fleet: HostileFleet) -> Iterator[list[str]]:
    for name in FLAPPERS:
        fleet.set_status(name, 503)
    yield [f"{name}={fleet.flip_url(name)};timeout={TIMEOUT}s" for name in FLAPPERS]
    for name in FLAPPERS:
        fleet.set_status(name, 503)


@pytest.mark.parametrize("hang", [False, True], ids=["flapping", "flapping-with-a-hanging-target"])
async def test_every_flip_under_a_flood_shows_on_ready_within_budget_and_counts_once(
    fleet: HostileFleet, flappers: list[str], hang: bool, tmp_path: Path
) -> None:
    probes = [arg for flag in flappers for arg in ("--probe", flag)]
    if hang:
        # Every attempt hangs for the full timeout (period mode: no short aggressive timeout).
        probes += ["--probe", f"hang=http://127.0.0.1:{fleet.ports['never_reads']}/;timeout={TIMEOUT}s;"
                              f"period={TIMEOUT}s;required=false"]
    car = await asyncio.to_thread(
        RunningSidecar.start, "--health-port", "0", "--grpc-port", "off", "--metrics-port", "0",
        "--drain-seconds", "0", "--steady-period", f"{STEADY_PERIOD}s", *probes,
    )
    paths = ("/ready", "/status", *(f"/ready/{name}" for name in FLAPPERS))
    flood = Flood(car.base, paths)
    latencies: dict[int, list[float]] = {200: [], 503: []}
    try:
        started = time.monotonic()

        async def flap_all() -> None:
            async with asyncio.TaskGroup() as group:
                for name in FLAPPERS:
                    group.create_task(_flap(flood, fleet, name, latencies))

        async with wrk_load(car.base, paths, tmp_path) as wrk:
            await flood.run(flap_all)
        elapsed = time.monotonic() - started
        scrape, containers = await asyncio.to_thread(lambda: (car.metrics(), car.containers()))
    finally:
        car.terminate()
        await asyncio.to_thread(car.wait, 10)
        car.stop()

    print(f"\nflood ({'with' if hang else 'without'} a hanging target): wrk {wrk.requests / elapsed:.0f} req/s "
          f"on {WRK_CONNECTIONS} connections{'' if WRK else ' (not installed)'}, aiohttp {flood.summary(elapsed)}; "
          f"{len(FLAPPERS) * FLIPS} flips seen on /ready/<name> after: to ready max "
          f"{max(latencies[200]) * 1000:.0f} ms (budget {BUDGET[200] * 1000:.0f}), to not ready max "
          f"{max(latencies[503]) * 1000:.0f} ms (budget {BUDGET[503] * 1000:.0f})")
    assert not flood.errors, flood.errors[:5]
    assert not wrk.socket_errors, wrk.output
    assert {r.status for r in flood.replies} <= {200, 503}
    for name in FLAPPERS:
        for to in ("ready", "not_ready"):
            counted = scrape.value("readiness_transitions_total", container=name, to=to)
            assert counted == FLIPS // 2, f"{name}: {counted} transitions to {to}, {FLIPS // 2} flips"
    if hang:
        hanging = containers["hang"]
        assert hanging["message"] == f"timeout after {TIMEOUT:g}s"
        assert hanging["attempts"] <= elapsed / TIMEOUT + 2


async def _grpc_checks(port: int, stop: asyncio.Event, seen: list[tuple[float, float, str]]) -> None:
    """Check the aggregate until stopped, recording (sent, received, status or error)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                status = f"error {error.code().name}"
            seen.append((sent, time.monotonic(), status))
            if status.startswith("error"):
                await asyncio.sleep(0.01)


async def test_sigterm_mid_flood_refuses_and_resets_nothing_until_the_drain_ends(
    fleet: HostileFleet, tmp_path: Path
) -> None:
    fleet.set_status("drain-target", 200)
    car = await asyncio.to_thread(
        RunningSidecar.start, "--health-port", "0", "--grpc-port", "0", "--metrics-port", "off",
        "--drain-seconds", f"{DRAIN_SECONDS}s", "--probe", f"app={fleet.flip_url('drain-target')}",
    )
    flood = Flood(car.base, ("/ready", "/status", "/ready/app", "/healthz"))
    grpc_seen: list[tuple[float, float, str]] = []
    grpc_stop = asyncio.Event()
    assert car.grpc_port is not None
    checkers = [asyncio.create_task(_grpc_checks(car.grpc_port, grpc_stop, grpc_seen)) for _ in range(GRPC_CLIENTS)]
    terminated = exited = 0.0
    try:
        async def terminate_mid_flood() -> None:
            nonlocal terminated, exited
            await asyncio.sleep(1.0)
            terminated = time.monotonic()
            car.terminate()
            await asyncio.to_thread(car.proc.wait)
            exited = time.monotonic()
            await asyncio.sleep(0.3)  # and a little past the exit, to see refusals begin

        ready = await asyncio.to_thread(car.get, "/ready?wait=5s")
        assert ready[0] == 200
        async with wrk_load(car.base, flood.paths, tmp_path):  # load only: its errors have no time
            await flood.run(terminate_mid_flood)
    finally:
        grpc_stop.set()
        await asyncio.gather(*checkers)
        code = await asyncio.to_thread(car.wait, 10)
        car.stop()
    drain_end = terminated + DRAIN_SECONDS
    print(f"\nSIGTERM mid-flood: {flood.summary(exited - terminated + 1.3)}; exit {exited - terminated:.2f}s "
          f"after SIGTERM (drain {DRAIN_SECONDS:g}s); {len(grpc_seen)} gRPC checks")

    assert code == 0
    assert DRAIN_SECONDS - 0.1 <= exited - terminated < DRAIN_SECONDS + 3.0
    # An error seen before the drain ended is a refusal or reset during the drain. (The
    # sidecar's drain timer starts when its loop handles the signal, a little after ours.)
    early = [(round(sent - terminated, 3), round(failed - terminated, 3), what)
             for sent, failed, what in flood.errors if failed < drain_end]
    assert not early, early[:5]
    # Not ready at once after SIGTERM, and never ready again.
    after = [r for r in flood.replies if r.sent > terminated + 0.1 and r.path.startswith("/ready")]
    assert after and all(r.status == 503 for r in after if r.path == "/ready")
    assert all(r.status == 200 for r in flood.replies if r.path in ("/ready", "/healthz") and r.received < terminated)
    during = {status for sent, received, status in grpc_seen if terminated + 0.1 < sent and received < drain_end}
    assert during == {"NOT_SERVING"}, during
    assert {status for sent, received, status in grpc_seen if received < terminated} == {"SERVING"}
