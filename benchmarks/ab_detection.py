"""§1 ready detection of this checkout against another revision, interleaved, in one run.

    python -m benchmarks.ab_detection --baseline-rev HEAD~5 --rounds 3 --trials 40

Each round runs the same trials (tcp, http, grpc; the default loop and asyncio) first on
a git worktree of the baseline revision, then on this checkout, each in its own process
with its own code on PYTHONPATH, so the two share the machine's noise. It prints the p50
and p99 of every round and the median p50 of each side. The worktree is removed at the end.
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

# One round on one revision: the figures as JSON on stdout.
_ROUND = """
import asyncio, json, statistics, sys, tempfile
from pathlib import Path
from benchmarks.detection import DEFAULTS, DEFAULTS_ASYNCIO, sidecar_detection

async def main() -> None:
    out = {}
    with tempfile.TemporaryDirectory() as workdir:
        for variant in (DEFAULTS, DEFAULTS_ASYNCIO):
            for kind in ("tcp", "http", "grpc"):
                run = await sidecar_detection(kind, variant, int(sys.argv[1]), Path(workdir))
                ms = sorted(sample * 1000 for sample in run.samples)
                out[f"{kind}, {variant.label}"] = [statistics.median(ms), statistics.quantiles(ms, n=100)[98]]
    print(json.dumps(out))

asyncio.run(main())
"""


def _round(tree: Path, trials: int) -> dict[str, list[float]]:
    done = subprocess.run(
        [sys.executable, "-c", _ROUND, str(trials)], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=True,
    )
    figures: dict[str, list[float]] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="the git revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40, help="trials per probe type and loop, per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ab-baseline-") as scratch:
        baseline = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline_rev],
                       check=True, capture_output=True)
        try:
            sides: dict[str, list[dict[str, list[float]]]] = {"baseline": [], "this": []}
            for number in range(1, args.rounds + 1):
                for side, tree in (("baseline", baseline), ("this", REPO)):
                    sides[side].append(_round(tree, args.trials))
                    print(f"round {number} {side}: " + json.dumps(
                        {k: [round(v, 2) for v in p] for k, p in sides[side][-1].items()}), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    print(f"\nmedian p50 of {args.rounds} rounds x {args.trials} trials, ms:"
          f" baseline {args.baseline_rev} | this | ratio")
    for key in sides["this"][0]:
        before = statistics.median(r[key][0] for r in sides["baseline"])
        after = statistics.median(r[key][0] for r in sides["this"])
        print(f"  {key:28} {before:6.2f} | {after:6.2f} | {after / before:4.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
