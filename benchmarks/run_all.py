"""Run the benchmark suite: one table on stdout, JSON in benchmarks/results/latest.json.

    python -m benchmarks                 # the full suite, about 5 minutes on 2 cores
    python -m benchmarks --quick         # a smoke run: every section, few trials
    python -m benchmarks --only detection,load
    python -m benchmarks --baseline-rev 4afabf6   # every figure before/after, about 10 minutes

Progress goes to stderr. Every figure is measured beside its baseline in the same
run; docs/performance.md explains each one. With --baseline-rev, that revision is
installed into a temporary venv (benchmarks/baseline.py) and every sidecar figure is
measured on both, alternated within its section, with this ÷ baseline beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# Exec probes fork; grpc's fork handlers only add warnings (the sidecar sets the same).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from benchmarks.baseline import Baseline, BaselineError, install_revision
from benchmarks.calibration import calibrate
from benchmarks.report import (
    describe_machine,
    load_average,
    machine_facts,
    render_markdown,
    render_table,
    write_json,
)
from benchmarks.sections import FULL, QUICK, Suite
from benchmarks.sidecar_process import THIS_CHECKOUT, with_bytecode_cache

SECTIONS = ("detection", "sweep", "start", "unready", "load", "fanout", "overhead", "uvloop")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
# Fan-out to 1000 holds a socket per probe in the sidecar and one per accepted probe here, plus
# the targets' listeners; the sidecar child inherits the limit. 8192 leaves room for both sides.
WANTED_OPEN_FILES = 8192
EXIT_BASELINE_UNUSABLE = 2


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials per figure: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the table as Markdown here (for docs/performance.md)")
    parser.add_argument("--baseline-rev", metavar="REV", default=None,
                        help="also measure this git revision's sidecar, interleaved, and give every figure "
                        "this / baseline")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(WANTED_OPEN_FILES, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _run(args: argparse.Namespace, workdir: Path, baseline: Baseline | None) -> Suite:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    bytecode = workdir / "bytecode"
    suite = Suite(
        QUICK if args.quick else FULL, workdir, progress, this=with_bytecode_cache(THIS_CHECKOUT, bytecode),
        baseline=None if baseline is None else with_bytecode_cache(baseline.install, bytecode),
    )
    suite.data["calibration"] = await calibrate()
    await suite.warm_up()
    progress("warm-up: " + ", ".join(install.label for install in suite.installs))
    # Order matters only for reuse: sweep and uvloop reuse detection's default-interval
    # trials and not-ready CPU, overhead reuses fan-out's N=100 steady figures.
    for name in SECTIONS:
        if name in args.only:
            progress(f"section {name}")
            await getattr(suite, "uvloop_detection" if name == "uvloop" else name)()
    return suite


def _command(args: argparse.Namespace) -> str:
    return ("python -m benchmarks" + (" --quick" if args.quick else "")
            + ("" if set(args.only) == set(SECTIONS) else f" --only {','.join(args.only)}")
            + (f" --baseline-rev {args.baseline_rev}" if args.baseline_rev else ""))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _raise_open_files_limit()
    facts = machine_facts()
    load_before = load_average()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="readiness-bench-") as tmp:
        baseline = None
        if args.baseline_rev is not None:
            try:
                baseline = install_revision(args.baseline_rev, Path(tmp) / "baseline")
            except BaselineError as exc:
                print(f"python -m benchmarks: {exc}", file=sys.stderr)
                return EXIT_BASELINE_UNUSABLE
            print(f"baseline {baseline.install.label} installed in {baseline.install_seconds:.1f}s: "
                  f"{baseline.install.python}", file=sys.stderr, flush=True)
        loop_factory = None
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
        # The driver's loop (targets and clients) is the same for every variant under test.
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            suite = runner.run(_run(args, Path(tmp), baseline))
    elapsed = time.monotonic() - started
    load_after = load_average()
    order = {s: i for i, s in enumerate(("1", "2", "3", "4", "5", "6"))}
    rows = sorted(suite.rows, key=lambda r: order.get(r.section, len(order)))
    calibration = suite.data.get("calibration", {})
    before_label = None if baseline is None else baseline.install.label
    compared = "" if baseline is None else (
        f"\nbaseline {baseline.commit[:12]} ({baseline.rev}), installed in {baseline.install_seconds:.1f}s; "
        f"each of its figures alternated with this checkout's, {suite.rounds} round(s) each")
    header = (f"{describe_machine(facts)}\n"
              f"calibration: sum(range(1000)) {calibration.get('python_sum_range_1000_us')} us, "
              f"tcp probe attempt {calibration.get('tcp_attempt_ms')} ms (~0.1 ms expected on a faster machine)\n"
              f"profile {suite.profile.name}, {elapsed:.0f}s; load average before {load_before}, after {load_after}"
              f"{compared}")
    print(header)
    print(render_table(rows, before_label))
    if args.markdown is not None:
        args.markdown.write_text(header.replace("\n", "  \n") + "\n\n" + render_markdown(rows, before_label) + "\n")
    document = {
        "command": _command(args),
        "machine": facts,
        "driver_loop": "uvloop" if loop_factory is not None else "asyncio",
        "profile": suite.profile,
        "elapsed_seconds": elapsed,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sections": suite.data,
    }
    if baseline is not None:
        document["baseline"] = {
            "rev": baseline.rev, "commit": baseline.commit, "install_seconds": baseline.install_seconds,
            "rounds_per_figure": suite.rounds, "sections": suite.baseline_data,
            "this_over_baseline": suite.before_after,
        }
    write_json(args.output, document, rows)
    print(f"JSON: {args.output}", file=sys.stderr)
    return 0
