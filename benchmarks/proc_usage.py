"""CPU and memory of another process, read from /proc (Linux only).

CPU comes from utime+stime in /proc/<pid>/stat, which counts every thread,
exited ones included (exec probes' helper threads come and go); its unit is a
clock tick (10 ms), so windows are seconds long. A meter's window is read to the
nanosecond instead from each thread's /proc/<pid>/task/<tid>/schedstat whenever
those account for all of it (no thread exited, the ticks agree): a floor loop at
0.5% of a core is 5 ticks a second, too few to be read from ticks alone.

    meter = CpuMeter(pid)
    await asyncio.sleep(5)
    meter.percent()   # percent of one core since the meter was made
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every thread of `pid`, exited ones included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def rss_mib(pid: int) -> float:
    """Resident set size in MiB, the unit ps, top and Kubernetes limits ("60Mi") use."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def thread_cpu_ns(pid: int) -> dict[int, int] | None:
    """CPU nanoseconds of each live thread of `pid`; None if a thread vanished while being read."""
    try:
        return {int(tid): int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                for tid in os.listdir(f"/proc/{pid}/task")}
    except (FileNotFoundError, ProcessLookupError):
        return None


def has_loaded(pid: int, fragment: str) -> bool:
    """Whether a shared object whose path contains `fragment` is mapped: proof of which loop runs."""
    return fragment in Path(f"/proc/{pid}/maps").read_text()


# utime and stime are each truncated to a tick at both ends of a window.
_TICK_ROUNDING = 4 / _CLOCK_TICKS


class CpuMeter:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._threads = thread_cpu_ns(pid)
        self._user, self._system = cpu_split(pid)
        self._wall = time.monotonic()

    def used(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since the meter was made."""
        threads = thread_cpu_ns(self.pid)
        user, system = cpu_split(self.pid)
        wall = time.monotonic() - self._wall
        ticks = user - self._user + system - self._system
        if threads is not None and self._threads is not None and self._threads.keys() <= threads.keys():
            # A thread born in the window counts whole; one that came and went unseen shows as a gap.
            precise = sum(ns - self._threads.get(tid, 0) for tid, ns in threads.items()) / 1e9
            if abs(precise - ticks) <= _TICK_ROUNDING:
                return precise, wall
        return ticks, wall

    def percent(self) -> float:
        """Percent of one core used since the meter was made."""
        cpu, wall = self.used()
        return 100.0 * cpu / wall

    def split_percent(self) -> tuple[float, float]:
        """(user, system) percent of one core since the meter was made."""
        (user, system), wall = cpu_split(self.pid), time.monotonic()
        elapsed = wall - self._wall
        return 100.0 * (user - self._user) / elapsed, 100.0 * (system - self._system) / elapsed
