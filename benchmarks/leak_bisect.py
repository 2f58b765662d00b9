"""Which hostile targets, servers and loop make the sidecar's RSS grow: a bisection of the leak soak.

    python -m benchmarks.leak_bisect                                   # every hostile kind, both loops
    python -m benchmarks.leak_bisect --cases http grpc exec tcp        # one row per group
    python -m benchmarks.leak_bisect --cases all --servers on off --scrape off on
    python -m benchmarks.leak_bisect --cases tls_stall --loops uvloop --env MALLOC_ARENA_MAX=2 --trim

Each row starts the real sidecar (`run`, as tests/reliability/test_leaks.py does: 50 ms
timeouts, a 1 ms aggressive interval, no widening) against a subset of the hostile fleet
(tests/reliability/hostile.py), with the gRPC and metrics servers on or off and, with
`--scrape on`, a client asking for /metrics every 100 ms. /status is polled at 5 Hz in
every row (that is how attempts are counted, as in the soak). After `--warmup` attempts
it takes RSS, then again after each of two windows of `--window` attempts (each bounded
by `--window-seconds`), and prints the growth per attempt in each window. A leak grows
the same in both windows; an allocator's high-water mark or fragmentation grows in the
first and stops in the second. The ratio is to the same cases and servers under asyncio,
measured in the same run (`--loops` must include asyncio for it).

`--cases` takes groups: all, http (the httpGet cases, TLS included), http-plain, https, grpc,
exec, tcp (tcpSocket at a port that accepts and never reads, and at one that refuses), or a
comma-separated list of hostile case names or fleet listener names (tls_stall, garbage, ...);
`GROUP*K` makes K containers of each (https*10: ten at the stalling TLS peer).
`--trim` calls glibc's malloc_trim(0) in the sidecar through gdb after the second window
and prints what RSS that gives back: memory the allocator held free, not live objects.
`--env K=V` passes allocator settings (MALLOC_ARENA_MAX=2, MALLOC_TRIM_THRESHOLD_=...) to the sidecar.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.baseline import install_revision
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall
from tests.reliability import procfs
from tests.reliability.hostile import ALL_CASES, EXEC_CASES, GRPC_CASES, HTTP_CASES, HostileFleet
from tests.reliability.running import LOOPS, RunningSidecar

TIMEOUT = "50ms"  # as the soak's: a hanging target costs 50 ms per attempt
STATUS_EVERY = 0.2  # seconds; the soak polls /status this often
SCRAPE_EVERY = 0.1  # seconds between /metrics requests with --scrape on
RSS_SAMPLES = 5  # the lowest of a short burst: an attempt in flight can hold a buffer for a moment
DEFAULT_WARMUP = 2000  # attempts before the first figure: every code path has run, caches are full
DEFAULT_WINDOW = 4000  # attempts per window: a 1.4 KB/attempt leak is 5.6 MB in each, far above noise
# B/attempt: second windows of the same row spread this much from run to run (-33..+65 here), so a
# ratio to an asyncio figure below it is noise over noise.
NOISE_FLOOR = 100.0
HOG_LIMIT = 600  # seconds: a hog left behind stops by itself
DEFAULT_WINDOW_SECONDS = 20.0  # bound on one window: 2 shared cores; exec-only rows are slow

GROUPS = {
    "all": ALL_CASES,
    "http": HTTP_CASES,
    "http-plain": tuple(case for case in HTTP_CASES if case.scheme == "http"),
    "https": tuple(case for case in HTTP_CASES if case.scheme == "https"),
    "grpc": GRPC_CASES,
    "exec": EXEC_CASES,
}


@dataclass(frozen=True)
class Row:
    cases: str
    loop: str
    servers: bool
    scrape: bool
    env: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    row: Row
    attempts: tuple[int, int]
    seconds: tuple[float, float]
    rss: tuple[int, int, int]  # after warm-up, after window 1, after window 2
    trimmed: int | None  # RSS after malloc_trim(0)
    threads: int

    def per_attempt(self, window: int) -> float:
        return (self.rss[window + 1] - self.rss[window]) / max(1, self.attempts[window])


def probe_flags(group: str, fleet: HostileFleet, tcp_ports: tuple[int, int]) -> list[str]:
    """`--probe` flags for a --cases group."""
    options = f";timeout={TIMEOUT}"
    if group == "tcp":
        accepting, refusing = tcp_ports
        # The accepting one succeeds (the kernel completes the handshake; nobody calls accept), so it
        # is probed once a period; the refusing one fails at the aggressive rate.
        return [
            "--probe",
            f"tcp-accepts=tcp://127.0.0.1:{accepting}{options}",
            "--probe",
            f"tcp-refused=tcp://127.0.0.1:{refusing}{options}",
        ]
    group, _, copies = group.partition("*")
    if group in GROUPS:
        cases = GROUPS[group]
    else:
        names = set(group.split(","))
        cases = tuple(case for case in ALL_CASES if case.name in names or case.server in names)
        unknown = names - {case.name for case in cases} - {case.server for case in cases}
        if unknown:
            raise SystemExit(f"leak_bisect: unknown case {sorted(unknown)[0]!r} in --cases {group!r}")
    flags = []
    for copy in range(int(copies or 1)):
        for case in cases:
            flags += ["--probe", f"{case.name}-{copy}={case.target(fleet.ports)}{options}"]
    return flags


def _rss(pid: int) -> int:
    lowest = 1 << 62
    for _ in range(RSS_SAMPLES):
        lowest = min(lowest, procfs.rss_bytes(pid))
        time.sleep(0.02)
    return lowest


def _malloc_trim(pid: int) -> None:
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (int) malloc_trim(0)"],
        capture_output=True,
        timeout=60,
        check=False,
    )


def _start_hog(cpu: str) -> subprocess.Popen[bytes]:
    """A busy loop sharing the sidecar's CPU: attempts run late and their timeouts land mid-operation."""
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            cpu,
            sys.executable,
            "-c",
            f"import time\nend = time.monotonic() + {HOG_LIMIT}\nwhile time.monotonic() < end: pass",
        ]
    )


@contextlib.contextmanager
def _scraper(car: RunningSidecar, on: bool) -> Iterator[None]:
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(SCRAPE_EVERY):
            with contextlib.suppress(OSError):
                car.get("/metrics", car.metrics_port)

    thread = threading.Thread(target=scrape, daemon=True)
    if on:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if on:
            thread.join(5)


def _wait_for(car: RunningSidecar, attempts: int, seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    while (done := car.total_attempts()) < attempts and time.monotonic() - started < seconds:
        time.sleep(STATUS_EVERY)
    return done, time.monotonic() - started


def measure(
    row: Row,
    fleet: HostileFleet,
    tcp_ports: tuple[int, int],
    args: argparse.Namespace,
    install: SidecarInstall,
) -> Result:
    servers = ("0", "0") if row.servers else ("off", "off")
    env = dict(item.split("=", 1) for item in row.env)
    car = RunningSidecar.start(
        "--health-port", "0", "--grpc-port", servers[0], "--metrics-port", servers[1], "--drain-seconds", "0",
        "--aggressive-interval", "1ms", "--aggressive-timeout", TIMEOUT, "--aggressive-window", "0",
        *probe_flags(row.cases, fleet, tcp_ports), subreaper=True, loop=row.loop, env=env,
        python=install.python, base_env=install.environ, cpus=args.cpu,
    )  # fmt: skip
    try:
        with _scraper(car, row.scrape and row.servers):
            _wait_for(car, args.warmup, 60.0)
            start = car.total_attempts()
            rss0 = _rss(car.pid)
            first, seconds1 = _wait_for(car, start + args.window, args.window_seconds)
            rss1 = _rss(car.pid)
            second, seconds2 = _wait_for(car, first + args.window, args.window_seconds)
            rss2 = _rss(car.pid)
        threads = procfs.thread_count(car.pid)
        trimmed = None
        if args.trim:
            _malloc_trim(car.pid)
            trimmed = _rss(car.pid)
    finally:
        car.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            car.wait(15)
        car.stop()
    return Result(row, (first - start, second - first), (seconds1, seconds2), (rss0, rss1, rss2), trimmed, threads)


def _show(result: Result, baseline: Result | None) -> str:
    row = result.row
    scrape = "on" if row.scrape and row.servers else "off"
    label = f"{row.cases:<24} {row.loop:<7} servers={'on' if row.servers else 'off':<3} scrape={scrape:<3}"
    label += f" {' '.join(row.env)}" if row.env else ""
    windows = "  ".join(
        f"w{i + 1}: {result.attempts[i]:>5} att in {result.seconds[i]:4.1f}s {result.per_attempt(i):+7.0f} B/att"
        for i in range(2)
    )
    text = f"{label}  rss {result.rss[0] / 2**20:5.1f} MiB  {windows}  threads={result.threads}"
    if result.trimmed is not None:
        given_back = (result.trimmed - result.rss[2]) / 2**20
        text += f"  after malloc_trim {result.trimmed / 2**20:5.1f} MiB ({given_back:+.1f})"
    if baseline is not None and baseline is not result:
        difference = result.per_attempt(1) - baseline.per_attempt(1)
        ratio = result.per_attempt(1) / max(NOISE_FLOOR, baseline.per_attempt(1))
        text += f"  w2 vs asyncio {difference:+.0f} B/att ({ratio:.1f}x of max(asyncio, {NOISE_FLOOR:.0f}))"
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.leak_bisect", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["all"], help="groups: all http https grpc exec tcp, or names")
    parser.add_argument("--loops", nargs="+", default=list(LOOPS), choices=("asyncio", "uvloop"))
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["on"],
        choices=("on", "off"),
        help="the gRPC and metrics servers (the health port is always on)",
    )
    parser.add_argument("--scrape", nargs="+", default=["off"], choices=("on", "off"))
    parser.add_argument("--env", nargs="*", default=[], help="K=V for the sidecar's environment")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--repeat", type=int, default=1, help="run every row this many times")
    parser.add_argument("--rev", help="run the sidecar of another revision (benchmarks/baseline.py)")
    parser.add_argument("--cpu", help="pin the sidecar to this CPU (taskset -c)")
    parser.add_argument(
        "--hog",
        action="store_true",
        help="with --cpu: a busy process on that CPU too, so timeouts cut attempts anywhere",
    )
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) through gdb at the end")
    args = parser.parse_args(argv)
    if args.trim and shutil.which("gdb") is None:
        parser.error("--trim needs gdb (apt-get install gdb)")

    accepting = socket.socket()
    accepting.bind(("127.0.0.1", 0))
    accepting.listen(4096)
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: refused at once
    tcp_ports = (accepting.getsockname()[1], refusing.getsockname()[1])
    scratch = tempfile.TemporaryDirectory(prefix="leak-bisect-")
    install = install_revision(args.rev, Path(scratch.name)).install if args.rev else THIS_CHECKOUT
    if args.rev:
        print(f"sidecar: revision {install.label}", flush=True)
    fleet = HostileFleet.start()
    hog = _start_hog(args.cpu) if args.hog and args.cpu else None
    try:
        for cases, servers, scrape, _ in itertools.product(args.cases, args.servers, args.scrape, range(args.repeat)):
            if servers == "off" and scrape == "on":
                continue  # no metrics server to scrape: the scrape=off row again
            results: dict[str, Result] = {}
            for loop in args.loops:
                row = Row(cases, loop, servers == "on", scrape == "on", tuple(args.env))
                results[loop] = measure(row, fleet, tcp_ports, args, install)
                print(_show(results[loop], results.get("asyncio")), flush=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        fleet.stop()
        accepting.close()
        refusing.close()
        scratch.cleanup()


if __name__ == "__main__":
    main()
