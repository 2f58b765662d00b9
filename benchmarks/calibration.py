"""How fast this machine is, so figures can be compared with other machines' and runs'.

    facts = await calibrate()
    facts["tcp_attempt_ms"]   # reference: ~0.1 ms for an asyncio connect+close, faster machine (docs/performance.md)
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
from typing import Any

from probes import build_probe
from probes.spec import TcpSocketSpec

TCP_ATTEMPTS = 500


def python_speed_us() -> float:
    """Best of 5 for sum(range(1000)), in microseconds: a bare interpreter-speed yardstick."""
    timer = timeit.Timer("sum(range(1000))")
    loops, _ = timer.autorange()
    return min(timer.repeat(5, loops)) / loops * 1e6


async def tcp_attempt_ms() -> float:
    """Median wall time of our tcpSocket probe against a loopback listener, on this loop."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = build_probe(TcpSocketSpec(port=port))
    samples = []
    try:
        for _ in range(TCP_ATTEMPTS):
            started = time.perf_counter()
            await probe.attempt(1.0)
            samples.append(time.perf_counter() - started)
    finally:
        server.close()
    return statistics.median(samples) * 1000


async def calibrate() -> dict[str, Any]:
    return {"python_sum_range_1000_us": round(python_speed_us(), 2), "tcp_attempt_ms": round(await tcp_attempt_ms(), 3)}
