"""The common HTTP response, read without h11: a strict subset of what h11 parses the same way.

Nearly every probe response arrives whole in one read: a status line, a few headers and
a short body whose end is known. `parse_simple_head` accepts a head only when h11 would
parse it to the same status and the same body framing, and returns None for anything
else (1xx, Transfer-Encoding, a Content-Length h11 would normalise or reject, obs-fold,
bare LF, control characters, an unfinished head, HTTP/2.0 status lines ...); the caller
then hands the very same bytes to h11, whose verdict and message stand. When in doubt,
None: a head wrongly refused costs an h11 parse, a head wrongly accepted changes a verdict.

    head = parse_simple_head(b"HTTP/1.1 503 Service Unavailable\\r\\nContent-Length: 9\\r\\n\\r\\nnot ready")
    head.status, head.size, head.content_length   # 503, 55, 9

tests/probes/test_http_fast_path.py checks the agreement with h11 on generated responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# h11's grammar (h11/_abnf.py), narrowed: HTTP/1.0 and 1.1, final statuses 200-599, CRLF
# line ends only, printable ASCII or obs-text in values. The quantifiers are possessive so
# that a hostile run of blanks costs linear time, never backtracking.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
_VALUE_CHAR = rb"[\x21-\x7e\x80-\xff]"
_HEADER_LINE = rb"%s:[ \t]*+(?:%s++(?:[ \t]++%s++)*+)?[ \t]*+\r\n" % (_TOKEN, _VALUE_CHAR, _VALUE_CHAR)
_SIMPLE_HEAD = re.compile(
    rb"HTTP/1\.[01] ([2-5][0-9][0-9])(?: [ \t\x21-\x7e\x80-\xff]*+)?\r\n(?:%s)*+\r\n" % _HEADER_LINE
)
# In a head that matched, every header line starts right after a CRLF: these find exactly
# the framing headers, whatever their case.
_TRANSFER_ENCODING = b"\r\ntransfer-encoding:"
_CONTENT_LENGTH_NAME = b"\r\ncontent-length:"
# One plain number, well below h11's 20 digits; a list ("5, 5") or anything else is h11's.
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*+([0-9]{1,18})[ \t]*+\r\n")
# Responses that never have a body, whatever their headers say (RFC 9110 6.4.1, as h11).
_NO_BODY_STATUSES = frozenset({204, 304})
# h11's own bound on an unfinished head (max_incomplete_event_size in probes/http_get.py);
# a longer head, even a finished one, is left to h11.
MAX_SIMPLE_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class SimpleHead:
    """A response head h11 would read the same way."""

    status: int
    size: int  # bytes from the status line to the blank line: the body starts here
    content_length: int | None  # None: the body ends when the peer closes the connection


def parse_simple_head(data: bytes) -> SimpleHead | None:
    """The head at the start of `data`, or None when it is unfinished or anything but simple."""
    end = data.find(b"\r\n\r\n", 0, MAX_SIMPLE_HEAD_BYTES)
    if end < 0:
        return None
    size = end + 4
    match = _SIMPLE_HEAD.fullmatch(data, 0, size)
    if match is None:
        return None
    status = int(match[1])
    # The header lines, each behind its CRLF; the status line's reason can't hold one.
    headers = data[match.end(1) : end + 2].lower()
    if _TRANSFER_ENCODING in headers:
        return None
    lengths = headers.count(_CONTENT_LENGTH_NAME)
    if lengths == 0:
        content_length = None
    elif lengths == 1 and (length := _CONTENT_LENGTH.search(headers)) is not None:
        content_length = int(length[1])
    else:
        return None  # repeated or not a plain number: h11 merges, or rejects, these
    if status in _NO_BODY_STATUSES:
        content_length = 0
    return SimpleHead(status, size, content_length)
