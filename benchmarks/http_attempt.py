"""CPU of one httpGet attempt against a listening target, before and after a change, in one run.

    python -m benchmarks.http_attempt                      # against --before-rev bcbaa1d
    python -m benchmarks.http_attempt --before-rev REV --rounds 5 --attempts 5000

The target is a real aiohttp app in a process of its own (uvloop), answering 503 on /503
and 200 on /200 with short bodies, as an app that is not ready and one that is. Each
measurement is a fresh interpreter running one side's probes/ (PYTHONPATH): this
checkout, or `--before-rev` checked out in a temporary git worktree. Per round and per
loop (uvloop, asyncio) both sides run, in alternating order (ABBA), so that drift in a
noisy machine's load falls on both. A side makes `--warmup` attempts, then `--attempts`
timed ones per status, and reports CPU (process_time: user + system, the kernel's
connect, send and close included) and wall time per attempt, and the messages it got.
The target's own CPU is not counted.
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The last revision before the fast path (probes/http_fast_path.py): asyncio streams and h11 for every response.
DEFAULT_BEFORE = "bcbaa1d"
DEFAULT_ROUNDS = 3
DEFAULT_ATTEMPTS = 3000
DEFAULT_WARMUP = 300  # every code path and allocator pool warm before the clock starts
LOOPS = ("uvloop", "asyncio")
STATUSES = ("503", "200")

# The target: aiohttp on uvloop, its port on stdout, serving until stdin closes.
_TARGET = r"""
import asyncio, sys
import uvloop
from aiohttp import web

async def not_ready(request):
    return web.Response(status=503, text="not ready")

async def ready(request):
    return web.Response(text="ok")

async def main():
    app = web.Application()
    app.router.add_get("/503", not_ready)
    app.router.add_get("/200", ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

uvloop.run(main())
"""

# One side, one loop: the probes/ on PYTHONPATH, timed per status. Prints one JSON line.
_SIDE = r"""
import asyncio, collections, gc, json, sys, time
from probes.http_get import HttpGetProbe
from probes.spec import HttpGetSpec

loop_name, port, attempts, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

async def timed(status):
    probe = HttpGetProbe(HttpGetSpec(port=port, path=f"/{status}"))
    for _ in range(warmup):
        await probe.attempt(1.0)
    messages = collections.Counter()
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(attempts):
        messages[(await probe.attempt(1.0)).message] += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us": cpu / attempts * 1e6, "wall_us": wall / attempts * 1e6, "messages": dict(messages)}

async def main():
    return {status: await timed(status) for status in ("503", "200")}

if loop_name == "uvloop":
    import uvloop
    print(json.dumps(uvloop.run(main())))
else:
    print(json.dumps(asyncio.run(main())))
"""


def _measure(tree: Path, loop: str, port: int, attempts: int, warmup: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _SIDE, loop, str(port), str(attempts), str(warmup)],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _run(before: Path, rounds: int, attempts: int, warmup: int) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    target = subprocess.Popen([sys.executable, "-c", _TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        port = int(target.stdout.readline())
        runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for number in range(rounds):
            for loop in LOOPS:
                sides = [("before", before), ("after", REPO)]
                if number % 2:
                    sides.reverse()
                for side, tree in sides:
                    measured = _measure(tree, loop, port, attempts, warmup)
                    for status in STATUSES:
                        runs.setdefault((loop, status, side), []).append(measured[status])
                    print(f"round {number + 1} {loop:7s} {side:6s} "
                          + "  ".join(f"{s}: {measured[s]['cpu_us']:6.1f} us" for s in STATUSES), flush=True)
        return runs
    finally:
        assert target.stdin is not None
        target.stdin.close()
        target.wait(10)


def _report(runs: dict[tuple[str, str, str], list[dict[str, Any]]]) -> None:
    print()
    print("| CPU per attempt | before, each round | after, each round | median, before -> after | after / before |")
    print("|---|---|---|---|---|")
    for loop in LOOPS:
        for status in STATUSES:
            before = [run["cpu_us"] for run in runs[(loop, status, "before")]]
            after = [run["cpu_us"] for run in runs[(loop, status, "after")]]
            ratio = statistics.median(after) / statistics.median(before)
            print(f"| {loop}, HTTP {status} | {' / '.join(f'{v:.1f}' for v in before)} µs "
                  f"| {' / '.join(f'{v:.1f}' for v in after)} µs "
                  f"| {statistics.median(before):.1f} -> {statistics.median(after):.1f} µs | {ratio:.2f}x |")
    print()
    for (loop, status, side), measured in sorted(runs.items()):
        messages: dict[str, int] = {}
        for run in measured:
            for message, count in run["messages"].items():
                messages[message] = messages.get(message, 0) + count
        wall = statistics.median(run["wall_us"] for run in measured)
        print(f"{loop:7s} HTTP {status} {side:6s}: wall {wall:6.1f} us per attempt (median), messages {messages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default=DEFAULT_BEFORE, help="the revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, help="timed attempts per status and side")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="http-attempt-") as scratch:
        before = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before_rev],
                       check=True, capture_output=True)
        try:
            _report(_run(before, args.rounds, args.attempts, args.warmup))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], check=False)


if __name__ == "__main__":
    main()
