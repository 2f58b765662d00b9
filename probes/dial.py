"""The dialer the tcpSocket and httpGet probes share, as the kubelet's probes share one `ProbeDialer`.

Both report connect errors the same way ("connect ECONNREFUSED 127.0.0.1:8080"), and both
close with FIN, as the kubelet's ProbeDialer does: an RST shows up as "connection reset by
peer" in the probed application's logs (kubernetes issue 89898). The TIME_WAIT sockets
that FIN leaves on our side are few at our rates and harmless on loopback (measured in
docs/performance.md, "Closing with FIN").

    sock = await open_socket("127.0.0.1", 8080)   # ConnectFailed("connect ECONNREFUSED ...")
    sock.close()                                  # FIN

The kernel often knows the answer before any event loop could: a non-blocking connect to a
closed loopback port has already failed when the call returns. `dial_at_once` asks it
synchronously (a socket, a connect, one SO_ERROR read: about 10 us), so a refused attempt
costs no future, task or timeout scope; an attempt the kernel can't answer at once goes on
through `finish_dial` on the loop, bounded by the caller's timeout as before.

    dialed = dial_at_once("127.0.0.1", 8080)
    if dialed.error: ...                          # refused: the same ConnectFailed as open_socket's
    sock = dialed.sock if dialed.connected else await finish_dial(dialed, "127.0.0.1", 8080)
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import select
import socket
from dataclasses import dataclass
from typing import Any

from probes.result import errno_name as errno_name  # written once there; the probes import it from here
from probes.spec import join_host_port

# (host, port) or (host, port, flowinfo, scope_id), as getaddrinfo gives them.
_Address = tuple[Any, ...]


class ConnectFailed(Exception):
    """The target could not be resolved or connected; str() is the probe message."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # the connect's errno, None for a failed lookup

    @property
    def refused(self) -> bool:
        """ECONNREFUSED: nothing listens there."""
        return self.code == errno.ECONNREFUSED


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to host:port, trying each address in turn as Go does.

    Raises ConnectFailed with the first address's error. The socket is closed on
    any exception, cancellation included.
    """
    first_error: ConnectFailed | None = None
    for family, address in await _resolve(host, port):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: this address can't be tried now
            if first_error is None:
                first_error = _connect_failed(exc.errno, exc, address)
            continue
        try:
            sock.setblocking(False)
            await _connect(sock, address)
        except OSError as exc:
            sock.close()
            if first_error is None:
                first_error = _connect_failed(exc.errno, exc, address)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise first_error or ConnectFailed(f"resolve {host}: no addresses")


@dataclass(frozen=True, slots=True)
class Dialed:
    """What one synchronous connect found out: refused (`error`), `connected`, or neither yet."""

    sock: socket.socket | None = None  # connected or still connecting; the caller owns it
    address: _Address | None = None
    connected: bool = False
    error: ConnectFailed | None = None


# A host that is not an IP literal needs a lookup first: the loop's path, as before.
NOT_AT_ONCE = Dialed()


def dial_at_once(host: str, port: int) -> Dialed:
    """Connect to an IP literal without the event loop, as far as the kernel can tell at once."""
    family = _literal_family(host)
    if family is None:
        return NOT_AT_ONCE
    address = (host, port)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return Dialed(error=_connect_failed(exc.errno, exc, address))
    try:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:  # no error yet: connected already, or still on its way
                return Dialed(sock, address, connected=bool(select.select((), (sock,), (), 0)[1]))
    except BaseException:
        sock.close()
        raise
    if code == 0:
        return Dialed(sock, address, connected=True)
    sock.close()
    return Dialed(error=_connect_failed(code, None, address))


async def finish_dial(dialed: Dialed, host: str, port: int) -> socket.socket:
    """The connected socket for a dial that did not finish at once, or a fresh dial through the loop.

    ConnectFailed as `open_socket` raises it; the socket is closed on any exception.
    """
    sock, address = dialed.sock, dialed.address
    if sock is None or address is None:
        return await open_socket(host, port)
    if dialed.connected:
        return sock
    try:
        await _writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except BaseException:
        sock.close()
        raise
    if code:
        sock.close()
        raise _connect_failed(code, None, address)
    return sock


async def _connect(sock: socket.socket, address: _Address) -> None:
    """loop.sock_connect without its lookup: uvloop's (0.23, loop.pyx) resolves even an IP literal
    on libuv's thread pool, since it asks getaddrinfo without the socket type and so skips its own
    static path (dns.pyx): a thread round trip per redirect hop, and four threads started."""
    code = sock.connect_ex(address)
    if code == errno.EINPROGRESS:
        await _writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _connect_failed(code: int | None, exc: OSError | None, address: _Address) -> ConnectFailed:
    if exc is None and code is not None:
        return ConnectFailed(_refusal_message(code, address[0], address[1]), code)
    reason = errno_name(exc) if exc is not None else errno_name(OSError(code, ""))
    return ConnectFailed(f"connect {reason} {join_host_port(address[0], address[1])}", code)


# A not-ready container is refused the same way hundreds of times a second: its message
# is built once. Bounded: a pod has few targets, a hostile config no more than this.
@functools.lru_cache(maxsize=1024)
def _refusal_message(code: int, host: str, port: int) -> str:
    return f"connect {errno_name(OSError(code, ''))} {join_host_port(host, port)}"


@functools.lru_cache(maxsize=1024)  # asked on every attempt, of the same few hosts
def _literal_family(host: str) -> socket.AddressFamily | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, _Address]]:
    # IP literals skip getaddrinfo: it runs in a thread and would double the cost of an attempt.
    family = _literal_family(host)
    if family is not None:
        return [(family, (host, port))]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectFailed(f"resolve {host}: {exc.strerror}") from None
    except UnicodeError:  # the IDNA codec's; load_config refuses such names (config/wire_text.py)
        raise ConnectFailed(f"resolve {host}: not a name IDNA can encode") from None
    except OSError as exc:  # uvloop's resolver out of descriptors: EMFILE
        raise ConnectFailed(f"resolve {host}: {errno_name(exc)}") from None
    return [(family, address) for family, _, _, _, address in infos]
