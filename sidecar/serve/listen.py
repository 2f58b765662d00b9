"""The one listening socket of every port `run` serves (health, gRPC, metrics).

    server = await serve_on(factory, DUAL_STACK, 8550)  # [::]:8550 with IPV6_V6ONLY=0, or 0.0.0.0:8550

`DUAL_STACK` ("*", the default `--bind`) listens as Go servers such as queue-proxy do: one
IPv6 socket that also takes IPv4 (v4-mapped) connections, so the kubelet reaches the sidecar
in IPv4, IPv6 and dual-stack pods alike. A host without IPv6 (the family is not supported,
or `::` can't be bound) gets 0.0.0.0 instead. An explicit address means exactly that family:
`0.0.0.0` is IPv4 only, `::` and `::1` are IPv6 only (IPV6_V6ONLY=1, as asyncio sets it).

Running out of fds at accept is one rate-limited line, not asyncio's traceback per retry
(sidecar.fd_limit).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from sidecar.contract import LOGGER_NAME
from sidecar.fd_limit import quiet_accept_exhaustion

# Every interface, IPv6 and IPv4 on one socket.
DUAL_STACK = "*"

# Room for a burst of kubelet, load-balancer and mesh connections arriving at once.
BACKLOG = 1024

# What says "this host has no IPv6": fall back to IPv4 on these, fail on anything else
# (EADDRINUSE on [::]:port must be reported, not hidden behind a 0.0.0.0 bind).
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EADDRNOTAVAIL, errno.EINVAL}


async def serve_on(factory: Callable[[], asyncio.Protocol], bind: str, port: int) -> asyncio.Server:
    """Serve `factory`'s protocol on bind:port (see listening_socket); OSError if it can't bind."""
    sock = listening_socket(bind, port)
    loop = asyncio.get_running_loop()
    quiet_accept_exhaustion(loop, logging.getLogger(LOGGER_NAME))
    try:
        return await loop.create_server(factory, sock=sock, backlog=BACKLOG)
    except BaseException:
        sock.close()
        raise


def listening_socket(bind: str, port: int) -> socket.socket:
    """A bound, non-blocking TCP socket for bind:port (port 0 picks one); OSError if it can't bind.

    No SO_REUSEPORT: a second server on the same port must fail to bind, not share it.
    """
    host = bind.strip().removeprefix("[").removesuffix("]")
    if host in (DUAL_STACK, ""):
        if socket.has_ipv6:
            try:
                return _bound(socket.AF_INET6, ("::", port), v6only=False)
            except OSError as exc:
                if exc.errno not in _NO_IPV6:
                    raise
        return _bound(socket.AF_INET, ("0.0.0.0", port))
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return _bound(family, address, v6only=True)


def _bound(family: int, address: tuple[object, ...], *, v6only: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
