"""Scrapers that never read their /metrics answer must starve neither the kubelet's answers nor the exit.

A real `run` watches CONTAINERS tcpSocket containers on a closed loopback port (every attempt
refused, so every series moves; ~1 MB of exposition at 250, 4.4 MB at 1,000). SCRAPERS
clients send GET /metrics and never read. The kubelet's probe of /healthz must stay under 100 ms meanwhile, and
never near a failed probe (its
timeoutSeconds is 1 s: kubernetes pkg/kubelet/prober/prober.go, runProbe), and SIGTERM with
--drain-seconds 0 must end the process within drain + 1 s (the issue's bounds; the exit
itself gets EXIT_SLACK on top, a noisy shared machine).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from pathlib import Path

import pytest

from tests.reliability.running import LOOPS, healthz_seconds, refused_containers_file
from tests.sidecar_process import SidecarProcess

CONTAINERS = 250  # the "200+": one build ~0.1 s of CPU
# The shutdown figure (4-10 s): ten builds of ~0.4 s each, on the loop, delayed the exit.
SHUTDOWN_CONTAINERS = 1000
SCRAPERS = 10
ROUNDS = 3  # each: SCRAPERS new unread connections, then ROUND_SECONDS of /healthz samples
ROUND_SECONDS = 1.0
HEALTHZ_EVERY = 0.02
HEALTHZ_BOUND = 0.1
KUBELET_TIMEOUT = 1.0
DRAIN_SECONDS = 0
EXIT_SLACK = 0.5  # the interpreter's own exit, after the servers closed
SHUTDOWN_SAMPLES = 3
# One refused attempt a second per container: the series move, the loop is not busy probing.
FLAGS = ("--aggressive-interval", "1s", "--aggressive-max-interval", "1s")
_SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: sidecar\r\n\r\n"


async def _start(tmp_path: Path, count: int, loop: str) -> SidecarProcess:
    config = refused_containers_file(tmp_path, count)
    car = await SidecarProcess.start(
        "-f",
        str(config),
        "--health-port",
        "0",
        "--metrics-port",
        "0",
        "--grpc-port",
        "0",
        "--drain-seconds",
        str(DRAIN_SECONDS),
        "--loop",
        loop,
        *FLAGS,
        timeout=60,
        log_lines=200,
    )
    await asyncio.sleep(1.5)  # every container attempted: the exposition has its full size
    return car


async def _unread_scrape(port: int) -> socket.socket:
    """A connection that asked for /metrics and never reads (a small receive buffer, as a stalled client)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, _SCRAPE)
    return sock


@pytest.mark.parametrize("loop", LOOPS)
async def test_unread_scrapers_leave_healthz_under_100_ms(tmp_path: Path, loop: str) -> None:
    car = await _start(tmp_path, CONTAINERS, loop)
    held: list[socket.socket] = []
    latencies: list[float] = []
    try:
        assert car.metrics_port is not None
        for _ in range(ROUNDS):
            held += await asyncio.gather(*(_unread_scrape(car.metrics_port) for _ in range(SCRAPERS)))
            deadline = time.monotonic() + ROUND_SECONDS
            while time.monotonic() < deadline:
                latencies.append(await healthz_seconds(car.health_port))
                await asyncio.sleep(HEALTHZ_EVERY)
        assert car.alive()
    finally:
        for sock in held:
            sock.close()
        await car.stop()
    ms = sorted(round(1000 * value, 1) for value in latencies)
    # Nine in ten under the bound, not every one: two cores shared with other suites. Before the
    # fix a third were over it, and the worst over a second.
    assert statistics.quantiles(latencies, n=10)[-1] < HEALTHZ_BOUND, ms
    assert max(latencies) < KUBELET_TIMEOUT, f"the kubelet would have failed a probe: {ms[-5:]}"


@pytest.mark.parametrize("loop", LOOPS)
async def test_shutdown_with_unread_scrapers_ends_within_drain_plus_one_second(tmp_path: Path, loop: str) -> None:
    exits = []
    for _ in range(SHUTDOWN_SAMPLES):
        car = await _start(tmp_path, SHUTDOWN_CONTAINERS, loop)
        held: list[socket.socket] = []
        try:
            assert car.metrics_port is not None
            held = list(await asyncio.gather(*(_unread_scrape(car.metrics_port) for _ in range(SCRAPERS))))
            await asyncio.sleep(0.5)  # the answers are built and sit unread in the sidecar's buffers
            started = time.perf_counter()
            car.terminate()
            assert await car.wait(30) == 0
            exits.append(time.perf_counter() - started)
        finally:
            for sock in held:
                sock.close()
            await car.kill()
    assert statistics.median(exits) <= DRAIN_SECONDS + 1.0 + EXIT_SLACK, exits
