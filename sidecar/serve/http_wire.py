"""HTTP/1.1 on the wire for the GET-only ports (health, metrics): reading requests, writing answers.

Two readers, one meaning. `read_plain_request` takes the request nearly every client sends
(`GET <path> HTTP/1.1`, a Host, bodiless, plain header lines) with one regex and a few
substring checks; whatever it does not accept in full it leaves to h11, which reads anything
HTTP/1.1 allows and refuses the rest. It is strict on purpose: it accepts only what h11 reads
the same way (tests/serve/test_http_wire.py checks that against h11 on generated requests),
so it changes how fast a request is read, never what it means.

    parsed = read_plain_request(b"GET /ready HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    parsed.target, parsed.close, parsed.end   # b"/ready", False, 31
    Answer(200, b"{}", JSON).wire(date_line(), head_only=False, close=False)
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

# The limits aiohttp applied on these ports, kept: a request line or a header line over
# 8190 bytes (414, 431), more than 128 headers (431).
MAX_REQUEST_LINE = 8190
MAX_HEADER_LINE = 8190
MAX_HEADERS = 128
# What one connection can make us buffer before its head ends (h11's limit for an unfinished
# head, 431 beyond it). A probe's, a load balancer's or a scrape's head is well under 1 KiB.
MAX_HEAD = 64 * 1024
# A head this short has no line over the limits above, so the plain reader needs no per-line check.
MAX_PLAIN_HEAD = min(MAX_REQUEST_LINE, MAX_HEADER_LINE)

JSON = "application/json"

# Request line and header lines, as h11 reads them but narrower: only GET or HEAD of an
# origin-form target, only HTTP/1.1, CRLF line ends, visible ASCII (and spaces, tabs in values).
_PLAIN_HEAD = re.compile(
    rb"(GET|HEAD) (/[\x21-\x7e]*) HTTP/1\.1\r\n"
    rb"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*)\r\n"
)
# Header names (after a line start, lowercased) that make a request not plain: a body h11
# must frame and the body limit must see.
_BODY_FIELDS = (b"\r\ncontent-length:", b"\r\ntransfer-encoding:")
_HOST_FIELD = b"\r\nhost:"
_CONNECTION_FIELD = b"\r\nconnection:"
_PLAIN_STARTS = (b"GET /", b"HEAD /")


@dataclass(frozen=True, slots=True)
class PlainRequest:
    head_only: bool  # HEAD
    target: bytes
    close: bool  # the client sent Connection: close
    end: int  # where the next request starts in the buffer
    fields: bytes = field(default=b"", compare=False)  # the header lines as sent, for `header_values`


class NotPlain(enum.Enum):
    """The buffer holds a request the plain reader does not take: h11 reads it."""

    NOT_PLAIN = "not plain"


NOT_PLAIN = NotPlain.NOT_PLAIN


def read_plain_request(buffer: bytes, scan_from: int = 0) -> PlainRequest | NotPlain | None:
    """The plain request at the start of `buffer`; None while its head is not all there.

    `scan_from` is how far an earlier call already looked for the head's end, so a head that
    arrives a byte at a time is searched once, not once per byte.
    """
    if not buffer.startswith(_PLAIN_STARTS) and not any(start.startswith(buffer) for start in _PLAIN_STARTS):
        return NOT_PLAIN  # not GET or HEAD of a path: known from the first bytes
    # Where h11 sees the head end: the first LF, optional CR, LF. A plain head ends in CRLF CRLF,
    # so a bare LF LF first (h11 takes bare LFs) is not plain.
    start = max(0, scan_from - 2)
    end, bare = buffer.find(b"\n\r\n", start), buffer.find(b"\n\n", start)
    if bare >= 0 and (end < 0 or bare < end):
        return NOT_PLAIN
    if end < 0:
        return NOT_PLAIN if len(buffer) > MAX_PLAIN_HEAD else None
    if end > MAX_PLAIN_HEAD:
        return NOT_PLAIN
    match = _PLAIN_HEAD.match(buffer)
    if match is None:
        return NOT_PLAIN
    fields = b"\r\n" + match[3].lower()
    if (
        fields.count(_HOST_FIELD) != 1  # h11 refuses none or several (400)
        or fields.count(b"\r\n") > MAX_HEADERS + 1
        or any(name in fields for name in _BODY_FIELDS)
    ):
        return NOT_PLAIN
    return PlainRequest(match[1] == b"HEAD", match[2], _asks_to_close(fields), match.end(), match[3])


def _asks_to_close(fields: bytes) -> bool:
    """Whether any Connection field (h11 joins them all) lists `close`."""
    at = fields.find(_CONNECTION_FIELD)
    while at >= 0:
        line_end = fields.find(b"\r\n", at + 2)
        value = fields[at + len(_CONNECTION_FIELD) : line_end if line_end >= 0 else len(fields)]
        if b"close" in (token.strip(b" \t") for token in value.split(b",")):
            return True
        at = fields.find(_CONNECTION_FIELD, at + 2)
    return False


def header_values(fields: bytes, name: bytes) -> str:
    """Every value of the header `name` (lowercase) in `fields` (CRLF-ended lines), joined by
    commas as RFC 9110 5.3 allows: what a handler that negotiates (Accept) reads."""
    values = [
        line.partition(b":")[2].strip(b" \t")
        for line in fields.split(b"\r\n")
        if line[: len(name) + 1].lower() == name + b":"
    ]
    return b",".join(values).decode("latin-1")


def h11_fields(request: h11.Request) -> bytes:
    """An h11 request's headers as the CRLF-ended lines `header_values` reads."""
    return b"".join(name + b":" + value + b"\r\n" for name, value in request.headers)


def h11_asks_to_close(request: h11.Request) -> bool:
    """h11's own keep-alive rule for a request it read: HTTP/1.0, or Connection: close."""
    if request.http_version < b"1.1":
        return True
    return any(
        name == b"connection" and b"close" in (token.strip(b" \t").lower() for token in value.split(b","))
        for name, value in request.headers
    )


def h11_request_problem(request: h11.Request, max_body: int) -> int | None:
    """The status refusing what h11 read but these ports don't take, or None.

    505 for an HTTP other than 1.x (an HTTP/2 preface); 413 for a body over `max_body` or of
    unknown length (any transfer coding), before anything reads it; 414 and 431 for the line
    limits, which h11 does not know.
    """
    if not request.http_version.startswith(b"1."):
        return 505
    length: int | None = 0
    for name, value in request.headers:
        if name == b"transfer-encoding":
            length = None
        elif name == b"content-length" and length is not None:
            length = int(value)  # h11 checked it is a number
    if length is None or length > max_body:
        return 413
    if len(request.method) + len(request.target) + len(b"  HTTP/1.1") > MAX_REQUEST_LINE:
        return 414
    if len(request.headers) > MAX_HEADERS or any(
        len(name) + len(value) + 2 > MAX_HEADER_LINE for name, value in request.headers
    ):
        return 431
    return None


# -- answers -----------------------------------------------------------------------------------

_CLOSE_LINE = b"Connection: close\r\n"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_line(now: float | None = None) -> bytes:
    """The Date header line (RFC 9110's IMF-fixdate), in English whatever the locale."""
    t = time.gmtime(now)
    stamp = (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
    return b"Date: " + stamp.encode() + b"\r\n"


class Answer:
    """One response, its bytes built once for each way it is sent (GET or HEAD, keep-alive or
    close) while the Date line stays the same: a long-poll's answer is one object, written
    to every waiter.

    No Server header: it would tell anyone who reaches the port which versions to attack.
    """

    __slots__ = ("_date", "_start", "_wires", "body", "status")

    def __init__(self, status: int, body: bytes, content_type: str, *, headers: bytes = b"") -> None:
        self.status = status
        self.body = body
        self._start = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s" % (
            status, HTTPStatus(status).phrase.encode(), content_type.encode(), len(body), headers,
        )
        self._date = b""
        self._wires: list[bytes | None] = [None] * 4

    def wire(self, date: bytes, *, head_only: bool, close: bool, extra: bytes = b"") -> bytes:
        """The bytes to write; `date` is the server's current Date line (the same object all second).

        `extra` is header lines of one request's own (a capped wait): rare, so built each time.
        """
        if extra:
            return b"".join(
                (self._start, date, extra, _CLOSE_LINE if close else b"", b"\r\n", b"" if head_only else self.body)
            )
        if date is not self._date:
            self._date, self._wires = date, [None] * 4
        variant = head_only + 2 * close
        wire = self._wires[variant]
        if wire is None:
            wire = self._wires[variant] = b"".join(
                (self._start, date, _CLOSE_LINE if close else b"", b"\r\n", b"" if head_only else self.body)
            )
        return wire


def json_answer(doc: Any, status: int = 200, *, headers: bytes = b"") -> Answer:
    return Answer(status, json.dumps(doc).encode(), JSON, headers=headers)


def error_answer(status: int, reason: str | None = None, *, headers: bytes = b"") -> Answer:
    """A refusal, JSON like every other answer of these ports: {"error": "Method Not Allowed"},
    or the status's one-line reason."""
    return json_answer({"error": reason or HTTPStatus(status).phrase}, status, headers=headers)
