"""§5 overhead at steady state: CPU (percent of one core) and RSS of the sidecar process.

Ready containers of the given kinds (one of each probe type, or only http and tcp), at
the defaults (steady period 1 s).
The other two figures of §5 come from elsewhere in the run: 100 ready containers
from the fan-out, and the aggressive phase from the interval sweep's 5 ms point.

    steady = await steady_overhead(workdir, seconds=6, kinds=("http", "tcp", "grpc", "exec"))
    steady.cpu_percent, steady.rss_mib
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proc_usage import CpuMeter, rss_mib
from benchmarks.ready_client import close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, container, start_sidecar
from benchmarks.targets import Targets, start_targets

SETTLE = 2.0  # start-up imports and the ready transitions are not the steady cost


@dataclass(frozen=True, slots=True)
class SteadyOverhead:
    containers: int
    kinds: tuple[str, ...]
    cpu_percent: float
    rss_mib: float

    @classmethod
    def mean(cls, runs: list[SteadyOverhead]) -> SteadyOverhead:
        """Equal windows of one configuration (rounds of an alternation) as one."""
        n = len(runs)
        return cls(runs[0].containers, runs[0].kinds, sum(r.cpu_percent for r in runs) / n,
                   sum(r.rss_mib for r in runs) / n)


async def steady_overhead(
    workdir: Path, *, seconds: float, kinds: tuple[str, ...], install: SidecarInstall = THIS_CHECKOUT
) -> SteadyOverhead:
    all_targets: list[Targets] = [await start_targets(kind) for kind in kinds]
    specs = []
    for index, targets in enumerate(all_targets):
        name = f"{targets.kind}{index}"
        await targets.add(name, ready=True)
        specs.append(container(name, targets.probe_json(name)))
    sidecar = await start_sidecar(specs, workdir, install=install)
    session = new_session()
    try:
        await wait_for_status(session, sidecar.base + "/ready?wait=10s", 200, interval=0.01, timeout=15)
        await asyncio.sleep(SETTLE)
        meter = CpuMeter(sidecar.pid)
        await asyncio.sleep(seconds)
        return SteadyOverhead(len(specs), kinds, meter.percent(), rss_mib(sidecar.pid))
    finally:
        await close_quietly(session)
        await sidecar.stop()
        for targets in all_targets:
            await targets.close()
