"""§4 fan-out: N containers whose probes each take 50 ms.

One HTTP target serves N paths, each answering after 50 ms (503 until the flip).
"One round" is the sidecar's first round, when all N schedulers start together:
from the first probe request's arrival to the last first answer, as the target saw
them. "All ready" is T (all paths flip to 200) -> the /ready long-poll's 200.
Sequential probing would need N x 50 ms for one round.

    run = await fanout(100, workdir, steady_seconds=5)
    run.round_seconds, run.all_ready_seconds, run.steady_cpu_percent
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proc_usage import CpuMeter, rss_mib
from benchmarks.ready_client import LongPoll
from benchmarks.sidecar_process import REPO, THIS_CHECKOUT, SidecarInstall, container, start_sidecar
from benchmarks.targets import HttpTargets

PROBE_SECONDS = 0.050
ROUND_TIMEOUT = 60.0
# After the first round the sidecar keeps probing aggressively for a moment before the flip,
# so the flip meets the schedule in its running state, not its start-up burst.
BEFORE_FLIP = 0.3
SETTLE_AFTER_READY = 1.5  # the ready transitions' log lines and first steady ticks pass


@dataclass(frozen=True, slots=True)
class FanoutRun:
    containers: int
    round_seconds: float
    # First arrival to last arrival of the first round's requests: how long starting N
    # attempts takes, the part of a round that grows with N.
    start_spread_seconds: float
    all_ready_seconds: float
    steady_cpu_percent: float | None  # None when not measured
    steady_rss_mib: float | None

    @property
    def sequential_round_seconds(self) -> float:
        return self.containers * PROBE_SECONDS

    @classmethod
    def mean(cls, runs: list[FanoutRun]) -> FanoutRun:
        """Runs of one N (rounds of an alternation) as one: the mean of each figure."""

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return sum(known) / len(known) if known else None

        n = len(runs)
        return cls(
            runs[0].containers, sum(r.round_seconds for r in runs) / n, sum(r.start_spread_seconds for r in runs) / n,
            sum(r.all_ready_seconds for r in runs) / n, mean([r.steady_cpu_percent for r in runs]),
            mean([r.steady_rss_mib for r in runs]),
        )


@dataclass(frozen=True, slots=True)
class FanoutFloor:
    """One round of N GETs started at once by a bare client (benchmarks/fanout_client.py),
    on the same target: what the target and the machine allow, with no sidecar."""

    containers: int
    round_seconds: float
    start_spread_seconds: float


async def fanout_floor(n: int) -> FanoutFloor:
    targets = await HttpTargets.start(delay=PROBE_SECONDS)
    try:
        for i in range(n):
            await targets.add(f"c{i}", ready=False)
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.fanout_client", str(targets.port), str(n), cwd=REPO
        )
        try:
            async with asyncio.timeout(ROUND_TIMEOUT):
                await targets.all_first_requests.wait()
                await client.wait()
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
        arrivals = [arrived for arrived, _ in targets.first_request.values()]
        answers = [answered for _, answered in targets.first_request.values()]
    finally:
        await targets.close()
    return FanoutFloor(n, max(answers) - min(arrivals), max(arrivals) - min(arrivals))


async def fanout(
    n: int, workdir: Path, *, steady_seconds: float = 0.0, install: SidecarInstall = THIS_CHECKOUT
) -> FanoutRun:
    targets = await HttpTargets.start(delay=PROBE_SECONDS)
    names = [f"c{i}" for i in range(n)]
    for name in names:
        await targets.add(name, ready=False)
    sidecar = await start_sidecar([container(name, targets.probe_json(name)) for name in names], workdir,
                                  install=install)
    try:
        async with asyncio.timeout(ROUND_TIMEOUT):
            await targets.all_first_requests.wait()
        arrivals = [arrived for arrived, _ in targets.first_request.values()]
        answers = [answered for _, answered in targets.first_request.values()]
        round_seconds = max(answers) - min(arrivals)
        spread = max(arrivals) - min(arrivals)

        await asyncio.sleep(BEFORE_FLIP)
        poll = await LongPoll.open(sidecar.health_port, "/ready?wait=120s")
        await asyncio.sleep(0.05)
        flipped = time.perf_counter()
        for name in names:
            await targets.set_ready(name, True)
        status, arrived = await poll.result(timeout=ROUND_TIMEOUT)
        if status != 200:
            raise RuntimeError(f"fan-out {n}: /ready answered {status}")

        cpu = rss = None
        if steady_seconds > 0:
            await asyncio.sleep(SETTLE_AFTER_READY)
            meter = CpuMeter(sidecar.pid)
            await asyncio.sleep(steady_seconds)
            cpu, rss = meter.percent(), rss_mib(sidecar.pid)
    finally:
        await sidecar.stop()
        await targets.close()
    return FanoutRun(n, round_seconds, spread, arrived - flipped, cpu, rss)
