"""The process's file descriptors: the soft limit raised at start-up, a share of it per port, which
connection a port at its share gives up, and one rate-limited line when accept() runs out of fds.

    limit = raise_open_files_limit(logger)    # soft RLIMIT_NOFILE = hard; at start of run and webhook
    cap = connections_per_port()              # what each listening port may hold open at once
    victim = evictee(connections, Connection.rank)   # at the cap: who makes room, by Standing
    close_or_reset(transport)                 # give the fd back now, even to a client that never reads
    quiet_accept_exhaustion(loop, logger)     # fd exhaustion at accept: one line per ACCEPT_LOG_EVERY

Every port follows the same rule at its cap (health, metrics, gRPC and the webhook): a newcomer is
always let in, and the connection that makes room is the one whose loss costs least, by `Standing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import logging
import resource
import socket
import struct
import termios
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

# Each listening port (health, gRPC, metrics) may hold at most this share of the fd limit,
# so the three together leave a quarter for probes, exec pipes, logs and the listeners.
PORT_SHARE_OF_FDS = 4
# Past this many open connections a port is being abused, not used: the kubelet, Prometheus
# and a mesh need a handful each.
MAX_CONNECTIONS_PER_PORT = 1024
# Below this the ports could not serve a kubelet and a scraper while one slow client lingers.
MIN_CONNECTIONS_PER_PORT = 8
# asyncio retries a failing accept every second, once per pending connection: one line per
# this many seconds says it all.
ACCEPT_LOG_EVERY = 10.0
# What asyncio's selector loop says when accept() fails for lack of fds or memory
# (cpython Lib/asyncio/selector_events.py, _accept_connection).
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
# SO_LINGER on with 0 s: close() sends a reset and frees the socket's buffers at once.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

T = TypeVar("T")


class Standing(enum.IntEnum):
    """What a connection is doing, in the order a port at its cap gives one up: lowest first, then
    within a standing the one in it longest. The newcomer is always let in: refusing it would let
    a flood of connections (of any kind) lock out the kubelet's probe, which connects afresh each time.
    """

    # The client owes us something and is not giving it: a TLS handshake or HTTP/2 preface, a first
    # request on a new connection, the rest of a head or body, reading an answer; or we are closing
    # it. What a slowloris and a connect-and-wait flood look like; a real client is in it for
    # milliseconds. First, so such a flood cannot cycle the keep-alive connections of real clients.
    DAWDLING = 0
    # Between requests, after at least one: its client reconnects and loses nothing (clients are
    # ready for a server closing an idle keep-alive connection; RFC 9112, 9.3).
    IDLE = 1
    # A long-poll (`/ready?wait=`) or a gRPC Watch: answered early with what its end would say now
    # (a Watch ends UNAVAILABLE, which gRPC clients retry), then closed; its client asks again.
    HELD = 2
    # A request being answered (the webhook's review, /live/<c>, /wait-for-drain): reset. Only a
    # flood of them gets here, so the oldest is almost surely the flood's.
    BUSY = 3
    # Accepted less than NEW_CONNECTION_SECONDS ago and nothing heard yet: its request may be in
    # the kernel's buffer, unread, while a burst of connections is accepted in one loop pass.
    # Last, so a burst cannot evict its own newcomers (the kubelet's among them) before they ask.
    NEW = 4


# How long a new connection is NEW: the kubelet's request follows its connect at once.
NEW_CONNECTION_SECONDS = 1.0


def evictee(connections: Iterable[T], rank: Callable[[T], tuple[Standing, float, int] | None]) -> T | None:
    """The connection to give up: the lowest `rank` (standing, since when, arrival order); None-ranked
    ones are already going and not counted twice. None if every connection is going."""
    best: T | None = None
    best_rank: tuple[Standing, float, int] | None = None
    for connection in connections:
        ranked = rank(connection)
        if ranked is not None and (best_rank is None or ranked < best_rank):
            best, best_rank = connection, ranked
    return best


def unsent_bytes(transport: asyncio.Transport, *, in_kernel: bool = True) -> int:
    """What the transport still holds for the client: in its own buffer and, with `in_kernel`, in the
    kernel's (sent but not acknowledged, or not sent: Linux's SIOCOUTQ). More than 0 long after the
    answer: the client does not read, and a graceful close would wait for it (the fd, or the
    kernel's buffers). Just after a write the kernel's part is only in flight: leave it out then."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket") if in_kernel else None
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            pending += struct.unpack("i", queued)[0]
    return pending


def reset(transport: asyncio.Transport) -> None:
    """Close at once with a reset: what the client left unread is dropped, in the kernel too, and the
    fd is free on the loop's next pass. (asyncio's and uvloop's abort() alone close gracefully, so the
    kernel would keep the unread bytes and retransmit them to a zero window.)"""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    transport.abort()


def close_or_reset(transport: asyncio.Transport, *, in_kernel: bool = True) -> None:
    """Close gracefully if the client took everything (a FIN after the last byte), else reset: a
    close would wait for a reader that may never come (asyncio and uvloop keep the fd until their
    buffer is written; the kernel, its buffers until the client reads or its retries give up).
    `in_kernel=False` just after a write (an early answer, shutdown): the fd is free either way,
    and the kernel delivers what it has."""
    if unsent_bytes(transport, in_kernel=in_kernel):
        reset(transport)
    elif not transport.is_closing():
        transport.close()


def raise_open_files_limit(logger: logging.Logger) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return the soft limit now in force; one
    INFO line when it moved (none when it was there already, so most starts log nothing more).

    Go's runtime does this for every Go program since Go 1.19 (golang/go src/os/rlimit.go, moved to
    src/syscall/rlimit.go): a low soft limit only protects select(), which neither asyncio nor
    uvloop uses, and the hard limit is the one an operator sets on purpose.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft  # e.g. an unlimited hard limit the kernel caps lower (nr_open): keep what we have
    logger.info("open files limit raised from %d to the hard limit %d", soft, hard)
    return hard


def connections_per_port() -> int:
    """How many connections one listening port may hold open, from the soft fd limit in force."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_PER_PORT
    return max(MIN_CONNECTIONS_PER_PORT, min(MAX_CONNECTIONS_PER_PORT, soft // PORT_SHARE_OF_FDS))


class _AcceptExhaustion:
    """The loop's exception handler: fd exhaustion at accept is one line per ACCEPT_LOG_EVERY, with a
    count and no traceback; every other context goes to the handler that was there before."""

    def __init__(self, logger: logging.Logger, previous: Any) -> None:
        self.logger = logger
        self.previous = previous
        self.last_logged = -ACCEPT_LOG_EVERY
        self.since_logged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_EXHAUSTED:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.since_logged += 1
        now = time.monotonic()
        if now - self.last_logged < ACCEPT_LOG_EVERY:
            return
        error = context.get("exception")
        code = errno.errorcode.get(getattr(error, "errno", None) or 0, "error")
        sock = context.get("socket")
        where = sock.getsockname() if sock is not None else "?"
        self.logger.warning(
            "cannot accept connections on %s: %s (%d refusals in the last %.0fs); fd limit %d",
            where,
            code,
            self.since_logged,
            min(now - self.last_logged, ACCEPT_LOG_EVERY),
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        self.last_logged = now
        self.since_logged = 0


def quiet_accept_exhaustion(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
    """Install the one-line handler on `loop` (once; a second call does nothing)."""
    previous = loop.get_exception_handler()
    if isinstance(previous, _AcceptExhaustion):
        return
    loop.set_exception_handler(_AcceptExhaustion(logger, previous))
