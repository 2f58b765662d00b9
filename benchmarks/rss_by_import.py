"""Resident memory that each import of `readiness-sidecar run` adds, in the order run imports them.

    python -m benchmarks.rss_by_import

Two fresh interpreters, each importing the same modules in the same order: one reads the
RSS from /proc/self/statm after each import, the other the Python heap that import
allocated, from tracemalloc (which costs memory of its own, so it gets its own process).
RSS minus the Python heap is native: shared libraries, C extensions' own allocations. What
a module adds depends on what came before it (asyncio brings ssl and OpenSSL; later
imports reuse them), so the order is the one `run` follows with every server on.
`python -X importtime -m sidecar check ...` gives the time side of the same story.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

# (what it is for, the module that brings it)
STEPS = (
    ("asyncio (and ssl, OpenSSL)", "asyncio"),
    ("msgspec: the config schema", "msgspec"),
    ("sidecar.config.loader", "sidecar.config.loader"),
    ("sidecar.app: runtime, the health port's server", "sidecar.app"),
    ("h11: the httpGet probe", "probes.http_get"),
    ("prometheus_client: the metrics port", "prometheus_client"),
    ("sidecar.serve.metrics", "sidecar.serve.metrics"),
    ("h2: the gRPC port", "sidecar.serve.health_grpc"),
    ("the grpc probe", "probes.grpc_health"),
    ("uvloop, when installed", "uvloop"),
    ("yaml: manifests (-f)", "yaml"),
    ("aiohttp.web: only the webhook command", "aiohttp.web"),
)


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(heap: bool) -> list[float | None]:
    """After each step: RSS (MiB), or with `heap` the traced Python heap (MiB); None if not installed."""
    if heap:
        import tracemalloc

        tracemalloc.start()

    def now() -> float:
        return tracemalloc.get_traced_memory()[0] / 2**20 if heap else _rss_mib()

    figures: list[float | None] = [now()]
    for _, module in STEPS:
        try:
            importlib.import_module(module)
        except ImportError:
            figures.append(None)
            continue
        figures.append(now())
    return figures


def _in_fresh_interpreter(heap: bool) -> list[float | None]:
    code = f"import json; from benchmarks.rss_by_import import measure; print(json.dumps(measure({heap})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    figures: list[float | None] = json.loads(done.stdout.splitlines()[-1])
    return figures


def _added(figures: list[float | None]) -> list[float | None]:
    added: list[float | None] = [figures[0]]
    last = figures[0] or 0.0
    for figure in figures[1:]:
        added.append(None if figure is None else figure - last)
        last = figure if figure is not None else last
    return added


def main() -> int:
    rss, heap = _in_fresh_interpreter(False), _in_fresh_interpreter(True)
    labels = ["python itself", *(label for label, _ in STEPS)]
    print(f"{'import':48} {'RSS adds':>10} {'RSS total':>10} {'Python heap adds':>17}")
    for label, added, total, heap_added in zip(labels, _added(rss), rss, _added(heap), strict=True):
        if added is None or total is None:
            print(f"{label:48} {'not installed':>10}")
            continue
        heap_text = "" if heap_added is None else f"{heap_added:+.1f} MiB"
        print(f"{label:48} {added:+7.1f} MiB {total:6.1f} MiB {heap_text:>17}")
    print(json.dumps({"rss_mib": dict(zip(labels, rss, strict=True)),
                      "python_heap_mib": dict(zip(labels, heap, strict=True))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
