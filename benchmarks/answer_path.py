"""The answer path: from the probe that finds a container ready to a held long-poll's 200, before and after.

    python -m benchmarks.answer_path --baseline-rev 01db939            # 3 rounds x 40 trials, 1 and 100 waiters
    python -m benchmarks.answer_path --baseline-rev 01db939 --rounds 5 --trials 60 --waiters 1,10,100
    python -m benchmarks.answer_path --baseline-rev A --after-rev B   # two revisions, not this checkout

A real `readiness-sidecar run` (the default loop, every server on) watches one httpGet
container (benchmarks.targets.HttpTargets), failureThreshold 1, steady period 10 ms so a
trial can turn it unready quickly. A trial: the target answers 503 and /ready is 503;
W raw long-polls `GET /ready?wait=30s` are opened, each on its own connection, and held;
the target flips to 200. The target stamps the first probe request that finds it ready
(`first_hit`, perf_counter in this process), and each long-poll stamps its status line
as it arrives (benchmarks.ready_client.LongPoll). The answer path is first_hit -> status
line: the target's answer, the probe reading it, the state change, the long-poll answer
written and read. The flip -> first_hit part is the aggressive interval, the same on both
sides, and is left out. With W waiters the figures are the first and the last to arrive.

The baseline is another revision installed beside this checkout (benchmarks.baseline);
the targets, clients and clock are this process's on both sides. Rounds alternate the
sides (baseline, this, baseline, this, ...), each with a fresh sidecar, so the machine's
load drifts over both. Printed: each round's medians, then every trial of a side pooled
(p50, p90) and the ratio this / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.baseline import install_revision
from benchmarks.ready_client import LongPoll, close_quietly, new_session, wait_for_status
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, container, start_sidecar
from benchmarks.targets import HttpTargets

WAIT_PATH = "/ready?wait=30s"
NAME = "app"
# After opening the long-polls, before the flip: time for the sidecar to read and hold them
# (a held one is never answered before the flip: each trial checks).
HOLD_SETTLE = 0.03
ANSWER_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Trial:
    first_ms: float  # first_hit -> the first long-poll's status line
    last_ms: float  # ... the last one's


async def _trial(
    targets: HttpTargets, port: int, base: str, waiters: int, session: aiohttp.ClientSession
) -> Trial:
    await targets.set_ready(NAME, False)
    await wait_for_status(session, base + "/ready", 503, interval=0.002, timeout=ANSWER_TIMEOUT)
    polls = [await LongPoll.open(port, WAIT_PATH) for _ in range(waiters)]
    try:
        await asyncio.sleep(HOLD_SETTLE)
        if any(poll.answered for poll in polls):
            raise RuntimeError("a long-poll was answered before the flip")
        await targets.set_ready(NAME, True)
        answers = await asyncio.gather(*(poll.result(ANSWER_TIMEOUT) for poll in polls))
    finally:
        for poll in polls:
            poll.close()
    hit = targets.first_hit[NAME]
    if hit is None or any(status != 200 for status, _ in answers):
        raise RuntimeError(f"no 200 after a hit: {[status for status, _ in answers]}, first_hit {hit}")
    arrivals = sorted(arrived for _, arrived in answers)
    return Trial((arrivals[0] - hit) * 1000, (arrivals[-1] - hit) * 1000)


async def _round(
    install: SidecarInstall, workdir: Path, trials: int, waiter_counts: list[int]
) -> dict[int, list[Trial]]:
    targets = await HttpTargets.start()
    await targets.add(NAME, ready=False)
    spec = container(NAME, targets.probe_json(NAME), failureThreshold=1)
    sidecar = await start_sidecar([spec], workdir, flags=("--steady-period", "10ms"), install=install)
    session = new_session()
    try:
        out: dict[int, list[Trial]] = {}
        for waiters in waiter_counts:
            out[waiters] = [await _trial(targets, sidecar.health_port, sidecar.base, waiters, session)
                            for _ in range(trials)]
        return out
    finally:
        await close_quietly(session)
        await sidecar.stop()
        await targets.close()


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def _compare(
    baseline: SidecarInstall, after: SidecarInstall, rounds: int, trials: int, waiter_counts: list[int]
) -> None:
    sides: dict[str, dict[int, list[Trial]]] = {"baseline": {}, "this": {}}
    with tempfile.TemporaryDirectory(prefix="answer-path-") as scratch:
        for number in range(1, rounds + 1):
            for side, install in (("baseline", baseline), ("this", after)):
                started = time.monotonic()
                figures = await _round(install, Path(scratch), trials, waiter_counts)
                shown = []
                for waiters, runs in figures.items():
                    sides[side].setdefault(waiters, []).extend(runs)
                    shown.append(f"{waiters} waiter(s): first {statistics.median(r.first_ms for r in runs):.3f} ms, "
                                 f"last {statistics.median(r.last_ms for r in runs):.3f} ms")
                print(f"round {number} {install.label:8} ({time.monotonic() - started:4.1f} s): " + "; ".join(shown),
                      flush=True)
    print(f"\nfirst_hit -> long-poll status line, ms, {rounds} rounds x {trials} trials pooled: "
          f"baseline {baseline.label} | {after.label} | ratio (p50)")
    for waiters in waiter_counts:
        for which in ("first", "last") if waiters > 1 else ("first",):
            was = [getattr(t, f"{which}_ms") for t in sides["baseline"][waiters]]
            now = [getattr(t, f"{which}_ms") for t in sides["this"][waiters]]
            label = f"{waiters} waiter(s), {which}" if waiters > 1 else "1 waiter"
            print(f"  {label:22} p50 {statistics.median(was):7.3f} | {statistics.median(now):7.3f} | "
                  f"{statistics.median(now) / statistics.median(was):4.2f}x     "
                  f"p90 {_p(was, 0.9):7.3f} | {_p(now, 0.9):7.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="the git revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40, help="trials per waiter count, per round and side")
    parser.add_argument("--waiters", default="1,100", help="long-polls held at once, comma-separated")
    parser.add_argument("--after-rev", help="a revision for the other side instead of this checkout")
    args = parser.parse_args(argv)
    waiter_counts = [int(w) for w in args.waiters.split(",")]
    with tempfile.TemporaryDirectory(prefix="answer-path-baseline-") as scratch:
        baseline = install_revision(args.baseline_rev, Path(scratch))
        after = install_revision(args.after_rev, Path(scratch)).install if args.after_rev else THIS_CHECKOUT
        print(f"baseline {args.baseline_rev} ({baseline.commit[:12]}) installed in {baseline.install_seconds:.1f} s",
              file=sys.stderr)
        compare = _compare(baseline.install, after, args.rounds, args.trials, waiter_counts)
        try:
            import uvloop
        except ImportError:
            asyncio.run(compare)
        else:
            uvloop.run(compare)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
