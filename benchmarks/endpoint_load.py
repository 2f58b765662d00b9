"""§3 /ready under a wrk flood while the sidecar probes 8 containers, one of them flapping.

Placement on a 2-core machine: the server under test (sidecar or bare aiohttp) is
pinned to CPU 0; wrk (one thread: one core gives it far more than one server core
can answer) and this process, which serves the probe targets, to CPU 1. So the
server gets one core to itself, as the "on one core" reference ceiling assumes: a bare
aiohttp handler at 31k req/s (asyncio) / 39k (uvloop) on a faster machine, as
docs/performance.md records.

    runs = await endpoint_load("uvloop", workdir, seconds=10, idle_seconds=3)   # 2 x 5 s per server
    runs["this"].sidecar.requests_per_second / runs["this"].bare.requests_per_second
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.proc_usage import CpuMeter, has_loaded
from benchmarks.prom_text import HistogramDelta, Scrape
from benchmarks.ready_client import close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import (
    REPO,
    THIS_CHECKOUT,
    SidecarInstall,
    SidecarProcess,
    container,
    metrics_text,
    start_sidecar,
)
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


async def endpoint_load(
    loop_name: str, workdir: Path, *, seconds: float, idle_seconds: float,
    installs: Sequence[SidecarInstall] = (THIS_CHECKOUT,),
) -> dict[str, LoadRun]:
    """Each server gets `seconds` of flood in alternating halves (bare, then each sidecar in turn,
    twice), so a burst of load from other processes on a shared machine hits all alike.

    With several installs (a baseline revision and this checkout), each has its own sidecar and
    targets, started together; a sidecar idles beside the one being flooded (8 containers at the
    1 s steady period, and the flapper), on the same core, the same for each. Keyed by install label.
    """
    placement = Placement.for_this_machine()
    with _pinned(placement.client_cpus):
        async with _bare_server(loop_name, placement) as bare_url:
            return await _flood_all(loop_name, placement, bare_url, workdir, seconds, idle_seconds, installs)


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


@dataclass
class _Subject:
    """One sidecar under load, its own targets and what its floods measured."""

    install: SidecarInstall
    sidecar: SidecarProcess
    http: HttpTargets
    halves: list[WrkResult] = field(default_factory=list)
    lateness: list[HistogramDelta] = field(default_factory=list)
    transitions: float = 0.0
    cpu_percent: float = 0.0


async def _start_subject(
    stack: contextlib.AsyncExitStack, install: SidecarInstall, loop_name: str, placement: Placement, workdir: Path
) -> _Subject:
    tcp, http = await TcpTargets.start(), await HttpTargets.start()
    stack.push_async_callback(tcp.close)
    stack.push_async_callback(http.close)
    specs = []
    for i in range(4):
        await tcp.add(f"tcp{i}", ready=True)
        specs.append(container(f"tcp{i}", tcp.probe_json(f"tcp{i}")))
    for name in ("http0", "http1", "http2", "flapper"):
        await http.add(name, ready=True)
        specs.append(container(name, http.probe_json(name)))
    sidecar = await start_sidecar(specs, workdir, loop=loop_name, cpus=placement.server_cpus, install=install)
    stack.push_async_callback(sidecar.stop)
    return _Subject(install, sidecar, http)


async def _flood_all(
    loop_name: str, placement: Placement, bare_url: str, workdir: Path, seconds: float, idle_seconds: float,
    installs: Sequence[SidecarInstall],
) -> dict[str, LoadRun]:
    async def flood(url: str) -> WrkResult:
        # wrk takes whole seconds only.
        return await run_wrk(url, seconds=max(1, round(seconds / HALVES)), connections=CONNECTIONS, threads=THREADS,
                             cpus=placement.client_cpus)

    async with contextlib.AsyncExitStack() as stack:
        session = new_session()
        stack.push_async_callback(close_quietly, session)
        subjects = [await _start_subject(stack, install, loop_name, placement, workdir) for install in installs]
        for subject in subjects:
            await wait_for_status(session, subject.sidecar.base + "/ready?wait=10s", 200, interval=0.01, timeout=15)
        for subject in subjects:
            flapper = asyncio.create_task(_flap(subject.http, "flapper"))
            stack.push_async_callback(_cancel, flapper)
        idle_start = [Scrape.parse(await metrics_text(s.sidecar)) for s in subjects]
        await asyncio.sleep(idle_seconds)
        idle = [
            HistogramDelta.between(start, Scrape.parse(await metrics_text(s.sidecar)), LATENESS)
            for start, s in zip(idle_start, subjects, strict=True)
        ]
        bare_halves = []
        for _ in range(HALVES):
            bare_halves.append(await flood(bare_url))
            for subject in subjects:
                before = Scrape.parse(await metrics_text(subject.sidecar))
                meter = CpuMeter(subject.sidecar.pid)
                subject.halves.append(await flood(subject.sidecar.base + "/ready"))
                subject.cpu_percent += meter.percent() / HALVES
                after = Scrape.parse(await metrics_text(subject.sidecar))
                subject.lateness.append(HistogramDelta.between(before, after, LATENESS))
                subject.transitions += (after.total("readiness_transitions_total")
                                        - before.total("readiness_transitions_total"))
        bare = WrkResult.combine(bare_halves)
        return {
            s.install.label: LoadRun(
                loop=loop_name,
                placement=placement.describe(),
                bare=bare,
                sidecar=WrkResult.combine(s.halves),
                sidecar_cpu_percent=s.cpu_percent,
                jitter_idle=Jitter.of(idle_delta),
                jitter_flood=Jitter.of(HistogramDelta.combine(s.lateness)),
                transitions_during_flood=int(s.transitions),
                loop_verified=has_loaded(s.sidecar.pid, "uvloop") == (loop_name == "uvloop"),
            )
            for s, idle_delta in zip(subjects, idle, strict=True)
        }


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _flap(targets: HttpTargets, name: str) -> None:
    while True:
        await targets.set_ready(name, False)
        await asyncio.sleep(random.uniform(*FLAP_DOWN))
        await targets.set_ready(name, True)
        await asyncio.sleep(random.uniform(*FLAP_UP))
