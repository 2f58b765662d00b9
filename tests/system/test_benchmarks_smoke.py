"""The benchmark suite still runs: its quick §1 against a real sidecar, and its report parsers.

Speed is measured by `python -m benchmarks`, not asserted here; this only keeps the
benchmark code from rotting.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.proc_usage import has_loaded
from benchmarks.prom_text import HistogramDelta, Scrape
from benchmarks.sidecar_process import container, start_sidecar
from benchmarks.wrk_runner import parse_wrk
from tests.conftest import REPO, sidecar_cmd

KINDS = ("http", "tcp", "grpc", "exec")


def test_quick_detection_section_runs_and_writes_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "detection", "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ready detection tcp" in done.stdout
    document = json.loads(output.read_text())
    assert document["profile"]["name"] == "quick"
    kinds = document["sections"]["1_ready_detection"]["kinds"]
    assert set(kinds) == set(KINDS)
    for kind in KINDS:
        ours, kubelet = kinds[kind]["defaults"], kinds[kind]["kubelet_period_1s"]
        assert ours["n"] == document["profile"]["detection_trials"]
        assert 0 < ours["p50"] <= ours["p99"]
        # A kubelet polling once a second can't beat a long-poll fed by millisecond probing.
        assert ours["p50"] < kubelet["p50"], kind


HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (the test extra has it)")
def test_leak_bisection_prints_both_windows_and_the_ratio_to_asyncio() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.leak_bisect", "--cases", "tcp", "garbage*2", "--loops", "asyncio",
         "uvloop", "--warmup", "50", "--window", "100", "--window-seconds", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.splitlines()
    assert [row.split()[:2] for row in rows] == [
        ["tcp", "asyncio"], ["tcp", "uvloop"], ["garbage*2", "asyncio"], ["garbage*2", "uvloop"]
    ], done.stdout
    assert all(row.count("B/att") >= 2 for row in rows), done.stdout
    assert "w2 vs asyncio" in rows[1] and "w2 vs asyncio" in rows[3], done.stdout


@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    not HAS_UVLOOP, reason="uvloop not installed"))])
async def test_sidecar_runs_the_loop_the_benchmark_asks_for(tmp_path: Path, loop: str) -> None:
    sidecar = await start_sidecar(
        [container("app", {"tcpSocket": {"host": "127.0.0.1", "port": 1}})], tmp_path, loop=loop
    )
    try:
        assert has_loaded(sidecar.pid, "uvloop") == (loop == "uvloop")
    finally:
        await sidecar.stop()


def test_tick_latency_runs_against_both_kinds_of_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tick_latency", "--containers", "10", "--seconds", "0.5",
         "--cases", "tcp-refused,http-accepting"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tcp-refused this" in done.stdout and "http-accepting this" in done.stdout, done.stdout


def test_unknown_loop_is_a_one_line_config_error(sidecar_env: dict[str, str]) -> None:
    done = subprocess.run(
        sidecar_cmd("run", "--probe", "app=tcp://127.0.0.1:1", "--health-port", "0"),
        env={**sidecar_env, "READINESS_SIDECAR_LOOP": "trio"}, capture_output=True, text=True, timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "READINESS_SIDECAR_LOOP: 'trio' must be one of auto, uvloop, asyncio\n"


WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8550/ready
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.01ms  310.00us  12.00ms   90.00%
    Req/Sec    25.00k     1.00k   27.00k    70.00%
  Latency Distribution
     50%    1.95ms
     75%    2.10ms
     90%    2.30ms
     99%    3.50ms
  250123 requests in 10.00s, 40.00MB read
  Non-2xx or 3xx responses: 1234
Requests/sec:  25012.30
Transfer/sec:      4.00MB
"""


def test_wrk_report_is_read_in_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests_per_second == 25012.30
    assert (result.p50_ms, result.p99_ms) == (1.95, 3.50)
    assert (result.requests, result.non_2xx, result.socket_errors) == (250123, 1234, 0)


LATENESS = "readiness_probe_schedule_lateness_seconds"


def _lateness(buckets: dict[str, int]) -> str:
    lines = [f"# TYPE {LATENESS} histogram"]
    for name in ("a", "b"):
        for le, count in buckets.items():
            lines.append(f'{LATENESS}_bucket{{container="{name}",le="{le}"}} {count}')
        lines.append(f'{LATENESS}_count{{container="{name}"}} {buckets["+Inf"]}')
    return "\n".join(lines) + "\n"


def test_lateness_delta_sums_containers_and_bounds_the_p99() -> None:
    before = Scrape.parse(_lateness({"0.001": 10, "0.01": 10, "0.025": 10, "+Inf": 10}))
    after = Scrape.parse(_lateness({"0.001": 108, "0.01": 109, "0.025": 110, "+Inf": 110}))
    delta = HistogramDelta.between(before, after, LATENESS)
    assert delta.count == 200  # 100 new attempts in each of two containers
    assert delta.quantile_upper_bound(0.99) == 0.01
    assert delta.above(0.01) == 2
    assert delta.quantile_upper_bound(0.999) == 0.025
    assert math.isnan(HistogramDelta.between(after, after, LATENESS).quantile_upper_bound(0.99))
