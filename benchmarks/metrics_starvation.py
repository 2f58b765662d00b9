"""Scrapers that never read their /metrics answer, against the kubelet's /healthz and a SIGTERM.

A real `run` with CONTAINERS tcpSocket containers on a closed loopback port (every attempt
refused, so every series moves). First `quiet`: /healthz alone, what the probing itself costs
it (one burst of CONTAINERS refused connects a second). Then `unread`: SCRAPERS clients send
GET /metrics and never read a byte, a new unread connection each per round. All along,
another client times GET /healthz on a fresh connection every HEALTHZ_EVERY. Last, with
SCRAPERS unread scrapers connected, SIGTERM with --drain-seconds 0 and the time to the exit.

    python -m benchmarks.metrics_starvation [--containers 1000] [--rounds 6] [--loop asyncio] [--baseline-rev REV]

With --baseline-rev, that revision (benchmarks/baseline.py) runs the same, before this one.
docs/performance.md#scrapers-that-never-read has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline import install_revision
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, SidecarProcess, container, start_sidecar

CONTAINERS = 1000  # the figure: a 4.4 MB exposition
SCRAPERS = 10
ROUND_SECONDS = 1.5  # each scraper opens a new unread connection this often
HEALTHZ_EVERY = 0.02
# Refused attempts every second per container: the series move, and the loop is not saturated by probing.
FLAGS = ("--aggressive-interval", "1s", "--aggressive-max-interval", "1s")
_SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: sidecar\r\nUser-Agent: unread\r\n\r\n"
_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def unread_scrape(port: int) -> asyncio.StreamWriter:
    """A connection that asked for /metrics and will never read (a tiny receive buffer, as a stalled client)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, writer = await asyncio.open_connection(sock=sock, limit=1)
    writer.transport.pause_reading()
    writer.write(_SCRAPE)
    return writer


async def healthz_seconds(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_HEALTHZ)
        await reader.read()
    finally:
        writer.close()
    return time.perf_counter() - started


async def starve(sidecar: SidecarProcess, rounds: int, scrapers: int = SCRAPERS) -> list[float]:
    """/healthz latencies while unread scrapers arrive, round after round (none: the probing's own cost)."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            latencies.append(await healthz_seconds(sidecar.health_port))
            await asyncio.sleep(HEALTHZ_EVERY)

    sampler = asyncio.create_task(sample())
    held: list[asyncio.StreamWriter] = []
    assert sidecar.metrics_port is not None
    for _ in range(rounds):
        for old in held:
            old.transport.abort()
        held = list(await asyncio.gather(*(unread_scrape(sidecar.metrics_port) for _ in range(scrapers))))
        await asyncio.sleep(ROUND_SECONDS)
    stop.set()
    await sampler
    for old in held:
        old.transport.abort()
    return latencies


async def exit_after_sigterm(sidecar: SidecarProcess) -> float:
    assert sidecar.metrics_port is not None
    held = await asyncio.gather(*(unread_scrape(sidecar.metrics_port) for _ in range(SCRAPERS)))
    await asyncio.sleep(0.5)  # the answers are being written, or built
    started = time.perf_counter()
    sidecar.terminate()
    await sidecar.wait(60)
    elapsed = time.perf_counter() - started
    for writer in held:
        writer.transport.abort()
    return elapsed


async def measure(
    install: SidecarInstall, containers: int, rounds: int, workdir: Path, loop: str
) -> tuple[list[float], list[float], float]:
    port = closed_port()
    fleet = [container(f"c{i}", {"tcpSocket": {"host": "127.0.0.1", "port": port}}) for i in range(containers)]
    sidecar = await start_sidecar(fleet, workdir, flags=FLAGS, install=install, timeout=60, loop=loop)
    try:
        await asyncio.sleep(2)  # every container attempted at least once
        quiet = await starve(sidecar, rounds, scrapers=0)
        latencies = await starve(sidecar, rounds)
    finally:
        with contextlib.suppress(Exception):
            await sidecar.stop(1)
    sidecar = await start_sidecar(fleet, workdir, flags=FLAGS, install=install, timeout=60, loop=loop)
    try:
        await asyncio.sleep(2)
        shutdown = await exit_after_sigterm(sidecar)
    finally:
        await sidecar.kill()
    return quiet, latencies, shutdown


def report(label: str, latencies: list[float], shutdown: float | None) -> str:
    ms = sorted(1000 * value for value in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{label:<16}{len(ms):>8}{statistics.median(ms):>10.1f}{p99:>10.1f}{ms[-1]:>10.1f}"
        f"{sum(1 for v in ms if v > 100):>8}{'' if shutdown is None else f'{shutdown:.2f}':>12}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=CONTAINERS)
    parser.add_argument("--rounds", type=int, default=6, help=f"rounds of {SCRAPERS} new unread scrapers")
    parser.add_argument("--baseline-rev", metavar="REV", default=None)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="run --loop")
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        installs = [THIS_CHECKOUT]
        if args.baseline_rev is not None:
            installs.insert(0, install_revision(args.baseline_rev, Path(tmp) / "baseline").install)
        for install in installs:
            quiet, latencies, shutdown = asyncio.run(
                measure(install, args.containers, args.rounds, Path(tmp), args.loop)
            )
            lines.append(report(f"{install.label} quiet", quiet, None))
            lines.append(report(f"{install.label} unread", latencies, shutdown))
    print(
        f"{args.containers} containers, --loop {args.loop}, {SCRAPERS} unread scrapers"
        f" x {args.rounds} rounds of {ROUND_SECONDS}s;"
        f" /healthz every {HEALTHZ_EVERY * 1000:.0f} ms; SIGTERM with --drain-seconds 0"
    )
    print(f"{'sidecar':<16}{'healthz':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'>100ms':>8}{'exit s':>12}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
