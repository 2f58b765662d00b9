"""CPU of one refused tcpSocket and httpGet attempt, in this process: the fast path's own figure.

    python -m benchmarks.refused_attempt      # this checkout
    cd OTHER_TREE && PYTHONPATH=. python -m benchmarks.refused_attempt   # another revision's

3,000 attempts each at a loopback port that is bound but never listens (after 200 to warm
up); prints CPU and wall microseconds per attempt and the errno of the last message.
"""

import asyncio
import json
import socket
import time

from probes.http_get import HttpGetProbe
from probes.spec import HttpGetSpec, TcpSocketSpec
from probes.tcp_socket import TcpSocketProbe


async def main() -> None:
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
    port = reserved.getsockname()[1]
    out = {}
    probes: tuple[tuple[str, TcpSocketProbe | HttpGetProbe], ...] = (
        ("tcp", TcpSocketProbe(TcpSocketSpec(port=port))),
        ("http", HttpGetProbe(HttpGetSpec(port=port))),
    )
    for name, probe in probes:
        for _ in range(200):
            await probe.attempt(1.0)
        n = 3000
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            r = await probe.attempt(1.0)
        out[name] = {
            "cpu_us": round((time.process_time() - c0) / n * 1e6, 1),
            "wall_us": round((time.perf_counter() - w0) / n * 1e6, 1),
            "errno": r.message.split(" ")[1],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
