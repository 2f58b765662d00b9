"""The kubelet baseline for §1: what a kubelet polling at periodSeconds 1 would see.

    latencies = await kubelet_baseline(("tcp", "http"), per_kind=100)
    latencies["tcp"]   # seconds, T -> the first successful attempt, one per target
"""

from __future__ import annotations

import asyncio
import random
import time

from benchmarks.targets import Targets, start_targets
from probes import build_probe

# The kubelet's minimum periodSeconds and default timeoutSeconds.
KUBELET_PERIOD = 1.0
KUBELET_TIMEOUT = 1.0
# Exec workers fork this process: fifty a second keep it responsive on a busy 2-core machine.
KUBELET_EXEC_BATCH = 50


async def kubelet_baseline(kinds: tuple[str, ...], per_kind: int) -> dict[str, list[float]]:
    """A kubelet prober worker at periodSeconds 1 per target, using our probes package.

    Each worker ticks at a random phase, as the kubelet jitters its workers; its target
    flips at a random T within the first period, and the latency is T -> the end of the
    first successful attempt. Workers of one kind run together (a period-scale figure
    doesn't mind a millisecond of contention), in batches small enough that this
    process keeps its ticks: an exec attempt forks it.
    """
    results: dict[str, list[float]] = {}
    for kind in kinds:
        batch = KUBELET_EXEC_BATCH if kind == "exec" else per_kind
        samples: list[float] = []
        while len(samples) < per_kind:
            samples += await _kubelet_batch(kind, min(batch, per_kind - len(samples)))
        results[kind] = samples
    return results


async def _kubelet_batch(kind: str, count: int) -> list[float]:
    targets = await start_targets(kind)
    try:
        names = [f"k{i}" for i in range(count)]
        for name in names:
            await targets.add(name, ready=False)
        return list(await asyncio.gather(*(_kubelet_worker(targets, name) for name in names)))
    finally:
        await targets.close()


async def _kubelet_worker(targets: Targets, name: str) -> float:
    probe = build_probe(targets.handler_spec(name))
    loop = asyncio.get_running_loop()
    tick = loop.time() + random.uniform(0.0, KUBELET_PERIOD)
    flip = asyncio.create_task(_flip_later(targets, name, random.uniform(0.0, KUBELET_PERIOD)))
    while True:
        await asyncio.sleep(max(0.0, tick - loop.time()))
        result = await probe.attempt(KUBELET_TIMEOUT)
        if result.outcome.ok:
            succeeded = time.perf_counter()
            return succeeded - await flip
        tick += KUBELET_PERIOD
        while tick < loop.time():  # an overrun drops ticks, as time.Ticker does
            tick += KUBELET_PERIOD


async def _flip_later(targets: Targets, name: str, delay: float) -> float:
    await asyncio.sleep(delay)
    flipped = time.perf_counter()
    await targets.set_ready(name, True)
    return flipped
