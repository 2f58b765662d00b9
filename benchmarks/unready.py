"""§2 unready-detection latency: the target starts failing at T; time until the sidecar says 503.

Two kinds of container run side by side in one sidecar, each with its own HTTP
target and its own trial loop: aggressive mode at the defaults (failureThreshold 3),
and kubelet semantics (periodSeconds 1, failureThreshold 3), whose bound is
failureThreshold x periodSeconds = 3 s. Each loop reads its own container's answer,
GET /ready/<container>, which is /ready for a pod of one (docs/behaviour.md#endpoints).

    result = await unready_detection(workdir, per_mode=8, seconds=15)
    result["defaults"], result["kubelet period 1s"]   # seconds, one per trial
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp

from benchmarks.ready_client import close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, SidecarProcess, container, start_sidecar
from benchmarks.targets import HttpTargets

FAILURE_THRESHOLD = 3
KUBELET_PERIOD_SECONDS = 1
# Polling /ready/<c> for the 503: a 10 ms step is 1-2% of the figures it measures.
POLL_INTERVAL = 0.010
# The flip waits a random part of a whole period after the container is ready, so it
# lands at a random phase of the 1 s schedules.
SETTLE_RANGE = (0.2, 1.2)
MODES = {
    "defaults": {"failureThreshold": FAILURE_THRESHOLD},
    "kubelet period 1s": {"periodSeconds": KUBELET_PERIOD_SECONDS, "failureThreshold": FAILURE_THRESHOLD},
}


async def unready_detection(
    workdir: Path, *, per_mode: int, seconds: float, install: SidecarInstall = THIS_CHECKOUT
) -> dict[str, list[float]]:
    targets = await HttpTargets.start()
    names = {mode: [f"{'agg' if mode == 'defaults' else 'kub'}{i}" for i in range(per_mode)] for mode in MODES}
    specs = []
    for mode, mode_names in names.items():
        for name in mode_names:
            await targets.add(name, ready=True)
            specs.append(container(name, targets.probe_json(name), **MODES[mode]))
    sidecar = await start_sidecar(specs, workdir, install=install)
    session = new_session()
    try:
        await wait_for_status(session, sidecar.base + "/ready?wait=10s", 200, interval=0.01, timeout=15)
        deadline = asyncio.get_running_loop().time() + seconds
        jobs = {
            mode: [asyncio.create_task(_trials(targets, sidecar, session, n, deadline)) for n in mode_names]
            for mode, mode_names in names.items()
        }
        return {mode: [s for job in await asyncio.gather(*tasks) for s in job] for mode, tasks in jobs.items()}
    finally:
        await close_quietly(session)
        await sidecar.stop()
        await targets.close()


async def _trials(
    targets: HttpTargets, sidecar: SidecarProcess, session: aiohttp.ClientSession, name: str, deadline: float
) -> list[float]:
    loop = asyncio.get_running_loop()
    url = f"{sidecar.base}/ready/{name}"
    samples: list[float] = []
    while loop.time() < deadline:
        await wait_for_status(session, url + "?wait=10s", 200, interval=POLL_INTERVAL, timeout=15)
        await asyncio.sleep(random.uniform(*SETTLE_RANGE))
        failing_from = time.perf_counter()
        await targets.set_ready(name, False)
        seen = await wait_for_status(session, url, 503, interval=POLL_INTERVAL, timeout=15)
        samples.append(seen - failing_from)
        await targets.set_ready(name, True)
    return samples
