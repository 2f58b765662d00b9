"""The one listening socket of every port `run` serves (health, gRPC, metrics).

    sock = listening_socket(DUAL_STACK, 8550)   # [::]:8550 with IPV6_V6ONLY=0, or 0.0.0.0:8550
    server = await loop.create_server(factory, sock=sock, backlog=BACKLOG)

`DUAL_STACK` ("*", the default `--bind`) listens as Go servers such as queue-proxy do: one
IPv6 socket that also takes IPv4 (v4-mapped) connections, so the kubelet reaches the sidecar
in IPv4, IPv6 and dual-stack pods alike. A host without IPv6 (the family is not supported,
or `::` can't be bound) gets 0.0.0.0 instead. An explicit address means exactly that family:
`0.0.0.0` is IPv4 only, `::` and `::1` are IPv6 only (IPV6_V6ONLY=1, as asyncio sets it).
"""

from __future__ import annotations

import errno
import socket

# Every interface, IPv6 and IPv4 on one socket.
DUAL_STACK = "*"

# What says "this host has no IPv6": fall back to IPv4 on these, fail on anything else
# (EADDRINUSE on [::]:port must be reported, not hidden behind a 0.0.0.0 bind).
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EADDRNOTAVAIL, errno.EINVAL}


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
