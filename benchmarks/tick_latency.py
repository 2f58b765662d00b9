"""The kubelet's /healthz and /ready while the shared tick starts many aggressive attempts.

A real `run` with CONTAINERS aggressive containers, all on one tick (runtime.scheduler.Ticker):
tcpSocket or httpGet, against a loopback port that refuses (closed) or accepts (a target
process of its own: tcp accepts and closes, http answers 200 and closes). Every attempt is due
once a second (`--aggressive-interval 1s`, as benchmarks/metrics_starvation.py), so once a
second CONTAINERS attempts are due at the same instant. Meanwhile a client times GET /healthz
and GET /ready in turn, each on a fresh connection as the kubelet's probes are, one every
SAMPLE_EVERY, for SECONDS; it reports p50/p99/max, the sidecar's CPU and its attempts/s.

    python -m benchmarks.tick_latency [--containers 1000] [--cases tcp-refused,http-accepting]
        [--seconds 10] [--rounds 1] [--loop asyncio] [--baseline-rev 8ac9a09]

With --baseline-rev, that revision (benchmarks/baseline.py) runs each case too, the two sides
alternated within every round (which goes first swaps each round), and the ratio after/before
is printed. docs/performance.md#the-shared-tick-and-the-kubelets-probes has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline import install_revision
from benchmarks.proc_usage import CpuMeter
from benchmarks.prom_text import Scrape
from benchmarks.sidecar_process import REPO, THIS_CHECKOUT, SidecarInstall, container, metrics_text, start_sidecar
from benchmarks.stats import Summary, fmt_ms, ratio, summarize

CONTAINERS = 1000  # the size the spikes were found at (benchmarks/metrics_starvation.py)
SECONDS = 10.0
SAMPLE_EVERY = 0.005  # between one answer and the next request
SLOW = 0.02  # a sample this slow waited for something: an idle answer takes well under 1 ms
SETTLE = 2.0  # every container attempted a few times; start-up is not the steady cost
# Every attempt due once a second: one burst of CONTAINERS attempts a second, the loop not saturated.
FLAGS = ("--aggressive-interval", "1s", "--aggressive-max-interval", "1s", "--steady-period", "1s")
CASES = ("tcp-refused", "tcp-accepting", "http-refused", "http-accepting")
_REQUESTS = {
    path: f"GET {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n".encode()
    for path in ("/healthz", "/ready")
}
_HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@dataclass(frozen=True, slots=True)
class Sample:
    healthz: Summary
    ready: Summary
    healthz_slow: float  # percent of the samples over SLOW
    ready_slow: float
    cpu_percent: float  # of one core, the sidecar, over the sampling window
    attempts_per_second: float


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Accept(asyncio.Protocol):
    """tcp: accept and close; http: one 200 once the request has arrived, then close."""

    def __init__(self, http: bool) -> None:
        self.http = http

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.http:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:  # the probe's request fits one read
            self.transport.write(_HTTP_OK)  # type: ignore[attr-defined]
            self.transport.close()


async def serve_target(kind: str) -> None:
    """The accepting target, in a process of its own so its work never delays the timing client."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Accept(kind == "http"), "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def target_port(case: str):  # type: ignore[no-untyped-def]
    kind, mode = case.split("-")
    if mode == "refused":
        yield kind, closed_port()
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.tick_latency",
        "--serve-target",
        kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        yield kind, int(await asyncio.wait_for(proc.stdout.readline(), 30))
    finally:
        proc.kill()
        await proc.wait()


def handler(kind: str, port: int) -> dict[str, object]:
    if kind == "tcp":
        return {"tcpSocket": {"host": "127.0.0.1", "port": port}}
    return {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/"}}


async def get_seconds(port: int, path: str) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_REQUESTS[path])
        answer = await reader.read()
    finally:
        writer.close()
    elapsed = time.perf_counter() - started
    if not answer.startswith(b"HTTP/1.1 "):
        raise RuntimeError(f"{path}: {answer[:80]!r}")
    return elapsed


async def sample(
    install: SidecarInstall, case: str, containers: int, seconds: float, workdir: Path, loop: str
) -> Sample:
    async with target_port(case) as (kind, port):
        fleet = [container(f"c{i}", handler(kind, port)) for i in range(containers)]
        sidecar = await start_sidecar(fleet, workdir, flags=FLAGS, install=install, timeout=60, loop=loop)
        try:
            await asyncio.sleep(SETTLE)
            # The counts are read as the scrape begins; parsing 4.4 MB here takes a second or more,
            # and building it costs the sidecar's thread ~0.4 s of CPU: the meter runs between scrapes.
            counted, before = time.monotonic(), Scrape.parse(await metrics_text(sidecar))
            meter = CpuMeter(sidecar.pid)
            times: dict[str, list[float]] = {"/healthz": [], "/ready": []}
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for path, samples in times.items():
                    samples.append(await get_seconds(sidecar.health_port, path))
                    await asyncio.sleep(SAMPLE_EVERY)
            cpu, wall = meter.used()
            counted, after = time.monotonic() - counted, Scrape.parse(await metrics_text(sidecar))
            if not sidecar.alive():
                raise RuntimeError("the sidecar exited:\n" + "".join(sidecar.log))
        finally:
            with contextlib.suppress(Exception):
                await sidecar.stop(1)
            await sidecar.kill()
    attempts = after.total("readiness_probe_total") - before.total("readiness_probe_total")
    return Sample(
        summarize(times["/healthz"]),
        summarize(times["/ready"]),
        _over(times["/healthz"]),
        _over(times["/ready"]),
        100 * cpu / wall,
        attempts / counted,
    )


def _over(seconds: list[float]) -> float:
    """The share of samples over SLOW, in percent."""
    return 100 * sum(1 for value in seconds if value > SLOW) / len(seconds)


def _row(label: str, s: Sample) -> str:
    h, r = s.healthz, s.ready
    return (
        f"{label:<24}{h.n:>6}{fmt_ms(h.p50):>8}{fmt_ms(h.p99):>8}{fmt_ms(h.max):>8}{s.healthz_slow:>7.1f}"
        f"{fmt_ms(r.p50):>8}{fmt_ms(r.p99):>8}{fmt_ms(r.max):>8}{s.ready_slow:>7.1f}{s.cpu_percent:>7.1f}"
        f"{s.attempts_per_second:>7.0f}{_per_attempt(s):>8.1f}"
    )


def _per_attempt(s: Sample) -> float:
    """Microseconds of the sidecar's CPU per attempt (the /healthz and /ready answers included)."""
    return 1e4 * s.cpu_percent / s.attempts_per_second if s.attempts_per_second else math.nan


def _ratio_row(label: str, before: Sample, after: Sample) -> str:
    def r(a: float, b: float) -> str:
        return f"{ratio(a, b):.2f}x"

    bh, ah, br, ar = before.healthz, after.healthz, before.ready, after.ready
    return (
        f"{label:<24}{'':>6}{r(ah.p50, bh.p50):>8}{r(ah.p99, bh.p99):>8}{r(ah.max, bh.max):>8}{'':>7}"
        f"{r(ar.p50, br.p50):>8}{r(ar.p99, br.p99):>8}{r(ar.max, br.max):>8}{'':>7}"
        f"{r(after.cpu_percent, before.cpu_percent):>7}{'':>7}{r(_per_attempt(after), _per_attempt(before)):>8}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=CONTAINERS)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="of sampling, per case and side")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="run --loop")
    parser.add_argument("--baseline-rev", metavar="REV", default=None)
    parser.add_argument("--serve-target", choices=("tcp", "http"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_target:
        asyncio.run(serve_target(args.serve_target))
        return
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    print(
        f"{args.containers} aggressive containers on one tick, every attempt due once a second,"
        f" --loop {args.loop}; GET /healthz and /ready in turn on fresh connections,"
        f" {SAMPLE_EVERY * 1000:.0f} ms apart, {args.seconds:.0f} s per case and side, {args.rounds} round(s)"
    )
    print(f"ms; '>20' is the % of samples over {SLOW * 1000:.0f} ms; cpu % of one core; µs of CPU per attempt")
    print(
        f"{'case / sidecar':<24}{'n':>6}{'hz p50':>8}{'hz p99':>8}{'hz max':>8}{'>20':>7}{'rd p50':>8}{'rd p99':>8}"
        f"{'rd max':>8}{'>20':>7}{'cpu %':>7}{'att/s':>7}{'µs/att':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        installs = [THIS_CHECKOUT]
        if args.baseline_rev is not None:
            installs.insert(0, install_revision(args.baseline_rev, Path(tmp) / "baseline").install)
        for case in cases:
            results: dict[str, list[Sample]] = {install.label: [] for install in installs}
            for round_index in range(args.rounds):
                order = installs if round_index % 2 == 0 else installs[::-1]
                for install in order:
                    got = asyncio.run(sample(install, case, args.containers, args.seconds, Path(tmp), args.loop))
                    results[install.label].append(got)
                    print(_row(f"{case} {install.label}", got), flush=True)
            if len(installs) == 2:
                before, after = (results[install.label] for install in installs)
                for b, a in zip(before, after, strict=True):
                    print(_ratio_row(f"{case} after/before", b, a), flush=True)


if __name__ == "__main__":
    main()
