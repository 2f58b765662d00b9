"""A TCP app that accepts and closes; with --listen-after it starts listening late.

    python -m sidecar.demo.tcp_app --port 8082 --listen-after 5
    nc -z localhost 8082    # refused for 5 s, then connects

The port is bound (and announced) at once, but only listened on after the delay,
so connects are refused until then, as with an app that is still starting.
"""

from __future__ import annotations

import asyncio
import socket

from sidecar.demo.lifecycle import (
    TimingFlag,
    announce_port,
    log,
    non_negative_seconds,
    run_demo_app,
    wait_for_stop,
)

APP = "tcp_app"
DEFAULT_PORT = 8082


async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(host: str, port: int, listen_after: float, exit_on_stdin_close: bool) -> None:
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    announce_port(bound_port)
    log(APP, f"bound {host}:{bound_port}; listening after {listen_after:g}s")
    stop = asyncio.create_task(wait_for_stop(exit_on_stdin_close))
    try:
        await asyncio.wait({stop}, timeout=listen_after)
        if stop.done():
            return
        async with await asyncio.start_server(accept_and_close, sock=sock):
            log(APP, "now listening")
            await stop
    finally:
        stop.cancel()
        sock.close()  # a no-op once the server has closed it


TIMING = TimingFlag("--listen-after", non_negative_seconds, 0.0, "seconds to wait before listening")


def main() -> None:
    run_demo_app(APP, __doc__, DEFAULT_PORT, TIMING, serve)


if __name__ == "__main__":
    main()
