"""§1 a start shaped like a real one: an http target's port is closed, then it answers 503, then 200.

Each trial has a fresh sidecar and a fresh port. The port stays closed for `phase_seconds`
(the app's process is still starting), then a server listens and answers 503 for
`phase_seconds` (up, not ready yet), then 200 from T on. A /ready?wait= long-poll, opened
as soon as the sidecar listens, has waited all along; the sample is T -> its status line.
The sidecar's CPU is read over each phase (the closed one from SETTLE after start-up) and
summed over the trials.

    run = await real_start(workdir, trials=6, phase_seconds=2.0)
    run.closed_cpu_percent, run.unready_cpu_percent, run.samples
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.detection import TRIAL_TIMEOUT
from benchmarks.proc_usage import CpuMeter
from benchmarks.ready_client import LongPoll
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, container, start_sidecar
from benchmarks.targets import HttpTargets, free_port_outside_ephemeral, http_probe_json

# Past the sidecar's start-up (imports done, first attempts made) before the closed phase is metered.
SETTLE = 0.3
LONG_POLL = "/ready?wait=60s"


@dataclass(frozen=True, slots=True)
class RealStartRun:
    phase_seconds: float
    closed_cpu_percent: float  # of one core, one container: port closed
    unready_cpu_percent: float  # answering 503
    samples: list[float]  # seconds, T (503 -> 200) -> the long-poll's 200
    schedule_waits: list[float]  # T -> the first probe that found it ready, as the target saw it

    @classmethod
    def merge(cls, runs: list[RealStartRun]) -> RealStartRun:
        """Rounds of an alternation as one; their phases are equally long, so CPU is the mean."""
        n = len(runs)
        return cls(runs[0].phase_seconds, sum(r.closed_cpu_percent for r in runs) / n,
                   sum(r.unready_cpu_percent for r in runs) / n, [s for r in runs for s in r.samples],
                   [w for r in runs for w in r.schedule_waits])


async def real_start(
    workdir: Path, *, trials: int, phase_seconds: float, install: SidecarInstall = THIS_CHECKOUT
) -> RealStartRun:
    closed_cpu = closed_wall = unready_cpu = unready_wall = 0.0
    samples: list[float] = []
    waits: list[float] = []
    for _ in range(trials):
        port = free_port_outside_ephemeral(set())
        sidecar = await start_sidecar([container("app", http_probe_json(port, "app"))], workdir, install=install)
        targets: HttpTargets | None = None
        try:
            poll = await LongPoll.open(sidecar.health_port, LONG_POLL)
            await asyncio.sleep(SETTLE)
            meter = CpuMeter(sidecar.pid)
            await asyncio.sleep(phase_seconds - SETTLE)
            # A request in the instant between listen() and add() gets a 404: a failure, as the 503 is.
            targets = await HttpTargets.start(port=port)
            await targets.add("app", ready=False)
            cpu, wall = meter.used()
            meter = CpuMeter(sidecar.pid)
            closed_cpu, closed_wall = closed_cpu + cpu, closed_wall + wall
            await asyncio.sleep(phase_seconds)
            if poll.answered:
                poll.close()
                raise RuntimeError("the long-poll answered before the target answered 200")
            cpu, wall = meter.used()
            unready_cpu, unready_wall = unready_cpu + cpu, unready_wall + wall
            flipped = time.perf_counter()
            await targets.set_ready("app", True)
            status, arrived = await poll.result(timeout=TRIAL_TIMEOUT)
            if status != 200:
                raise RuntimeError(f"long-poll answered {status} after the flip")
            samples.append(arrived - flipped)
            hit = targets.first_hit.get("app")
            if hit is not None:
                waits.append(hit - flipped)
        except Exception as exc:
            raise RuntimeError(f"real start ({install.label}): {exc!r}\n" + "".join(list(sidecar.log)[-10:])) from exc
        finally:
            await sidecar.stop()
            if targets is not None:
                await targets.close()
    return RealStartRun(phase_seconds, 100.0 * closed_cpu / closed_wall, 100.0 * unready_cpu / unready_wall,
                        samples, waits)
