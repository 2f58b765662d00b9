"""The CPU of the aggressive phase: a sidecar whose containers never become ready.

    cost = await aggressive_cost("tcp", DEFAULTS, workdir, containers=4, seconds=2.0)
    cost.cpu_per_container   # percent of one core
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.detection import Variant
from benchmarks.proc_usage import CpuMeter, rss_mib
from benchmarks.prom_text import Scrape
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, container, metrics_text, start_sidecar
from benchmarks.targets import start_targets


@dataclass(frozen=True, slots=True)
class AggressiveCost:
    containers: int
    cpu_percent: float  # of one core, whole sidecar
    attempts_per_second: float  # whole sidecar
    rss_mib: float

    @property
    def cpu_per_container(self) -> float:
        return self.cpu_percent / self.containers

    @classmethod
    def mean(cls, costs: list[AggressiveCost]) -> AggressiveCost:
        """Equal windows of one configuration (rounds of an alternation) as one."""
        n = len(costs)
        return cls(costs[0].containers, sum(c.cpu_percent for c in costs) / n,
                   sum(c.attempts_per_second for c in costs) / n, sum(c.rss_mib for c in costs) / n)


async def aggressive_cost(
    kind: str, variant: Variant, workdir: Path, *, containers: int = 4, seconds: float = 2.0,
    install: SidecarInstall = THIS_CHECKOUT,
) -> AggressiveCost:
    """CPU of a sidecar whose `containers` never become ready, inside the aggressive window."""
    targets = await start_targets(kind)
    names = [f"never{i}" for i in range(containers)]
    for name in names:
        await targets.add(name, ready=False)
    sidecar = await start_sidecar(
        [container(n, targets.probe_json(n)) for n in names], workdir,
        flags=variant.flags(), loop=variant.loop, install=install,
    )
    try:
        await asyncio.sleep(0.5)  # past start-up: imports and the first attempts are not the steady cost
        before = Scrape.parse(await metrics_text(sidecar))
        meter = CpuMeter(sidecar.pid)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        cpu = meter.percent()
        elapsed = time.monotonic() - started
        after = Scrape.parse(await metrics_text(sidecar))
        attempts = after.total("readiness_probe_total") - before.total("readiness_probe_total")
        rss = rss_mib(sidecar.pid)
    finally:
        await sidecar.stop()
        await targets.close()
    return AggressiveCost(containers, cpu, attempts / elapsed, rss)
