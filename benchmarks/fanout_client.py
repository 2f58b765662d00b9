"""The floor under a fan-out round: a bare client that starts N GETs at once, nothing else.

    python -m benchmarks.fanout_client PORT N

One connection and one `GET /c<i>` per name, all started together on one loop, each read
to its end: what the target and the machine allow a round to be, with no sidecar in the
way. Only the standard library and uvloop: nothing here may import the sidecar.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


async def get(port: int, name: str) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(f"GET /{name} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n".encode())
    await reader.read()
    writer.close()


async def main(port: int, n: int) -> None:
    await asyncio.gather(*(get(port, f"c{i}") for i in range(n)))


if __name__ == "__main__":
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(int(sys.argv[1]), int(sys.argv[2])))
