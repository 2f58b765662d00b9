"""httpGet: one GET with the kubelet's headers, redirect rules and verdicts (k8s pkg/probe/http).

Built on h11 rather than aiohttp's client: every header byte is ours (no automatic ones),
a connection is never kept alive, and an attempt stays cheap. The request's bytes are
serialised by h11 once per probe. Plain HTTP is read straight off the socket, and the
common response that arrives whole (probes/http_fast_path.py) is judged without h11;
h11 parses the same bytes whenever that response is anything else. HTTPS goes through
asyncio's TLS streams.

    probe = HttpGetProbe(HttpGetSpec(port=8080, path="/healthz"))
    result = await probe.attempt(timeout=1.0)  # "HTTP 200", "HTTP 503", "connect ECONNREFUSED ..."
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import h11

from probes.base import ProbeBase, Started
from probes.dial import NOT_AT_ONCE, ConnectFailed, Dialed, dial_at_once, errno_name, finish_dial
from probes.http_fast_path import SimpleHead, parse_simple_head
from probes.result import MAX_MESSAGE_CHARS, Outcome, ProbeResult, remaining, sanitize, timed_out
from probes.spec import KUBE_PROBE_USER_AGENT, HttpGetSpec

# The kubelet reads at most 10 KiB of body (maxRespBodyLength) and stops there: more is
# not a failure, and a target that stalls after exactly that much has already passed.
_BODY_LIMIT = 10 * 1024
# Go's http.Client refuses an 11th request: "stopped after 10 redirects".
_MAX_REQUESTS = 10
# A flood of response headers must fail, not grow a buffer until the timeout.
_MAX_HEADER_BYTES = 16 * 1024
# Go's transport gives up after five 1xx informational responses (max1xxResponses).
_MAX_INFORMATIONAL = 5
# One read takes whatever a loopback burst delivered.
_READ_CHUNK = 64 * 1024
# An error reason (TLS, protocol) is quoted this far, sanitised; bodies are never quoted.
_EXCERPT_CHARS = 60
# A hostname echoed from a hostile Location stays short.
_HOST_CHARS = 60
# The statuses Go's client follows when they carry a Location.
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The schemes we speak, with the port a URL without one means.
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers Go's Request.write writes itself or never copies from the map (reqWriteExcludeHeader).
_NOT_COPIED = frozenset({"host", "user-agent", "content-length", "transfer-encoding", "trailer"})
# Characters left as they are in a request target: RFC 3986 reserved ones and existing escapes.
_TARGET_SAFE = "/?:@!$&'()*+,;=%[]~"
# A peer that never answers our TLS close_notify must not hold the socket for asyncio's 30 s.
_TLS_SHUTDOWN_TIMEOUT = 1.0
# h11 rejects a 101 we did not ask for; the status line tells it apart from garbage.
_SWITCHING_PROTOCOLS = re.compile(rb"(?:^|\n)HTTP/1\.[01] 101[ \r]")


class HttpGetProbe(ProbeBase):
    """GET the target on a fresh connection, follow same-host redirects, judge the status.

        probe = HttpGetProbe(HttpGetSpec(port=8443, scheme="https", headers=(("Host", "app"),)))
        result = await probe.attempt(timeout=1.0)  # TLS unverified, "Host: app" sent
        print(result.outcome, result.message)  # Outcome.SUCCESS HTTP 200
    """

    def __init__(self, spec: HttpGetSpec) -> None:
        self.spec = spec
        self._origin = _parse_url(spec.target)
        self._host_override, self._headers = _request_headers(spec.headers)
        self._tls = _unverified_tls_context()
        # The first request never changes: serialised once, not once per attempt.
        self._first_request = _build_request(
            self._origin, self._host_override or self._origin.authority.encode(), self._headers
        )

    def start(self, timeout: float) -> Started:
        started = time.monotonic()
        first = dial_at_once(self._origin.hostname, self._origin.port)
        if first.error is not None:  # refused before the loop need know: the common not-ready case
            return ProbeResult(Outcome.FAILURE, str(first.error)[:MAX_MESSAGE_CHARS], time.monotonic() - started)
        return self._request(timeout, first, started)

    async def _request(self, timeout: float, first: Dialed, started: float) -> ProbeResult:
        final = _FinalResponse()
        try:
            async with asyncio.timeout(remaining(timeout, started)):
                outcome, message = await self._follow(timeout, final, first)
        except TimeoutError:
            outcome, message = final.outcome_of(timed_out(timeout))
        except (ConnectFailed, _Failed) as exc:
            outcome, message = final.outcome_of(str(exc))
        return ProbeResult(outcome, message[:MAX_MESSAGE_CHARS], time.monotonic() - started)

    async def _follow(self, timeout: float, final: _FinalResponse, first: Dialed) -> tuple[Outcome, str]:
        """Go's http.Client with the kubelet's CheckRedirect, one new connection per request."""
        url, request = self._origin, self._first_request
        dialed = first
        for sent in range(1, _MAX_REQUESTS + 1):
            async with _exchange(url, self._tls, timeout, dialed) as exchange:
                if request is None:
                    raise _Failed("invalid request header")
                status, location = await exchange.response_head(request)
                if status not in _REDIRECT_STATUSES or location is None:
                    await final.read_body(exchange)  # at most 10 KiB, as the kubelet does, never quoted
                    return _judge(status)
                hop = _resolve(url, location)
                if hop.hostname != self._origin.hostname:
                    await final.read_body(exchange)  # the kubelet reads the body of the response it ends on
                    other = sanitize(hop.hostname, _HOST_CHARS)
                    message = f"HTTP {status}: redirect to other host {other} not followed"
                    return Outcome.WARNING, message
            if sent == _MAX_REQUESTS:
                break
            headers = _with_referer(self._headers, url, hop)
            dialed = NOT_AT_ONCE
            host = hop.authority.encode()
            if self._host_override and not urlsplit(location).scheme:
                host = self._host_override  # Go keeps it across relative Locations only (#22233)
            url, request = hop, _build_request(hop, host, headers)
        return Outcome.FAILURE, f"stopped after {_MAX_REQUESTS} redirects"


class _Failed(Exception):
    """One attempt failed; str() is the probe message."""


class _FinalResponse:
    """Whether the attempt got as far as reading the body of the response it ends on.

    The kubelet's DoHTTPProbe turns any error of client.Do (connect, TLS, headers, the
    timeout before them) into a failure, but an error reading that body, the timeout
    included, into a probe error (pkg/probe/http/http.go), which the prober retries and
    then throws away.
    """

    def __init__(self) -> None:
        self.reading = False

    async def read_body(self, exchange: _Exchange) -> None:
        self.reading = True
        await exchange.body()
        self.reading = False

    def outcome_of(self, reason: str) -> tuple[Outcome, str]:
        if self.reading:
            return Outcome.ERROR, f"error reading body: {reason}"
        return Outcome.FAILURE, reason


@dataclass(frozen=True, slots=True)
class _Url:
    url: str
    scheme: str
    hostname: str  # lower case, no brackets: what the redirect rule compares
    port: int
    authority: str  # host[:port] as written: the Host header unless overridden
    request_target: str  # escaped path and query


@dataclass(frozen=True, slots=True)
class _Request:
    """One GET as h11 writes it, and the event that tells h11 it was sent."""

    event: h11.Request
    data: bytes


def _build_request(url: _Url, host: bytes, headers: list[tuple[bytes, bytes]]) -> _Request | None:
    """The GET for `url`, serialised by h11; None when a header is not valid HTTP."""
    try:
        event = h11.Request(method="GET", target=url.request_target, headers=[(b"Host", host), *headers])
        writer = h11.Connection(h11.CLIENT)
        return _Request(event, writer.send(event) + writer.send(h11.EndOfMessage()))
    except h11.LocalProtocolError:
        return None


class _SocketStream:
    """A connected plain socket, read when the loop reports it readable: no transport, no buffer.

    One recv per wake-up, so a response that arrived whole is one read; `unread` hands bytes
    back, for h11 to parse what the fast path declined.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._unread: bytes | None = None

    async def write(self, data: bytes) -> None:
        try:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):  # a full send buffer: only a request with very large headers
                await asyncio.get_running_loop().sock_sendall(self._sock, data[sent:])
        except OSError as exc:
            raise _io_failed(exc) from None

    async def read(self) -> bytes:
        """Up to _READ_CHUNK bytes; b"" at EOF."""
        if self._unread is not None:
            data, self._unread = self._unread, None
            return data
        while True:
            await self._readable()
            try:
                return self._sock.recv(_READ_CHUNK)
            except BlockingIOError:
                continue  # woken without data: wait again
            except OSError as exc:
                raise _io_failed(exc) from None

    def unread(self, data: bytes) -> None:
        self._unread = data

    def close(self, complete: bool) -> None:
        # FIN; RST only if the peer sent what was never read, as the kernel ends it for the kubelet too.
        self._sock.close()

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # a level-triggered poll may report the fd again before the waiter runs
        ready.set_result(None)


class _TlsStream:
    """asyncio's TLS streams, as every https exchange has used them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_READ_CHUNK)
        except OSError as exc:
            raise _io_failed(exc) from None

    def close(self, complete: bool) -> None:
        if complete:
            self._writer.close()  # a polite TLS close_notify, bounded by _TLS_SHUTDOWN_TIMEOUT
        else:
            self._writer.transport.abort()  # unread data or a broken peer: drop it now


def _io_failed(error: OSError) -> _Failed:
    """What a socket error says. A failed send says what asyncio's streams said of it, at the next read."""
    if isinstance(error, ConnectionResetError):
        return _Failed("connection reset")
    if isinstance(error, ssl.SSLError):
        return _Failed(f"TLS error: {_tls_reason(error)}")
    return _Failed(f"read {errno_name(error)}")


class _Exchange:
    """One request and its response on one connection.

    On a plain socket the first read is offered to the fast path: a simple final response
    (probes/http_fast_path.py) is judged from it, its body counted to its end or to 10 KiB.
    Anything else, and everything over TLS, is parsed by h11 from the first byte.
    """

    def __init__(self, stream: _SocketStream | _TlsStream) -> None:
        self._stream = stream
        self._h11: h11.Connection | None = None
        self._simple: SimpleHead | None = None
        self._body_read = 0  # of a simple response: body bytes already read
        self._head: bytes | None = b""  # bytes before the final response; None once it came
        self._eof = False
        self.complete = False

    async def response_head(self, request: _Request) -> tuple[int, str | None]:
        """Send the GET, skip informational responses, return the status and the Location."""
        await self._stream.write(request.data)
        if isinstance(self._stream, _SocketStream):
            data = await self._stream.read()
            head = parse_simple_head(data)
            if head is not None and head.status not in _REDIRECT_STATUSES:
                self._simple, self._body_read = head, len(data) - head.size
                return head.status, None
            self._stream.unread(data)  # h11 reads the same bytes from the start
        # h11 must have sent the request itself to expect a response.
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)
        self._h11.send(request.event)
        self._h11.send(h11.EndOfMessage())
        for _ in range(_MAX_INFORMATIONAL + 1):
            event = await self._next_event()
            if isinstance(event, h11.Response):
                self._head = None
                location = next((v for n, v in event.headers if n == b"location"), b"")
                return event.status_code, location.decode("utf-8", "replace") or None
            if not isinstance(event, h11.InformationalResponse):
                raise _Failed("connection closed before response")
        raise _Failed("too many 1xx responses")

    async def body(self) -> None:
        """Read at most _BODY_LIMIT bytes of the body, within the response's own framing."""
        if self._simple is not None:
            await self._simple_body(self._simple)
            return
        size = 0
        while size < _BODY_LIMIT:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
                break
            else:
                raise _Failed("connection closed during body")

    async def _simple_body(self, head: SimpleHead) -> None:
        """h11's framing, counted: Content-Length bytes, or until the peer closes; 10 KiB at most."""
        length = head.content_length
        wanted = _BODY_LIMIT if length is None else min(length, _BODY_LIMIT)
        while self._body_read < wanted:
            data = await self._stream.read()
            if not data:
                if length is not None:
                    raise _Failed("connection closed during body")
                break  # the close that ends a body without a length
            self._body_read += len(data)
        # The end was seen, as h11's EndOfMessage would be; it decides nothing on a plain socket.
        self.complete = self._body_read < _BODY_LIMIT if length is None else length < _BODY_LIMIT

    def close(self) -> None:
        self._stream.close(self.complete)

    async def _next_event(self) -> object:
        assert self._h11 is not None  # response_head made it
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Failed(self._describe(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            data = await self._stream.read()
            if self._head is not None:
                self._head += data
            self._eof = not data
            self._h11.receive_data(data)

    def _describe(self, error: h11.RemoteProtocolError) -> str:
        if self._head is not None and _SWITCHING_PROTOCOLS.search(self._head):
            return "HTTP 101"  # a final status for Go as for us, and a failure
        if error.error_status_hint == 431:
            return "response headers too large"
        if self._eof and self._head is not None:
            return "connection closed before response"
        if self._eof:
            return "connection closed during body"
        return "invalid HTTP response"


@contextlib.asynccontextmanager
async def _exchange(url: _Url, tls: ssl.SSLContext, timeout: float, dialed: Dialed) -> AsyncIterator[_Exchange]:
    if url.scheme not in _DEFAULT_PORTS:
        if dialed.sock is not None:
            dialed.sock.close()
        raise _Failed(f"unsupported scheme {sanitize(url.scheme, _HOST_CHARS)}")
    sock = await finish_dial(dialed, url.hostname, url.port)
    if url.scheme == "https":
        exchange = _Exchange(await _tls_stream(sock, url, tls, timeout))
    else:
        exchange = _Exchange(_SocketStream(sock))
    try:
        yield exchange
    finally:
        exchange.close()


async def _tls_stream(sock: socket.socket, url: _Url, tls: ssl.SSLContext, timeout: float) -> _TlsStream:
    try:
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=tls,
            server_hostname=_server_name(url.hostname),
            # The attempt's own deadline ends the handshake first. This one matters
            # after it: uvloop keeps a cancelled handshake's buffers (~28 KiB) until
            # the handshake timeout, 60 s by default, so aggressive attempts at a
            # stalling TLS peer would pile up tens of MB.
            ssl_handshake_timeout=timeout,
            ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
        )
    except ssl.SSLError as exc:
        sock.close()
        raise _Failed(f"TLS handshake failed: {_tls_reason(exc)}") from None
    except OSError as exc:
        sock.close()
        raise _Failed(f"TLS handshake failed: {errno_name(exc)}") from None
    except BaseException:
        sock.close()
        raise
    return _TlsStream(reader, writer)


def _request_headers(
    user: tuple[tuple[str, str], ...],
) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    """(Host override, the other headers) as the kubelet's newProbeRequest and Go's writer."""
    first: dict[str, str] = {}
    for name, value in user:
        first.setdefault(name.lower(), value)
    drop_accept = first.get("accept") == ""  # an empty Accept removes it
    headers: list[tuple[str, str]] = []
    user_agent = first.get("user-agent", KUBE_PROBE_USER_AGENT)
    if user_agent:  # an empty User-Agent means none at all
        headers.append(("User-Agent", user_agent))
    for name, value in user:
        lower = name.lower()
        if lower not in _NOT_COPIED and not (drop_accept and lower == "accept"):
            headers.append((name, value))
    if "accept" not in first:
        headers.append(("Accept", "*/*"))
    if "close" not in _tokens(first.get("connection", "")):
        headers.append(("Connection", "close"))  # the kubelet disables keep-alive
    host = first.get("host")
    encoded = [(name.encode(), value.encode()) for name, value in headers]
    return (host.encode() if host else None), encoded


def _with_referer(headers: list[tuple[bytes, bytes]], last: _Url, hop: _Url) -> list[tuple[bytes, bytes]]:
    """The headers of a redirected request: Go's client adds Referer, the URL it came from,
    unless the user set one or the hop goes from https to http (net/http client.go refererForURL)."""
    if last.scheme == "https" and hop.scheme == "http":
        return headers
    if any(name.lower() == b"referer" for name, _ in headers):
        return headers
    return [*headers, (b"Referer", f"{last.scheme}://{last.authority}{last.request_target}".encode())]


def _parse_url(url: str) -> _Url:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme, 0)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Url(
        url=url,
        scheme=parts.scheme,
        hostname=parts.hostname,
        port=port,
        authority=parts.netloc.rpartition("@")[2],
        request_target=quote(target, safe=_TARGET_SAFE),
    )


def _resolve(current: _Url, location: str) -> _Url:
    try:
        return _parse_url(urljoin(current.url, location))
    except ValueError:
        raise _Failed("invalid redirect location") from None


def _judge(status: int) -> tuple[Outcome, str]:
    if 200 <= status < 300:
        return Outcome.SUCCESS, f"HTTP {status}"
    if 300 <= status < 400:
        return Outcome.WARNING, f"HTTP {status}"  # the kubelet warns on every 3xx it ends on
    # No body excerpt: /ready, /status and logs must never echo what a target said.
    return Outcome.FAILURE, f"HTTP {status}"


def _unverified_tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the kubelet never verifies a probe's certificate
    context.verify_mode = ssl.CERT_NONE
    return context


def _tls_reason(error: ssl.SSLError) -> str:
    return sanitize(str(error.reason or type(error).__name__), _EXCERPT_CHARS)


def _server_name(hostname: str) -> str:
    """SNI for names only, as Go's TLS client; asyncio reads "" as "send none"."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return hostname
    return ""


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}
