"""`inject` and `lint` wall-clock on manifests, this checkout against another revision.

    python -m benchmarks.manifest_tools --baseline-rev c438c72            # 7 alternated runs per command
    python -m benchmarks.manifest_tools --baseline-rev c438c72 --runs 11 --copies 200

Each command runs as a user runs it (`python -m sidecar inject -f FILE`, stdout discarded),
alternated run by run between `python -c pass` and the two installs, so all see the same
noise; both run from bytecode, as an installed sidecar does. The files:
tests/data/inject/gitops-deployment.yaml (one commented Deployment, with a ConfigMap), and
the same documents repeated `--copies` times in one file, for where the time per document
shows. Prints the median and the fastest run of each, and this ÷ baseline of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.baseline import install_revision
from benchmarks.sidecar_process import REPO, THIS_CHECKOUT, SidecarInstall, with_bytecode_cache

SMALL = REPO / "tests" / "data" / "inject" / "gitops-deployment.yaml"
# inject exits 0; lint 0 or 1 (1: a finding at --fail-on); anything else means the command is wrong.
EXPECTED_EXIT = {"inject": (0,), "lint": (0, 1)}
RUN_TIMEOUT = 60.0
WARM_UP_RUNS = 1  # untimed: the first run reads the files from disk and writes the bytecode


def _timed(argv: list[str], env: dict[str, str], expected: tuple[int, ...]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in expected:
        raise RuntimeError(f"{' '.join(argv[1:])} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return elapsed


def _many_copies(copies: int, directory: Path) -> Path:
    text = SMALL.read_text()
    body = text if text.endswith("\n") else text + "\n"
    path = directory / f"gitops-x{copies}.yaml"
    path.write_text("---\n".join([body] * copies))
    return path


def measure(installs: list[SidecarInstall], files: list[Path], runs: int) -> dict[tuple[str, str, str], list[float]]:
    """{(command, file name, install label): seconds per run}, with ("python -c pass", "", "") for the interpreter."""
    commands: list[tuple[tuple[str, str, str], list[str], dict[str, str], tuple[int, ...]]] = [
        (("python -c pass", "", ""), [sys.executable, "-c", "pass"], THIS_CHECKOUT.environment(), (0,))
    ]
    for path in files:
        for command in ("inject", "lint"):
            for install in installs:
                argv = [install.python, "-m", "sidecar", command, "-f", str(path)]
                if command == "inject":
                    argv += ["--image", "registry.example/readiness-sidecar:1"]
                commands.append(((command, path.name, install.label), argv, install.environment(),
                                 EXPECTED_EXIT[command]))
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key, *_ in commands}
    for run in range(WARM_UP_RUNS + runs):
        for key, argv, env, expected in commands:
            elapsed = _timed(argv, env, expected)
            if run >= WARM_UP_RUNS:
                times[key].append(elapsed)
    return times


def report(times: dict[tuple[str, str, str], list[float]], this: str, baseline: str) -> str:
    lines = [f"{'command':<8} {'file':<28} {'install':<10} {'median ms':>10} {'min ms':>8} {'this/base':>10}"]
    for (command, name, label), samples in times.items():
        ratio = ""
        if label == this:
            base = times[(command, name, baseline)]
            ratio = f"{statistics.median(samples) / statistics.median(base):.2f}x"
        lines.append(f"{command:<8} {name:<28} {label:<10} {statistics.median(samples) * 1000:>10.0f} "
                     f"{min(samples) * 1000:>8.0f} {ratio:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="the git revision to compare against")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command and install")
    parser.add_argument("--copies", type=int, default=100, help="documents' copies in the large file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="manifest-tools-") as scratch:
        work = Path(scratch)
        baseline = install_revision(args.baseline_rev, work)
        print(f"baseline {args.baseline_rev} ({baseline.commit[:12]}) installed in {baseline.install_seconds:.1f} s",
              file=sys.stderr)
        installs = [with_bytecode_cache(install, work / "pycache") for install in (baseline.install, THIS_CHECKOUT)]
        files = [SMALL, _many_copies(args.copies, work)]
        lines = sum(path.read_text().count("\n") for path in files[1:])
        print(f"files: {SMALL.name}, and {args.copies} copies of it ({lines} lines)", file=sys.stderr)
        print(report(measure(installs, files, args.runs), THIS_CHECKOUT.label, baseline.install.label))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
