"""Run `wrk --latency` and read its report.

    result = await run_wrk("http://127.0.0.1:8550/ready", seconds=10, connections=50, threads=1, cpus="1")
    result.requests_per_second, result.p99_ms
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_TOTAL = re.compile(r"(\d+) requests in")


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @classmethod
    def combine(cls, runs: list[WrkResult]) -> WrkResult:
        """Equal-length runs as one: mean rate and p50, the worst p99 (percentiles don't add)."""
        return cls(
            requests_per_second=sum(r.requests_per_second for r in runs) / len(runs),
            p50_ms=sum(r.p50_ms for r in runs) / len(runs),
            p99_ms=max(r.p99_ms for r in runs),
            requests=sum(r.requests for r in runs),
            non_2xx=sum(r.non_2xx for r in runs),
            socket_errors=sum(r.socket_errors for r in runs),
        )


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def parse_wrk(output: str) -> WrkResult:
    rps = _RPS.search(output)
    if rps is None:
        raise RuntimeError("wrk printed no Requests/sec:\n" + output)
    percentiles = {int(p): float(v) * _UNITS_MS[u] for p, v, u in _PERCENTILE.findall(output)}
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    total = _TOTAL.search(output)
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        requests=int(total.group(1)) if total else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


async def run_wrk(url: str, *, seconds: float, connections: int, threads: int, cpus: str | None) -> WrkResult:
    prefix = ["taskset", "-c", cpus] if cpus else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}:\n{output.decode(errors='replace')}")
    return parse_wrk(output.decode(errors="replace"))
