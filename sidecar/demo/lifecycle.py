"""What every demo app does the same way: flags, announcing its port, stopping.

    run_demo_app("tcp_app", __doc__, 8082, TimingFlag("--listen-after", non_negative_seconds, 0.0, "..."), serve)
    announce_port(bound_port)          # first stdout line: "PORT 8082"
    await wait_for_stop(exit_on_stdin_close)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sidecar.signals import on_stop_signals


def demo_parser(description: str, *, default_port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to listen on (default {default_port}; 0 picks a free one)")
    parser.add_argument("--exit-on-stdin-close", action="store_true",
                        help="exit when stdin reaches EOF, so a parent that dies (even by "
                        "SIGKILL) takes this app with it")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds")
    return value


def non_negative_seconds(text: str) -> float:
    """argparse type for a number of seconds >= 0."""
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 seconds")
    return value


def positive_seconds(text: str) -> float:
    """argparse type for a number of seconds > 0."""
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 seconds")
    return value


def announce_port(port: int) -> None:
    # The parent reads exactly this line; nothing else goes to stdout, so an unread
    # pipe can never fill up and block the app.
    print(f"PORT {port}", flush=True)


def log(app: str, message: str) -> None:
    print(f"{app}: {message}", file=sys.stderr, flush=True)


class _EofProtocol(asyncio.Protocol):
    def __init__(self, closed: asyncio.Event) -> None:
        self.closed = closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def wait_for_stop(exit_on_stdin_close: bool) -> None:
    """Return on SIGTERM or SIGINT, or (if asked) when stdin closes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        transport = None
        if exit_on_stdin_close:
            transport, _ = await loop.connect_read_pipe(lambda: _EofProtocol(stop), sys.stdin)
        try:
            await stop.wait()
        finally:
            if transport is not None:
                transport.close()


def run_app(app: str, main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, with a port that can't be had as one line and exit 1, not a traceback."""
    try:
        asyncio.run(main)
    except OSError as exc:
        raise SystemExit(f"{app}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TimingFlag:
    """The one timing flag each demo app has (--ready-after, --flip-every, --listen-after)."""

    flag: str
    parse: Callable[[str], float]
    default: float
    help: str


def run_demo_app(
    app: str,
    doc: str | None,
    default_port: int,
    timing: TimingFlag,
    serve: Callable[[str, int, float, bool], Coroutine[Any, Any, None]],
) -> None:
    """A demo app's main: its flags, then serve(host, port, timing, exit_on_stdin_close)."""
    parser = demo_parser(doc.splitlines()[0] if doc else app, default_port=default_port)
    parser.add_argument(timing.flag, dest="timing", type=timing.parse, default=timing.default, metavar="SECONDS",
                        help=f"{timing.help} (default {timing.default:g})")
    args = parser.parse_args()
    run_app(app, serve(args.host, args.port, args.timing, args.exit_on_stdin_close))
