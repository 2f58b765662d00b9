"""The floor under the sidecar's not-ready cost: a bare loop doing the least a tcpSocket probe can.

    python -m benchmarks.floor_loop --interval 0.005 --loop auto 12001 12002 12003 12004

One wake-up every `--interval` (a fixed delay after the round, as the sidecar's schedule),
and per port a raw connect: a non-blocking socket, connect_ex, the SO_ERROR read that tells
refused from connected, close. No sidecar or probes code, no futures, tasks or timeouts:
what is left is the loop's wake-up and the kernel's connect. It prints `PORT ready` or
`PORT not ready` whenever a port's answer changes (the first round prints every port), so
a driver can time detection from the line's arrival; on SIGTERM it prints
`attempts N seconds S` and exits.

Only the standard library and uvloop: nothing here may import the sidecar.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import socket
import sys
import time

LOOPBACK = "127.0.0.1"


def connects(port: int) -> bool:
    """One raw connect to 127.0.0.1:port: True if something listens there."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex((LOOPBACK, port))
        if code == errno.EINPROGRESS:  # loopback answers within the call; SO_ERROR says how
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return code == 0
    finally:
        sock.close()


async def probe_forever(ports: list[int], interval: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    seen: dict[int, bool | None] = dict.fromkeys(ports)
    attempts, started = 0, time.monotonic()
    while not stop.is_set():
        for port in ports:
            ready = connects(port)
            if ready != seen[port]:
                seen[port] = ready
                sys.stdout.write(f"{port} {'ready' if ready else 'not ready'}\n")
                sys.stdout.flush()
        attempts += len(ports)
        await asyncio.sleep(interval)
    print(f"attempts {attempts} seconds {time.monotonic() - started:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, required=True, help="seconds between wake-ups")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="as the sidecar's --loop: auto is uvloop when installed")
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    loop_factory = None
    if args.loop != "asyncio":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if args.loop == "uvloop":
                raise
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(probe_forever(args.ports, args.interval))


if __name__ == "__main__":
    main()
