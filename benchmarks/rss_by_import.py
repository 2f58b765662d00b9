"""Resident memory that each import of `readiness-sidecar run` adds, in the order run imports them.

    python -m benchmarks.rss_by_import

One fresh interpreter; after each import, the RSS from /proc/self/statm. What a module
adds depends on what came before it (asyncio brings ssl and OpenSSL; aiohttp then reuses
them), so the order is the one `run` follows with every server on.
"""

from __future__ import annotations

import importlib
import json
import os

# (what it is for, the module that brings it)
STEPS = (
    ("asyncio (and ssl, OpenSSL)", "asyncio"),
    ("msgspec: the config schema", "msgspec"),
    ("sidecar.config.loader", "sidecar.config.loader"),
    ("aiohttp: the health port", "aiohttp.web"),
    ("sidecar.app, serve, runtime", "sidecar.app"),
    ("h11: the httpGet probe", "probes.http_get"),
    ("prometheus_client: the metrics port", "prometheus_client"),
    ("sidecar.serve.metrics", "sidecar.serve.metrics"),
    ("grpc: the gRPC port and grpc probes", "grpc"),
    ("grpc_health and protobuf", "grpc_health.v1.health_pb2"),
    ("sidecar.serve.health_grpc", "sidecar.serve.health_grpc"),
    ("uvloop, when installed", "uvloop"),
    ("yaml: manifests (-f)", "yaml"),
)


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    start = last = _rss_mib()
    rows: list[tuple[str, float | None, float]] = [("python itself", start, start)]
    for label, module in STEPS:
        try:
            importlib.import_module(module)
        except ImportError:
            rows.append((label, None, last))
            continue
        now = _rss_mib()
        rows.append((label, now - last, now))
        last = now
    for label, added, total in rows:
        shown = "not installed" if added is None else f"+{added:5.1f} MiB"
        print(f"{label:40} {shown:>14}   {total:5.1f} MiB")
    print(json.dumps({label: added for label, added, _ in rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
