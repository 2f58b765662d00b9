"""§3 /ready under a wrk flood while the sidecar probes 8 containers, one of them flapping.

Placement on a 2-core machine: the server under test (sidecar or bare aiohttp) is
pinned to CPU 0; wrk (one thread: one core gives it far more than one server core
can answer) and this process, which serves the probe targets, to CPU 1. So the
server gets one core to itself, as the "on one core" reference ceiling assumes: a bare
aiohttp handler at 31k req/s (asyncio) / 39k (uvloop) on a faster machine, as
docs/performance.md records.

    run = await endpoint_load("uvloop", workdir, seconds=10, idle_seconds=3)   # 2 x 5 s per server
    run.sidecar.requests_per_second / run.bare.requests_per_second
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proc_usage import CpuMeter, has_loaded
from benchmarks.prom_text import HistogramDelta, Scrape
from benchmarks.ready_client import close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import REPO, container, metrics_text, start_sidecar
from benchmarks.targets import HttpTargets, TcpTargets
from benchmarks.wrk_runner import WrkResult, run_wrk

CONNECTIONS = 50
THREADS = 1
LATENESS = "readiness_probe_schedule_lateness_seconds"
LATE_BOUND = 0.010  # the "late by more than 10 ms"; a bucket bound of the histogram
HALVES = 2
# The flapper's target stays down, then up, for random spans: never in step with the 1 s steady period.
FLAP_DOWN = (0.10, 0.40)
FLAP_UP = (0.05, 0.20)


@dataclass(frozen=True, slots=True)
class Placement:
    server_cpus: str | None
    client_cpus: str | None

    @classmethod
    def for_this_machine(cls) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls(str(cpus[0]), ",".join(str(c) for c in cpus[1:]))

    def describe(self) -> str:
        if self.server_cpus is None:
            return "one CPU: server, wrk and targets share it"
        client = f"wrk -t{THREADS} -c{CONNECTIONS} and targets on CPU {self.client_cpus}"
        return f"server on CPU {self.server_cpus}; {client}"


@dataclass(frozen=True, slots=True)
class Jitter:
    attempts: int
    p99_upper_ms: float  # histogram bound: the p99 is at most this
    late_over_10ms: int

    @classmethod
    def of(cls, delta: HistogramDelta) -> Jitter:
        return cls(int(delta.count), delta.quantile_upper_bound(0.99) * 1000, int(delta.above(LATE_BOUND)))


@dataclass(frozen=True, slots=True)
class LoadRun:
    loop: str
    placement: str
    bare: WrkResult
    sidecar: WrkResult
    sidecar_cpu_percent: float
    jitter_idle: Jitter
    jitter_flood: Jitter
    transitions_during_flood: int
    loop_verified: bool

    @property
    def ratio(self) -> float:
        return self.sidecar.requests_per_second / self.bare.requests_per_second


async def endpoint_load(loop_name: str, workdir: Path, *, seconds: float, idle_seconds: float) -> LoadRun:
    """Each server gets `seconds` of flood in alternating halves (bare, sidecar, bare, sidecar),
    so a burst of load from other processes on a shared machine hits both alike."""
    placement = Placement.for_this_machine()
    with _pinned(placement.client_cpus):
        async with _bare_server(loop_name, placement) as bare_url:
            return await _flood_both(loop_name, placement, bare_url, workdir, seconds, idle_seconds)


@contextlib.contextmanager
def _pinned(cpus: str | None) -> Iterator[None]:
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.asynccontextmanager
async def _bare_server(loop_name: str, placement: Placement) -> AsyncIterator[str]:
    prefix = ["taskset", "-c", placement.server_cpus] if placement.server_cpus else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "benchmarks.bare_server", "--loop", loop_name,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        yield f"http://127.0.0.1:{int(line.split()[1])}/ready"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def _flood_both(
    loop_name: str, placement: Placement, bare_url: str, workdir: Path, seconds: float, idle_seconds: float
) -> LoadRun:
    tcp, http = await TcpTargets.start(), await HttpTargets.start()
    specs = []
    for i in range(4):
        await tcp.add(f"tcp{i}", ready=True)
        specs.append(container(f"tcp{i}", tcp.probe_json(f"tcp{i}")))
    for name in ("http0", "http1", "http2", "flapper"):
        await http.add(name, ready=True)
        specs.append(container(name, http.probe_json(name)))
    sidecar = await start_sidecar(specs, workdir, loop=loop_name, cpus=placement.server_cpus)
    session = new_session()
    flapper = None

    async def flood(url: str) -> WrkResult:
        # wrk takes whole seconds only.
        return await run_wrk(url, seconds=max(1, round(seconds / HALVES)), connections=CONNECTIONS, threads=THREADS,
                             cpus=placement.client_cpus)

    try:
        await wait_for_status(session, sidecar.base + "/ready?wait=10s", 200, interval=0.01, timeout=15)
        flapper = asyncio.create_task(_flap(http, "flapper"))
        idle_start = Scrape.parse(await metrics_text(sidecar))
        await asyncio.sleep(idle_seconds)
        idle_end = Scrape.parse(await metrics_text(sidecar))
        bare_halves, sidecar_halves, lateness, transitions, cpu = [], [], [], 0.0, 0.0
        for _ in range(HALVES):
            bare_halves.append(await flood(bare_url))
            before = Scrape.parse(await metrics_text(sidecar))
            meter = CpuMeter(sidecar.pid)
            sidecar_halves.append(await flood(sidecar.base + "/ready"))
            cpu += meter.percent() / HALVES
            after = Scrape.parse(await metrics_text(sidecar))
            lateness.append(HistogramDelta.between(before, after, LATENESS))
            transitions += after.total("readiness_transitions_total") - before.total("readiness_transitions_total")
        verified = has_loaded(sidecar.pid, "uvloop") == (loop_name == "uvloop")
    finally:
        if flapper is not None:
            flapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flapper
        await close_quietly(session)
        await sidecar.stop()
        await tcp.close()
        await http.close()
    return LoadRun(
        loop=loop_name,
        placement=placement.describe(),
        bare=WrkResult.combine(bare_halves),
        sidecar=WrkResult.combine(sidecar_halves),
        sidecar_cpu_percent=cpu,
        jitter_idle=Jitter.of(HistogramDelta.between(idle_start, idle_end, LATENESS)),
        jitter_flood=Jitter.of(HistogramDelta.combine(lateness)),
        transitions_during_flood=int(transitions),
        loop_verified=verified,
    )


async def _flap(targets: HttpTargets, name: str) -> None:
    while True:
        await targets.set_ready(name, False)
        await asyncio.sleep(random.uniform(*FLAP_DOWN))
        await targets.set_ready(name, True)
        await asyncio.sleep(random.uniform(*FLAP_UP))
