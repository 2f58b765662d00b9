"""parse_simple_head against h11 itself: whatever the fast path accepts, h11 reads the same way.

The responses are generated from pieces that are valid, nearly valid and plainly wrong
(versions, statuses, reasons, header names, separators, values, line ends, obs-fold,
framing headers, bodies, EOF), so both sides of the fast path's border are exercised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from probes.http_fast_path import MAX_SIMPLE_HEAD_BYTES, SimpleHead, parse_simple_head

BODY_LIMIT = 10 * 1024  # probes/http_get.py _BODY_LIMIT: the kubelet's maxRespBodyLength
MAX_HEADER_BYTES = 16 * 1024  # probes/http_get.py _MAX_HEADER_BYTES, h11's max_incomplete_event_size

def mostly(
    valid: st.SearchStrategy[bytes], invalid: st.SearchStrategy[bytes], odds: int = 12
) -> st.SearchStrategy[bytes]:
    """`valid` `odds` times as often as `invalid`: most responses get far enough to be judged.
    (one_of would not do: it draws its distinct branches evenly.)"""
    return st.integers(0, odds).flatmap(lambda pick: valid if pick else invalid)


versions = mostly(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    st.sampled_from([b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.x", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11"]),
)
statuses = mostly(
    st.integers(200, 599).map(lambda code: b"%d" % code) | st.sampled_from([b"200", b"503", b"204", b"304", b"302"]),
    st.integers(0, 999).map(lambda code: b"%03d" % code)
    | st.sampled_from([b"101", b"100", b"099", b"20", b"2000", b" 200", b"2O0", b"600"]),
)
reasons = mostly(
    st.sampled_from([b" OK", b" Service Unavailable", b" \xe9t\xe9", b" a\tb", b" ", b""]),
    st.binary(max_size=12) | st.binary(max_size=12).map(lambda reason: b" " + reason),
)
names = mostly(
    st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Location", b"Connection",
                     b"Content-Type", b"X-A", b"Server", b"Date", b"Transfer-Encoding", b"transfer-encoding"]),
    st.sampled_from([b"Bad Name", b"", b"X\xe9", b"X(y)", b" X", b"X\x00"]) | st.binary(max_size=6),
)
separators = mostly(st.just(b": "), st.sampled_from([b":", b":\t", b" : ", b":  ", b""]), odds=6)
values = mostly(
    st.integers(0, 12000).map(lambda n: b"%d" % n)
    | st.sampled_from([b"0", b"5", b"05", b"", b"chunked", b"close", b"/next", b"text/plain; charset=utf-8"]),
    st.sampled_from([b"5, 5", b"5,6", b" ", b"gzip", b"chunked, gzip", b"CHUNKED", b"a\x00b", b"a\x7fb",
                     b"a\x0bb", b"x  ", b"-1", b"99999999999999999999999"])
    | st.binary(max_size=10),
    odds=6,
)
line_ends = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r\r\n", b"\r"]), odds=40)


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status_line = draw(versions) + b" " + draw(statuses) + (draw(reasons) or b"") + draw(line_ends)
    head = [status_line]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 30)) == 0:
            head.append(b" folded" + draw(line_ends))  # obs-fold: a continuation line
        else:
            head.append(draw(names) + draw(separators) + draw(values) + draw(line_ends))
    head.append(draw(mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b""]))))
    body = draw(st.one_of(st.binary(max_size=40), st.integers(0, 12000).map(lambda n: b"b" * n)))
    return b"".join(head) + body


def _h11_client() -> h11.Connection:
    """A client that sent the probe's GET, as probes/http_get.py's _Exchange is before reading."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    conn.send(h11.Request(method="GET", target="/", headers=[(b"Host", b"127.0.0.1")]))
    conn.send(h11.EndOfMessage())
    return conn


@dataclass(frozen=True)
class Read:
    """What one read of `data` (and EOF if `eof`) gives: the status, and how the body ended."""

    status: int
    body_bytes: int  # delivered, up to the 10 KiB the probe reads
    ended: str  # "complete", "limit", "more" (needs another read) or "error" (cut short)


def _h11_reads(data: bytes, eof: bool) -> Read | None:
    """h11's reading, driven as _Exchange drives it; None if no final response came out of it."""
    conn = _h11_client()
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    try:
        response = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(response, h11.Response):
        return None
    size = 0
    while size < BODY_LIMIT:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return Read(response.status_code, size, "error")
        if isinstance(event, h11.Data):
            size += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return Read(response.status_code, size, "complete")
        elif event is h11.NEED_DATA:
            return Read(response.status_code, size, "more")
        else:
            return Read(response.status_code, size, "error")
    return Read(response.status_code, size, "limit")


def _fast_reads(head: SimpleHead, data: bytes, eof: bool) -> Read:
    """The same, from the fast path's head: the framing _Exchange._simple_body applies."""
    have = len(data) - head.size
    if head.content_length is None:  # until the peer closes
        if have >= BODY_LIMIT:
            return Read(head.status, have, "limit")
        return Read(head.status, have, "complete" if eof else "more")
    if head.content_length >= BODY_LIMIT and have >= BODY_LIMIT:
        return Read(head.status, min(have, head.content_length), "limit")
    if have >= head.content_length:
        return Read(head.status, head.content_length, "complete")
    return Read(head.status, have, "error" if eof else "more")


AIOHTTP_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\n"
    b"Date: Wed, 02 Dec 2026 06:35:21 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\nConnection: close\r\n\r\nnot ready"
)


@settings(max_examples=1000, deadline=None)
@given(response=responses(), eof=st.booleans())
@example(response=AIOHTTP_503, eof=False)
@example(response=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", eof=False)
@example(response=b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", eof=False)
@example(response=b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", eof=True)
@example(response=b"HTTP/1.1 200 OK\r\nX: a\n\r\n\r\n", eof=True)
@example(response=b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", eof=False)
def test_every_head_the_fast_path_accepts_h11_reads_the_same_way(response: bytes, eof: bool) -> None:
    head = parse_simple_head(response)
    if head is None:
        return  # h11's to judge, from the same bytes
    assert _h11_reads(response, eof) == _fast_reads(head, response, eof)
    assert head.size <= MAX_SIMPLE_HEAD_BYTES


TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VALUE_CHARS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))


def byte_strings(alphabet: bytes, min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=max_size).map(bytes)


valid_names = byte_strings(TOKEN_CHARS, 1, 12).filter(
    lambda name: name.lower() not in (b"content-length", b"transfer-encoding")
)
valid_values = st.lists(byte_strings(VALUE_CHARS, 1, 8), max_size=4).map(b" ".join)


@settings(max_examples=500, deadline=None)
@given(
    version=st.sampled_from([b"1.0", b"1.1"]),
    status=st.integers(200, 599),
    reason=byte_strings(b" \t" + VALUE_CHARS, 0, 20),
    headers=st.lists(st.tuples(valid_names, valid_values), max_size=8),
    length=st.none() | st.integers(0, 20000),
)
def test_the_fast_path_takes_every_plain_final_response(
    version: bytes, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None
) -> None:
    # Not vacuous: a well-formed final response without chunking is always the fast path's.
    lines = [b"HTTP/%s %d %s" % (version, status, reason)]
    lines += [name + b": " + value for name, value in headers]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    head = parse_simple_head(data)
    no_body = status in (204, 304)
    assert head == SimpleHead(status, len(data), 0 if no_body else length)


@pytest.mark.parametrize(
    "data",
    [
        AIOHTTP_503,
        # Go's net/http for http.Error(w, "not ready", 503) on a Connection: close request
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"X-Content-Type-Options: nosniff\r\nDate: Wed, 02 Dec 2026 06:35:21 GMT\r\nContent-Length: 10\r\n\r\n"
        b"not ready\n",
        # Python's http.server: HTTP/1.0, and a body that ends at the close
        b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\nDate: Wed, 02 Dec 2026 06:35:21 GMT\r\n\r\nok",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",  # no reason phrase, as some servers send
    ],
    ids=["aiohttp", "go-net-http", "python-http-server", "no-reason"],
)
def test_common_servers_answers_are_simple(data: bytes) -> None:
    assert parse_simple_head(data) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # the head is not finished
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"x" * MAX_SIMPLE_HEAD_BYTES + b"\r\n\r\n",
    ],
    ids=["chunked", "1xx", "repeated-length", "length-list", "obs-fold", "bare-lf", "bad-name", "http2", "unfinished",
         "over-16KiB"],
)
def test_anything_else_is_left_to_h11(data: bytes) -> None:
    assert parse_simple_head(data) is None


def test_a_hostile_run_of_blanks_is_parsed_in_linear_time() -> None:
    # Blanks are the only place the grammar could backtrack; possessive quantifiers forbid it.
    hostile = b"HTTP/1.1 200 OK\r\nX:" + b" \t" * 8000 + b"\x00\r\n\r\n"
    started = time.perf_counter()
    assert parse_simple_head(hostile) is None
    assert time.perf_counter() - started < 0.05
