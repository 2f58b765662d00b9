"""Profile a real sidecar in one benchmark scenario with py-spy, and say where its time goes.

    python -m benchmarks.profile_sidecar never-ready-tcp --seconds 6
    python -m benchmarks.profile_sidecar flood --loop asyncio

py-spy (pip install py-spy) samples the sidecar's Python stacks. The default loop here
is asyncio: its idle wait is a Python frame (selectors.select) that can be told apart
from work, where uvloop's is C that py-spy can't see into; the code being profiled is
the same on both loops. Printed: the sidecar's CPU over the window, and the
functions holding the most busy main-thread samples, inclusive of their callees. CPU and
attempts/s come from a first window without py-spy attached; the samples from a second.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.endpoint_load import CONNECTIONS, THREADS, Placement
from benchmarks.proc_usage import CpuMeter
from benchmarks.prom_text import Scrape
from benchmarks.ready_client import close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import container, metrics_text, start_sidecar
from benchmarks.targets import Targets, start_targets
from benchmarks.wrk_runner import run_wrk

# Leaf frames that mean "waiting for events", not work.
IDLE_LEAVES = ("EpollSelector.select", "select (selectors.py")
# py-spy pauses the sidecar for each sample: a modest rate keeps the profiled run close to the real one.
SAMPLE_RATE = 200
ALWAYS_PRESENT = 0.995

SCENARIOS = {
    # name: (probe kind, containers, ready?, extra flags)
    "never-ready-tcp": ("tcp", 4, False, ()),
    "never-ready-http": ("http", 4, False, ()),
    "never-ready-grpc": ("grpc", 4, False, ()),
    "never-ready-exec": ("exec", 4, False, ()),
    # The steady period is shortened so the window holds enough attempts to profile;
    # the cost per attempt is what the profile shows, and it doesn't depend on the period.
    "steady-grpc": ("grpc", 4, True, ("--steady-period", "20ms")),
    "steady-exec": ("exec", 4, True, ("--steady-period", "20ms")),
    "steady-http": ("http", 4, True, ("--steady-period", "20ms")),
    "flood": ("http", 8, True, ()),
}


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def fold(raw: str, top: int) -> tuple[int, int, list[tuple[float, str]]]:
    """(busy main-thread samples, idle ones, [(percent of busy, function)] inclusive)."""
    busy = idle = 0
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not frames[0].startswith("_run_module_as_main"):
            continue  # grpc's poller thread waits in C; the sidecar's work is on the main thread
        count = int(count_text)
        if frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        busy += count
        for name in {frame.split(" (")[0] for frame in frames}:
            inclusive[name] += count
    # Frames on every busy stack (the entry point down to the loop's run_once) say nothing.
    informative = [(name, n) for name, n in inclusive.most_common() if n < ALWAYS_PRESENT * busy]
    rows = [(100.0 * n / busy, name) for name, n in informative[:top]] if busy else []
    return busy, idle, rows


async def _run(scenario: str, seconds: float, loop: str, top: int) -> None:
    kind, count, ready, flags = SCENARIOS[scenario]
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    targets: Targets = await start_targets(kind)
    names = [f"{kind}{i}" for i in range(count)]
    for name in names:
        await targets.add(name, ready=ready)
    placement = Placement.for_this_machine() if scenario == "flood" else Placement(None, None)
    sidecar = await start_sidecar(
        [container(n, targets.probe_json(n)) for n in names], workdir,
        flags=("--aggressive-window", "10m", *flags), loop=loop, cpus=placement.server_cpus,
    )
    session = new_session()
    output = workdir / "profile.txt"
    try:
        if ready:
            await wait_for_status(session, sidecar.base + "/ready?wait=10s", 200, interval=0.01, timeout=15)
        await asyncio.sleep(0.5)
        load: asyncio.Task[object] | None = None
        if scenario == "flood":  # long enough for both windows
            load = asyncio.create_task(run_wrk(sidecar.base + "/ready", seconds=2 * seconds + 1,
                                               connections=CONNECTIONS, threads=THREADS, cpus=placement.client_cpus))
            await asyncio.sleep(0.5)
        # First window unobserved: py-spy pauses the process at every sample, which slows it.
        before = Scrape.parse(await metrics_text(sidecar))
        meter = CpuMeter(sidecar.pid)
        await asyncio.sleep(seconds)
        user, system = meter.split_percent()
        after = Scrape.parse(await metrics_text(sidecar))
        attempts = after.total("readiness_probe_total") - before.total("readiness_probe_total")
        spy = await asyncio.create_subprocess_exec(
            _py_spy(), "record", "-p", str(sidecar.pid), "-d", f"{seconds:g}", "-r", str(SAMPLE_RATE),
            "-f", "raw", "-o", str(output), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await spy.communicate()
        if load is not None:
            await load
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    finally:
        await close_quietly(session)
        await sidecar.stop()
        await targets.close()
    busy, idle, rows = fold(output.read_text(), top)
    print(f"{scenario} on {loop}: sidecar CPU {user + system:.1f}% of a core over {seconds:g}s "
          f"(user {user:.1f}%, system {system:.1f}%), {attempts / seconds:.0f} attempts/s; "
          f"main thread samples: {busy} busy, {idle} idle")
    for percent, name in rows:
        print(f"{percent:6.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--top", type=int, default=30, help="how many functions to print")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    asyncio.run(_run(args.scenario, args.seconds, args.loop, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
