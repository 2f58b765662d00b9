"""§1 ready-detection latency of a real sidecar, for any variant of its settings.

A trial: flip the target to not ready, wait until /ready says 503, hold a new
/ready?wait= long-poll, sleep a random 20-80 ms (so the flip lands at a random
phase of the probe schedule), flip the target ready at T, and time T -> the
long-poll's 200.

    run = await sidecar_detection("tcp", DEFAULTS, trials=200, workdir=tmp)
    run.samples   # seconds, one per trial

The baselines live beside it: kubelet_baseline.py, and this module's QUEUE_PROXY variant.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.proc_usage import has_loaded
from benchmarks.ready_client import LongPoll, close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, SidecarProcess, container, start_sidecar
from benchmarks.targets import Targets, start_targets

# The steady period only paces probing while ready, which a trial never measures; at
# 10 ms (not 1 s) the flip back to not ready, each trial's set-up, takes ~20 ms, not ~500.
TRIAL_STEADY_PERIOD = "10ms"
# The flip lands this long after the long-poll is held: wider than the 50 ms
# baseline interval, so every phase of every schedule is sampled.
FLIP_DELAY_RANGE = (0.020, 0.080)
# While waiting for 503 before a trial: fine enough not to stretch the run.
SETUP_POLL_INTERVAL = 0.002
LONG_POLL = "/ready?wait=30s"
TRIAL_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Variant:
    """A sidecar configuration under test."""

    label: str
    loop: str = "auto"  # READINESS_SIDECAR_LOOP
    interval: str | None = None  # --aggressive-interval; None keeps the default
    timeout: str | None = None  # --aggressive-timeout

    def flags(self) -> tuple[str, ...]:
        flags: tuple[str, ...] = ()
        if self.interval is not None:
            flags += ("--aggressive-interval", self.interval)
        if self.timeout is not None:
            flags += ("--aggressive-timeout", self.timeout)
        return flags


DEFAULTS = Variant("defaults")
DEFAULTS_ASYNCIO = Variant("defaults, asyncio loop", loop="asyncio")
QUEUE_PROXY = Variant("queue-proxy 50ms/100ms", interval="50ms", timeout="100ms")


@dataclass(frozen=True, slots=True)
class DetectionRun:
    samples: list[float]  # seconds, T -> the long-poll's 200
    # Each sample split in two where the target can tell (http, grpc; see Targets.first_hit):
    # T -> the first probe to find the target ready, the wait for the schedule's next attempt,
    schedule_waits: list[float]
    # and the rest: that attempt's answer, the state change and the long-poll's 200.
    answer_paths: list[float]
    uvloop_loaded: bool  # what the sidecar really ran, read from its memory map

    @classmethod
    def merge(cls, runs: list[DetectionRun]) -> DetectionRun:
        """Runs of one variant (rounds of an alternation) as one; uvloop only if every run had it."""
        return cls(
            [s for r in runs for s in r.samples], [w for r in runs for w in r.schedule_waits],
            [a for r in runs for a in r.answer_paths], all(r.uvloop_loaded for r in runs),
        )


async def sidecar_detection(
    kind: str, variant: Variant, trials: int, workdir: Path, *, steady_period: str | None = TRIAL_STEADY_PERIOD,
    install: SidecarInstall = THIS_CHECKOUT,
) -> DetectionRun:
    """`steady_period` None keeps the sidecar's 1 s: each trial then waits ~0.5 s to turn unready."""
    targets = await start_targets(kind)
    await targets.add("app", ready=False)
    sidecar = await start_sidecar(
        [container("app", targets.probe_json("app"))], workdir,
        flags=(*variant.flags(), *(("--steady-period", steady_period) if steady_period else ())), loop=variant.loop,
        install=install,
    )
    session = new_session()
    samples: list[float] = []
    waits: list[float] = []
    paths: list[float] = []
    try:
        for _ in range(trials):
            sample, wait = await _one_trial(targets, sidecar, session)
            samples.append(sample)
            if wait is not None:
                waits.append(wait)
                paths.append(sample - wait)
        uvloop_loaded = has_loaded(sidecar.pid, "uvloop")
    except Exception as exc:
        log = "".join(list(sidecar.log)[-10:])
        raise RuntimeError(f"{kind} {variant.label} ({install.label}): {exc!r}\n{log}") from exc
    finally:
        await close_quietly(session)
        await sidecar.stop()
        await targets.close()
    return DetectionRun(samples, waits, paths, uvloop_loaded)


async def _one_trial(
    targets: Targets, sidecar: SidecarProcess, session: aiohttp.ClientSession
) -> tuple[float, float | None]:
    await targets.set_ready("app", False)
    await wait_for_status(session, sidecar.base + "/ready", 503, interval=SETUP_POLL_INTERVAL, timeout=TRIAL_TIMEOUT)
    poll = await LongPoll.open(sidecar.health_port, LONG_POLL)
    await asyncio.sleep(random.uniform(*FLIP_DELAY_RANGE))
    if poll.answered:
        poll.close()
        raise RuntimeError("the long-poll answered before the target was made ready")
    flipped = time.perf_counter()
    await targets.set_ready("app", True)
    status, arrived = await poll.result(timeout=TRIAL_TIMEOUT)
    if status != 200:
        raise RuntimeError(f"long-poll answered {status} after the flip")
    hit = targets.first_hit.get("app")
    return arrived - flipped, None if hit is None else hit - flipped
