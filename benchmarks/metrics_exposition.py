"""What one /metrics answer costs: today's handler against the ways prometheus_client could serve it.

The same registry (8 containers, 2 with routed checks, every series moved) is rendered by each
variant in turn, round after round (alternated, so drift on a shared machine hits all alike);
each round's time per answer is kept and the medians are printed with their ratio to the first
variant, the handler as it was before negotiation (plain `generate_latest`):

    python -m benchmarks.metrics_exposition [--rounds 30] [--calls 200]

Variants: `before` (the handler before OpenMetrics and gzip: text, no headers read), `plain`
(today's handler, a scrape without Accept or Accept-Encoding, as curl sends), `prometheus`
(today's handler with the headers Prometheus sends: it takes the text format too, so it gets that,
gzipped at GZIP_LEVEL), `openmetrics-only` (today's handler to a scraper that takes only
OpenMetrics, gzip accepted), and
prometheus_client's own ways of building the body: `text+gzip9` (its `_bake_output`, what its
WSGI and http.server handlers do), `openmetrics`, `openmetrics+gzip6` (its aiohttp handler, which
leaves compression to aiohttp: zlib's default level 6).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.model import ContainerSpec
from sidecar.runtime.state import AggregateState
from sidecar.serve.http_server import Request
from sidecar.serve.http_wire import Answer
from sidecar.serve.metrics import GZIP_LEVEL, MetricsServer, ReadinessMetrics

CONTAINERS = 8  # a large pod; the exposition grows linearly with it
# The headers Prometheus 2.x sends on every scrape (scrape/scrape.go, scrapeAcceptHeader).
PROMETHEUS_FIELDS = (
    b"Host: 10.0.0.1:8552\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"X-Prometheus-Scrape-Timeout-Seconds: 10\r\n"
)
OPENMETRICS_FIELDS = (
    b"Host: 10.0.0.1:8552\r\nAccept: application/openmetrics-text;version=1.0.0\r\nAccept-Encoding: gzip\r\n"
)
PLAIN_FIELDS = b"Host: 10.0.0.1:8552\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"


def moved_registry() -> MetricsServer:
    """A sidecar's metrics with every series moved, so no bucket or child renders as a bare zero."""
    specs = [
        ContainerSpec(f"c{i}", TcpSocketSpec(port=1), liveness=TcpSocketSpec(port=1) if i < 2 else None)
        for i in range(CONTAINERS)
    ]
    state = AggregateState(specs)
    metrics = ReadinessMetrics(state, CollectorRegistry())
    for i, container in enumerate(state.containers.values()):
        for n, outcome in enumerate((Outcome.SUCCESS, Outcome.FAILURE, Outcome.WARNING) * 20):
            metrics.attempt_recorded(container, ProbeResult(outcome, "x", 0.0001 * (n + i + 1)), 0.00002 * n)
        if container.spec.routed_check("liveness") is not None:
            metrics.routed_check_done(container, "liveness", ProbeResult(Outcome.SUCCESS, "x", 0.001))
    return MetricsServer(metrics)


def _request(fields: bytes) -> Request:
    return Request(None, b"GET", b"/metrics", False, False, fields)  # type: ignore[arg-type]  # no connection


def variants(server: MetricsServer) -> dict[str, Callable[[], bytes]]:
    registry = server.registry
    plain, scrape, open_metrics = _request(PLAIN_FIELDS), _request(PROMETHEUS_FIELDS), _request(OPENMETRICS_FIELDS)

    def before() -> bytes:
        return Answer(200, generate_latest(registry), CONTENT_TYPE_LATEST).body

    def deflated(body: bytes, level: int) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return packer.compress(body) + packer.flush()

    return {
        "before": before,
        "plain": lambda: server.handle_metrics(plain).body,
        "prometheus": lambda: server.handle_metrics(scrape).body,
        "openmetrics-only": lambda: server.handle_metrics(open_metrics).body,
        "text+gzip9": lambda: gzip.compress(generate_latest(registry)),
        "openmetrics": lambda: generate_openmetrics(registry),
        "openmetrics+gzip6": lambda: deflated(generate_openmetrics(registry), 6),
    }


def measure(rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per answer, one sample per round per variant, the variants alternated."""
    ways = variants(moved_registry())
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():
        way()  # warm: first renders build caches
    for _ in range(rounds):
        for name, way in ways.items():
            start = time.perf_counter_ns()
            for _ in range(calls):
                way()
            samples[name].append((time.perf_counter_ns() - start) / calls / 1000)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="answers per variant per round")
    args = parser.parse_args(argv)
    ways = variants(moved_registry())
    sizes = {name: len(way()) for name, way in ways.items()}
    samples = measure(args.rounds, args.calls)
    base = statistics.median(samples["before"])
    print(f"{CONTAINERS} containers, {args.rounds} rounds x {args.calls} answers, gzip level {GZIP_LEVEL} in today's")
    print(f"{'variant':<20}{'median us':>10}{'p10-p90 us':>16}{'vs before':>11}{'bytes':>8}")
    for name, values in samples.items():
        deciles = statistics.quantiles(values, n=10)
        median = statistics.median(values)
        print(
            f"{name:<20}{median:>10.1f}{f'{deciles[0]:.0f}-{deciles[-1]:.0f}':>16}"
            f"{median / base:>10.2f}x{sizes[name]:>8}"
        )


if __name__ == "__main__":
    main()
