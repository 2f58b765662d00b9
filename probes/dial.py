"""The dialer the tcpSocket and httpGet probes share, as the kubelet's probes share one `ProbeDialer`.

Both report connect errors the same way ("connect ECONNREFUSED 127.0.0.1:8080"), and both
close with FIN, as the kubelet's ProbeDialer does: an RST shows up as "connection reset by
peer" in the probed application's logs (kubernetes issue 89898). The TIME_WAIT sockets
that FIN leaves on our side are few at our rates and harmless on loopback (measured in
docs/performance.md, "Closing with FIN").

    sock = await open_socket("127.0.0.1", 8080)   # ConnectFailed("connect ECONNREFUSED ...")
    sock.close()                                  # FIN
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

from probes.result import sanitize
from probes.spec import join_host_port

# (host, port) or (host, port, flowinfo, scope_id), as getaddrinfo gives them.
_Address = tuple[Any, ...]

# An OSError without an errno (rare) is quoted, but never at length.
_ERROR_TEXT_CHARS = 60


class ConnectFailed(Exception):
    """The target could not be resolved or connected; str() is the probe message."""


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to host:port, trying each address in turn as Go does.

    Raises ConnectFailed with the first address's error. The socket is closed on
    any exception, cancellation included.
    """
    loop = asyncio.get_running_loop()
    first_error: ConnectFailed | None = None
    for family, address in await _resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            if first_error is None:
                first_error = ConnectFailed(f"connect {errno_name(exc)} {join_host_port(address[0], address[1])}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise first_error or ConnectFailed(f"resolve {host}: no addresses")


async def _resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, _Address]]:
    # IP literals skip getaddrinfo: it runs in a thread and would double the cost of an attempt.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return [(family, (host, port))]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectFailed(f"resolve {host}: {exc.strerror}") from None
    return [(family, address) for family, _, _, _, address in infos]


def errno_name(exc: OSError) -> str:
    """ECONNREFUSED, ECONNRESET, ...: the name an operator greps for."""
    if exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return sanitize(str(exc), _ERROR_TEXT_CHARS)
