"""The process's file descriptors: the soft limit raised at start-up, a share of it per port, and
one rate-limited line when accept() runs out of them.

    limit = raise_open_files_limit(logger)    # soft RLIMIT_NOFILE = hard; at start of run and webhook
    cap = connections_per_port()              # what each listening port may hold open at once
    quiet_accept_exhaustion(loop, logger)     # fd exhaustion at accept: one line per ACCEPT_LOG_EVERY
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from typing import Any

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
