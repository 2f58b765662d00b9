"""What recording one attempt's metrics costs, next to the attempt itself.

attempt_recorded runs on every probe attempt, at up to hundreds per second per
container, so it must cost far less than the cheapest probe: a TCP connect+close
on loopback. Both are measured in the same run, on the same machine:

    python benchmarks/metrics_overhead.py [--calls 200000] [--probes 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from probes import build_probe
from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.model import ContainerSpec
from sidecar.runtime.state import AggregateState
from sidecar.serve.metrics import ReadinessMetrics

REPEATS = 5  # best-of, so a stray scheduler hiccup doesn't inflate either side


def _results() -> list[ProbeResult]:
    """A mix that touches several buckets and every result child."""
    outcomes = [Outcome.SUCCESS] * 6 + [Outcome.FAILURE] * 3 + [Outcome.WARNING]
    durations = [0.00008, 0.0003, 0.0012, 0.004, 0.02, 0.15, 0.6, 2.0, 0.0001, 0.00005]
    return [ProbeResult(o, "x", d) for o, d in zip(outcomes, durations, strict=True)]


def time_attempt_recorded(calls: int) -> float:
    """Best-of-REPEATS nanoseconds per ReadinessMetrics.attempt_recorded call."""
    state = AggregateState([ContainerSpec(f"c{i}", TcpSocketSpec(port=1)) for i in range(8)])
    metrics = ReadinessMetrics(state, CollectorRegistry())
    container = state.containers["c3"]
    results = _results()
    lateness = [0.00003, 0.0002, 0.0011, 0.00001, 0.004]
    record = metrics.attempt_recorded
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for i in range(calls):
            record(container, results[i % 10], lateness[i % 5])
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def time_uncached_labels(calls: int) -> float:
    """The same recording with a .labels() lookup per metric per call: what caching saves."""
    state = AggregateState([ContainerSpec("c3", TcpSocketSpec(port=1))])
    metrics = ReadinessMetrics(state, CollectorRegistry())
    results = _results()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for i in range(calls):
            result = results[i % 10]
            metrics.probe_duration.labels("c3", "tcpSocket").observe(result.duration)
            metrics.probe_attempts.labels("c3", "tcpSocket", result.outcome.value).inc()
            metrics.schedule_lateness.labels("c3").observe(0.0001)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def time_record_path(calls: int) -> tuple[float, float]:
    """ns per AggregateState.record without and with the metrics observer: the whole
    bookkeeping an attempt costs, so the metrics share of it is visible."""
    per_call = []
    for with_metrics in (False, True):
        state = AggregateState([ContainerSpec("app", TcpSocketSpec(port=1))])
        if with_metrics:
            state.observe(ReadinessMetrics(state, CollectorRegistry()))
        ok = ProbeResult(Outcome.SUCCESS, "connected", 0.0001)
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter_ns()
            for _ in range(calls):
                state.record("app", ok, 0.0)
            best = min(best, (time.perf_counter_ns() - start) / calls)
        per_call.append(best)
    return per_call[0], per_call[1]


async def time_tcp_probe(attempts: int) -> tuple[float, float]:
    """Mean and median nanoseconds of one tcpSocket attempt against a loopback listener."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = build_probe(TcpSocketSpec(port=port))
    samples: list[int] = []
    try:
        for _ in range(100):  # warm up
            await probe.attempt(timeout=1.0)
            await asyncio.sleep(0)
        for _ in range(attempts):
            start = time.perf_counter_ns()
            result = await probe.attempt(timeout=1.0)
            samples.append(time.perf_counter_ns() - start)
            # A loopback connect completes inside the call, so an attempt never yields: the
            # listener in this same loop must get its turn to accept, or its backlog fills.
            await asyncio.sleep(0)
            if not result.outcome.ok:
                raise SystemExit(f"tcp probe failed: {result.message}")
    finally:
        server.close()
        await server.wait_closed()
    return statistics.fmean(samples), statistics.median(samples)


def _loop_factory() -> tuple[object, str]:
    try:
        import uvloop

        return uvloop.new_event_loop, "uvloop"
    except ImportError:
        return None, "asyncio"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000,
                        help="attempt_recorded calls per repeat")
    parser.add_argument("--probes", type=int, default=3000, help="tcp probe attempts")
    args = parser.parse_args()

    factory, loop_name = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:  # type: ignore[arg-type]
        tcp_mean, tcp_median = runner.run(time_tcp_probe(args.probes))
    recorded = time_attempt_recorded(args.calls)
    uncached = time_uncached_labels(args.calls)
    record_bare, record_metrics = time_record_path(args.calls)

    print(f"python {sys.version.split()[0]}, loop {loop_name}")
    print(f"attempt_recorded (metrics only):     {recorded:8.0f} ns/call  (best of {REPEATS})")
    print(f"same, calling .labels() each time:   {uncached:8.0f} ns/call")
    print(f"state.record without metrics:        {record_bare:8.0f} ns/call")
    print(f"state.record with metrics observer:  {record_metrics:8.0f} ns/call")
    print(f"tcpSocket probe attempt (loopback):  {tcp_mean:8.0f} ns mean, "
          f"{tcp_median:.0f} ns median ({args.probes} attempts)")
    print(f"ratio attempt_recorded / tcp attempt: {recorded / tcp_median:.4f} "
          f"({recorded / tcp_median * 100:.2f}% of the cheapest probe)")


if __name__ == "__main__":
    main()
