"""CPU, wall time and memory of one grpc probe attempt, this checkout against a revision, in one run.

    python -m benchmarks.grpc_attempt                       # against --baseline-rev bcbaa1d
    python -m benchmarks.grpc_attempt --baseline-rev REV --rounds 3 --attempts 300

The target is a grpcio health server (the reference servicer, SERVING) in a process of its
own, so its CPU is not counted. Each side is a fresh interpreter that imports only its own
`probes.grpc_health` (benchmarks.baseline installs the revision) and makes `--attempts`
attempts after 20 warm-up ones: CPU per attempt (process_time, every thread of it, the
kernel's connect and close included), wall time per attempt, and the RSS the probe's
imports and attempts leave. Rounds alternate the sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.baseline import install_revision
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall

# The last revision whose grpc probe built a grpcio channel per attempt.
DEFAULT_BASELINE = "bcbaa1d"

_TARGET = """
import asyncio
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

async def main():
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""

_SIDE = """
import asyncio, json, sys, time
import uvloop
from probes.grpc_health import GrpcHealthProbe
from probes.spec import GrpcSpec

async def main(port, attempts):
    probe = GrpcHealthProbe(GrpcSpec(port=port))
    for _ in range(20):
        await probe.attempt(1.0)
    cpu, wall = time.process_time(), time.monotonic()
    messages = set()
    for _ in range(attempts):
        messages.add((await probe.attempt(1.0)).message)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * 4096 / 2**20
    print(json.dumps({"cpu_us": 1e6 * cpu / attempts, "wall_us": 1e6 * wall / attempts, "rss_mib": rss,
                      "messages": sorted(messages)}))

uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def _side(install: SidecarInstall, port: int, attempts: int) -> dict[str, float]:
    done = subprocess.run([install.python, "-c", _SIDE, str(port), str(attempts)], env=install.environment(),
                          capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=300)
    args = parser.parse_args(argv)
    target = subprocess.Popen([sys.executable, "-c", _TARGET], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        port = int(target.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="grpc-attempt-") as scratch:
            baseline = install_revision(args.baseline_rev, Path(scratch)).install
            sides = {args.baseline_rev: baseline, "this": THIS_CHECKOUT}
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in sides}
            for number in range(args.rounds):
                order = list(sides.items()) if number % 2 == 0 else list(reversed(sides.items()))
                for label, install in order:
                    runs[label].append(figures := _side(install, port, args.attempts))
                    print(f"round {number + 1} {label}: " + json.dumps(figures), flush=True)
    finally:
        target.kill()
        target.wait()
    print(f"\nmedian of {args.rounds} rounds x {args.attempts} attempts: {args.baseline_rev} | this | this / before")
    for key, unit in (("cpu_us", "us CPU"), ("wall_us", "us wall"), ("rss_mib", "MiB RSS")):
        before = statistics.median(r[key] for r in runs[args.baseline_rev])
        after = statistics.median(r[key] for r in runs["this"])
        print(f"  {unit:8} {before:8.1f} | {after:8.1f} | {after / before:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
