"""The floor (benchmarks/floor_loop.py, a bare loop of raw connects) measured as the sidecar is.

    cost = await floor_cost(0.005, containers=4, seconds=1.5)   # 4 closed ports, one wake-up each 5 ms
    cost.cpu_per_container                                      # percent of one core
    samples = await floor_detection(200, interval=0.005)       # seconds, T -> the floor's "ready" line

Detection uses detection.py's trial protocol with the floor's stdout in place of the
long-poll: the port is closed, the floor says `not ready`, a random 20-80 ms later the port
starts listening at T, and the sample is T -> the arrival of the floor's `ready` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from dataclasses import dataclass

from benchmarks.detection import FLIP_DELAY_RANGE, TRIAL_TIMEOUT
from benchmarks.proc_usage import CpuMeter
from benchmarks.sidecar_process import REPO
from benchmarks.targets import TcpTargets

# As aggressive_cost.py: the interpreter's start-up is not the loop's cost.
SETTLE = 0.5


@dataclass(frozen=True, slots=True)
class FloorCost:
    containers: int
    interval_seconds: float
    cpu_percent: float  # of one core, the whole process
    attempts_per_second: float  # all ports, over the process's whole run

    @property
    def cpu_per_container(self) -> float:
        return self.cpu_percent / self.containers

    @classmethod
    def mean(cls, costs: list[FloorCost]) -> FloorCost:
        """Equal windows at one interval (rounds of an alternation) as one."""
        n = len(costs)
        return cls(costs[0].containers, costs[0].interval_seconds, sum(c.cpu_percent for c in costs) / n,
                   sum(c.attempts_per_second for c in costs) / n)


class FloorProcess:
    """benchmarks.floor_loop as a subprocess, its transition lines read as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, ports: list[int], *, interval: float, loop: str) -> FloorProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.floor_loop", "--interval", repr(interval), "--loop", loop,
            *(str(p) for p in ports),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, timeout: float = TRIAL_TIMEOUT) -> tuple[str, float]:
        """The next line and perf_counter() at its arrival."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.proc.stdout.readline()
        arrived = time.perf_counter()
        if not raw:
            raise RuntimeError(f"the floor loop exited ({await self.proc.wait()})")
        return raw.decode().strip(), arrived

    async def expect(self, port: int, state: str) -> float:
        text, arrived = await self.line()
        if text != f"{port} {state}":
            raise RuntimeError(f"floor loop said {text!r}, expected {port} {state}")
        return arrived

    async def stop(self) -> float:
        """SIGTERM; its attempts per second over its whole run (NaN if it said nothing)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        rate = float("nan")
        with contextlib.suppress(TimeoutError, RuntimeError):
            while True:
                text, _ = await self.line(timeout=5.0)
                if text.startswith("attempts "):
                    _, attempts, _, seconds = text.split()
                    rate = int(attempts) / float(seconds)
                    break
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        return rate


async def floor_cost(interval: float, *, containers: int, seconds: float, loop: str = "auto") -> FloorCost:
    """CPU of the floor loop against `containers` closed ports (bound by no one, never listening)."""
    targets = await TcpTargets.start()
    names = [f"never{i}" for i in range(containers)]
    for name in names:
        await targets.add(name, ready=False)
    floor = await FloorProcess.start([targets.port(n) for n in names], interval=interval, loop=loop)
    try:
        for name in names:
            await floor.expect(targets.port(name), "not ready")
        await asyncio.sleep(SETTLE)
        meter = CpuMeter(floor.pid)
        await asyncio.sleep(seconds)
        cpu = meter.percent()
    finally:
        rate = await floor.stop()
        await targets.close()
    return FloorCost(containers, interval, cpu, rate)


async def floor_detection(trials: int, *, interval: float, loop: str = "auto") -> list[float]:
    targets = await TcpTargets.start()
    await targets.add("app", ready=False)
    port = targets.port("app")
    floor = await FloorProcess.start([port], interval=interval, loop=loop)
    samples: list[float] = []
    try:
        await floor.expect(port, "not ready")
        for _ in range(trials):
            await asyncio.sleep(random.uniform(*FLIP_DELAY_RANGE))
            flipped = time.perf_counter()
            await targets.set_ready("app", True)
            samples.append(await floor.expect(port, "ready") - flipped)
            await targets.set_ready("app", False)
            await floor.expect(port, "not ready")
    finally:
        await floor.stop()
        await targets.close()
    return samples
