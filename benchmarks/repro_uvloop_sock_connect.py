"""uvloop's sock_connect resolves an IP literal on libuv's thread pool: a standalone reproducer.

    python -m benchmarks.repro_uvloop_sock_connect            # 2,000 connects per row
    python benchmarks/repro_uvloop_sock_connect.py --connects 10000

Standard library and uvloop only, loopback only. For each loop, `--connects` times: a
non-blocking socket, `loop.sock_connect(sock, ("127.0.0.1", port))` to a listener in this
process, close, accept. Then the same with connect_ex and add_writer (what probes/dial.py does).
Prints microseconds per connect and the process's threads before and after, from
/proc/self/status. On uvloop 0.23.0 sock_connect starts libuv's four pool threads and
costs a pool round trip per call: loop.pyx's sock_connect calls
`self.getaddrinfo(*address[:2], family=sock.family)` without `type=`, and dns.pyx's static
path for IP literals only applies to SOCK_STREAM or SOCK_DGRAM, so every call goes to
uv_getaddrinfo. asyncio's sock_connect checks the address in-line (_ensure_resolved ->
_ipaddr_info, with the socket's own type). The ratio is to asyncio's sock_connect, measured
in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import socket
import time
from collections.abc import Awaitable, Callable
from importlib import metadata

import uvloop

DEFAULT_CONNECTS = 2000


def _threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


async def _by_sock_connect(address: tuple[str, int]) -> None:
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)


async def _by_connect_ex(address: tuple[str, int]) -> None:
    with socket.socket() as sock:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            loop = asyncio.get_running_loop()
            writable = loop.create_future()
            loop.add_writer(sock.fileno(), writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, "connect failed")


async def _row(connect: Callable[[tuple[str, int]], Awaitable[None]], connects: int) -> tuple[float, int, int]:
    # A bare listening socket, accepted from in-line (the connect is in its backlog by then): nothing
    # here calls getaddrinfo, as asyncio.start_server(host=...) would, starting uvloop's pool by itself.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        before = _threads()
        started = time.perf_counter()
        for _ in range(connects):
            await connect(address)
            listener.accept()[0].close()
        elapsed = time.perf_counter() - started
        return elapsed / connects * 1e6, before, _threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connects", type=int, default=DEFAULT_CONNECTS)
    args = parser.parse_args()
    print(f"uvloop {metadata.version('uvloop')}, {args.connects} connects per row")
    baseline = None
    # Each row in a fresh loop; uvloop's rows last, since its pool threads, once started, stay.
    rows = (("asyncio", asyncio.run), ("uvloop", uvloop.run))
    for loop_name, run in rows:
        for way, connect in (("connect_ex+add_writer", _by_connect_ex), ("sock_connect", _by_sock_connect)):
            micros, before, after = run(_row(connect, args.connects))
            if baseline is None and way == "sock_connect":
                baseline = micros
            ratio = f"  {micros / baseline:.2f}x asyncio's sock_connect" if baseline else ""
            print(f"{loop_name:<8} {way:<22} {micros:7.1f} us/connect  threads {before} -> {after}{ratio}")


if __name__ == "__main__":
    main()
