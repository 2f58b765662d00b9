"""CPU, wall time and threads of one exec attempt: this checkout against another revision, in one run.

    python -m benchmarks.exec_attempt --baseline-rev bcbaa1d --rounds 5 --attempts 300
    python -m benchmarks.exec_attempt --baseline-rev bcbaa1d --detection 60   # + §1 ready detection

Each round runs the same worker on both sides, a git worktree of the baseline revision and
this checkout, each in a process of its own with its own `probes` on PYTHONPATH, on plain
asyncio and on uvloop; the order of the sides flips every round, so the two share the
machine's noise. A worker makes `--attempts` sequential attempts of each command (after
WARM_ATTEMPTS), then a burst of `--burst` concurrent attempts of a command that sleeps.

Each worker first grows to a sidecar's RSS (`--rss-mib`), since what a fork() costs grows
with it. Figures per attempt: CPU of the worker itself (every thread of it: asyncio's child watcher
threads included), CPU of its children (what the spawned command costs, page-table copies
of a fork() included), and the wall time of one attempt (p50, p99). The burst reports the
most threads the worker had at once, over its threads before the burst, and how many were
left a moment after it. The summary is the median over the rounds, with this ÷ baseline.

`--detection N` adds the sidecar-level figure the attempt cost feeds into: §1 ready
detection of an exec probe (benchmarks/detection.py: a file `test -f` looks for appears)
at the default aggressive interval, N trials per side and loop in each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.sidecar_process import REPO

WARM_ATTEMPTS = 30
LOOPS = ("asyncio", "uvloop")
# A running sidecar's RSS (docs/performance.md §5): a fork() copies page tables for all of it.
SIDECAR_RSS_MIB = 60

# One worker: one side, one loop. Prints its figures as one JSON line. It uses only the
# ExecProbe API both sides share, so the same text runs on any revision.
_WORKER = r"""
import asyncio, json, os, resource, statistics, sys, time

from probes.exec_command import ExecProbe
from probes.spec import ExecSpec

LOOP = sys.argv[1]
ATTEMPTS, BURST, WARM, RSS_MIB = map(int, sys.argv[2:6])
COMMANDS = {"true": ("true",), "test -f /nonexistent": ("test", "-f", "/nonexistent")}
EXPECTED = {"true": "exit 0", "test -f /nonexistent": "exec exit 1"}
BURST_COMMAND = ("sleep", "0.2")
THREAD_SAMPLE_SECONDS = 0.001


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def grow_to(target_mib: int) -> bytearray:
    # Touched memory up to about target_mib of RSS: what a fork() must copy page tables for.
    ballast = bytearray(max(0, int((target_mib - rss_mib()) * 2**20)))
    for page in range(0, len(ballast), 4096):
        ballast[page] = 1
    return ballast


async def sequential(name: str) -> dict:
    probe = ExecProbe(ExecSpec(COMMANDS[name]))
    for _ in range(WARM):
        await probe.attempt(1.0)
    walls = []
    cpu0, kids0 = time.process_time(), children_cpu()
    for _ in range(ATTEMPTS):
        result = await probe.attempt(1.0)
        walls.append(result.duration)
        assert result.message == EXPECTED[name], result
    cpu, kids = time.process_time() - cpu0, children_cpu() - kids0
    walls_ms = sorted(w * 1000 for w in walls)
    return {
        "self_cpu_us": cpu / ATTEMPTS * 1e6,
        "children_cpu_us": kids / ATTEMPTS * 1e6,
        "wall_p50_ms": statistics.median(walls_ms),
        "wall_p99_ms": statistics.quantiles(walls_ms, n=100)[98],
    }


async def burst() -> dict:
    before = threads()
    most = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, threads())
            await asyncio.sleep(THREAD_SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    probe = ExecProbe(ExecSpec(BURST_COMMAND))
    results = await asyncio.gather(*(probe.attempt(2.0) for _ in range(BURST)))
    done.set()
    await sampler
    assert all(r.message == "exit 0" for r in results), {r.message for r in results}
    await asyncio.sleep(0.05)  # a watcher thread ends just after its child: give it the time
    return {"threads_before": before, "threads_added_peak": most - before, "threads_left": threads() - before}


async def main() -> None:
    ballast = grow_to(RSS_MIB)
    figures = {name: await sequential(name) for name in COMMANDS}
    figures["burst"] = await burst()
    figures["worker"] = {"rss_mib": rss_mib(), "ballast_mib": len(ballast) / 2**20}
    figures["loop"] = type(asyncio.get_running_loop()).__module__
    print(json.dumps(figures))


if LOOP == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

# §1 ready detection of an exec probe in one side's own sidecar, as benchmarks/detection.py measures it.
_DETECTION = r"""
import asyncio, json, statistics, sys, tempfile
from pathlib import Path
from benchmarks.detection import DEFAULTS, DEFAULTS_ASYNCIO, sidecar_detection

async def main() -> None:
    variant = DEFAULTS_ASYNCIO if sys.argv[1] == "asyncio" else DEFAULTS
    with tempfile.TemporaryDirectory() as workdir:
        run = await sidecar_detection("exec", variant, int(sys.argv[2]), Path(workdir))
    ms = sorted(sample * 1000 for sample in run.samples)
    print(json.dumps({"p50_ms": statistics.median(ms), "p99_ms": statistics.quantiles(ms, n=100)[98],
                      "uvloop": run.uvloop_loaded}))

asyncio.run(main())
"""


def _in_tree(tree: Path, script: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return figures


def _flatten(figures: dict[str, object]) -> dict[str, float]:
    """{"true": {"self_cpu_us": 1.0}} -> {"true: self_cpu_us": 1.0}; numbers only."""
    flat: dict[str, float] = {}
    for group, values in figures.items():
        if isinstance(values, dict):
            flat.update({f"{group}: {key}": float(value) for key, value in values.items()
                         if isinstance(value, int | float) and not isinstance(value, bool)})
    return flat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="the git revision to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--attempts", type=int, default=300,
                        help="sequential attempts per command, side, loop and round")
    parser.add_argument("--burst", type=int, default=50, help="concurrent attempts in the thread-count burst")
    parser.add_argument("--rss-mib", type=int, default=SIDECAR_RSS_MIB,
                        help=f"grow each worker to about this RSS first (default {SIDECAR_RSS_MIB}: a sidecar's)")
    parser.add_argument("--detection", type=int, default=0, metavar="TRIALS",
                        help="also §1 ready detection of exec, TRIALS per side, loop and round (default: off)")
    args = parser.parse_args(argv)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="exec-baseline-") as scratch:
        baseline = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline_rev],
                       check=True, capture_output=True)
        try:
            for number in range(1, args.rounds + 1):
                sides = [("baseline", baseline), ("this", REPO)]
                for side, tree in sides if number % 2 else sides[::-1]:
                    for loop in LOOPS:
                        figures = _flatten(_in_tree(tree, _WORKER, loop, str(args.attempts), str(args.burst),
                                                    str(WARM_ATTEMPTS), str(args.rss_mib)))
                        if args.detection:
                            detected = _in_tree(tree, _DETECTION, loop, str(args.detection))
                            figures.update({f"detection: {k}": float(v) for k, v in detected.items()  # type: ignore[arg-type]
                                            if k != "uvloop"})
                        samples.setdefault((side, loop), []).append(figures)
                        print(f"round {number} {side:8} {loop:7} " + json.dumps(
                            {k: round(v, 2) for k, v in figures.items()}), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    print(f"\nmedian of {args.rounds} rounds ({args.attempts} attempts each, burst of {args.burst}):"
          f" baseline {args.baseline_rev} | this | this / baseline")
    for loop in LOOPS:
        print(f"  {loop}:")
        for key in samples[("this", loop)][0]:
            before = statistics.median(r[key] for r in samples[("baseline", loop)])
            after = statistics.median(r[key] for r in samples[("this", loop)])
            ratio = f"{after / before:5.2f}x" if before else "    -"
            print(f"    {key:36} {before:9.2f} | {after:9.2f} | {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
