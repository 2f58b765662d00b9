"""The plain-request reader is strict: whatever it accepts, h11 reads the same way.

The health and metrics ports read `GET <path> HTTP/1.1` requests with one regex
(sidecar/serve/http_wire.py) and leave the rest to h11. That shortcut may only change how
fast a request is read, never what it means, so here every request it takes is read by h11
too, from generated heads that mix valid and invalid parts, and the two must agree:
method, target, keep-alive, no body, where the next request starts.
"""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.serve.http_wire import (
    MAX_HEADERS,
    MAX_PLAIN_HEAD,
    NOT_PLAIN,
    Answer,
    PlainRequest,
    date_line,
    h11_asks_to_close,
    h11_fields,
    h11_request_problem,
    header_values,
    read_plain_request,
)

NEXT = b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n"

# Bytes, mostly visible ASCII, sometimes a space, a control, a CR or LF, or obs-text.
octets = st.lists(st.sampled_from([*range(0x21, 0x7F)] * 2 + [0x00, 0x09, 0x0A, 0x0D, 0x20, 0x7F, 0x80, 0xFF]),
                  max_size=10).map(bytes)
# Each part of a head: how it looks in a plain request, and what else a client may send there.
PARTS: dict[str, tuple[st.SearchStrategy[bytes], st.SearchStrategy[bytes]]] = {
    "method": (st.sampled_from([b"GET", b"HEAD"]), st.sampled_from([b"POST", b"get", b"OPTIONS", b"GET\t", b""])),
    "target": (
        st.sampled_from([b"/ready", b"/ready?wait=1s", b"/ready/app", b"/a%20b", b"/", b"//x", b"/?#"]),
        st.one_of(octets.map(lambda raw: b"/" + raw),
                  st.sampled_from([b"*", b"http://h/ready", b"/\x7f", b"/\xc3\xbc", b"/a b", b""])),
    ),
    "version": (st.just(b"HTTP/1.1"),
                st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11"])),
    "name": (
        st.sampled_from([b"Connection", b"connection", b"User-Agent", b"X-A", b"Accept", b"ACCEPT-encoding"]),
        st.sampled_from([b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"Expect", b"Bad Name", b"",
                         b"Host ", b"X:Y", b"\xc3\xa9"]),
    ),
    "separator": (st.sampled_from([b":", b": ", b":\t", b":  "]), st.sampled_from([b" :", b""])),
    "value": (
        st.sampled_from([b"x", b"close", b"keep-alive, close", b" Close ", b"closed", b"upgrade,close", b"a\tb", b"",
                         b" ", b"*/*"]),
        st.one_of(octets, st.sampled_from([b"0", b"5", b"chunked", b"\x00", b"\x7f", b"a\rb", b"a\nb", b"\xc3\xa9"])),
    ),
    "line end": (st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r"])),
    "host": (st.just(1), st.sampled_from([0, 2])),  # how many Host fields
}


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A plain head with up to two kinds of part drawn from what else clients send: the edges where
    the two readers could differ. (Any one part drawn as something else may still be plain.)"""
    altered = draw(st.sets(st.sampled_from(sorted(PARTS)), max_size=2))

    def part(name: str) -> Any:
        plain, other = PARTS[name]
        return draw(st.one_of(plain, other) if name in altered else plain)

    request_line = part("method") + b" " + part("target") + b" " + part("version")
    fields = [part("name") + part("separator") + part("value") for _ in range(draw(st.integers(0, 4)))]
    for _ in range(part("host")):
        fields.insert(draw(st.integers(0, len(fields))), b"Host: h")
    return b"".join(line + part("line end") for line in [request_line, *fields]) + part("line end")


def h11_reads(data: bytes) -> tuple[h11.Request, list[object], bytes]:
    """h11's Request for `data`, the events after it up to its end, and what follows."""
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(data)
    request = parser.next_event()
    assert isinstance(request, h11.Request), request
    after = []
    while not isinstance(event := parser.next_event(), h11.EndOfMessage):
        after.append(event)
    return request, after, parser.trailing_data[0]


@settings(max_examples=3000, deadline=None)
@given(heads())
@example(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
@example(b"HEAD /ready?wait=5s HTTP/1.1\r\nhost: x\r\nConnection: keep-alive\r\nconnection: close\r\n\r\n")
@example(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection:  Upgrade ,\tCLOSE \r\n\r\n")
def test_every_request_the_plain_reader_takes_h11_reads_the_same_way(head: bytes) -> None:
    plain = read_plain_request(head + NEXT)
    if not isinstance(plain, PlainRequest):
        return
    request, after, rest = h11_reads(head + NEXT)
    assert after == [], "a plain request has no body"
    assert (request.method, request.target) == ((b"HEAD" if plain.head_only else b"GET"), plain.target)
    assert h11_asks_to_close(request) == plain.close
    assert h11_request_problem(request, max_body=0) is None
    assert (head + NEXT)[plain.end :] == rest == NEXT
    for name in {name for name, _ in request.headers} | {b"accept", b"accept-encoding"}:
        # what a handler reads (Request.header) is the same from either reader's lines
        assert header_values(plain.fields, name) == header_values(h11_fields(request), name), name


def test_what_a_kubelet_a_load_balancer_and_prometheus_send_is_plain() -> None:
    kubelet = (b"GET /ready HTTP/1.1\r\nHost: 10.0.0.7:8550\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\n"
               b"Connection: close\r\n\r\n")
    scrape = (b"GET /metrics HTTP/1.1\r\nHost: 10.0.0.7:8552\r\nUser-Agent: Prometheus/2.53.0\r\n"
              b"Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n"
              b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
    wrk = b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1:8550\r\n\r\n"
    assert read_plain_request(kubelet) == PlainRequest(False, b"/ready", True, len(kubelet))
    assert read_plain_request(scrape) == PlainRequest(False, b"/metrics", False, len(scrape))
    assert read_plain_request(b"HEAD" + wrk[3:]) == PlainRequest(True, b"/ready", False, len(wrk) + 1)


def test_h11_reads_bodies_other_methods_and_versions() -> None:
    for head in (
        b"POST /ready HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /ready HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /ready HTTP/1.0\r\n\r\n",
        b"GET /ready HTTP/1.1\r\n\r\n",  # no Host: h11 refuses it
        b"GET /ready HTTP/1.1\nHost: x\n\n",
        b"GET http://x/ready HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nGET /ready HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        assert read_plain_request(head) is NOT_PLAIN, head


def test_an_unfinished_head_waits_and_is_searched_once() -> None:
    head = b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
    scanned = 0
    for end in range(1, len(head)):
        assert read_plain_request(head[:end], scanned) is None, head[:end]
        scanned = end
    assert read_plain_request(head, scanned) == PlainRequest(False, b"/ready", False, len(head))
    assert read_plain_request(b"POS") is NOT_PLAIN, "known from the first bytes"
    assert read_plain_request(b"HEAD ") is None


def test_heads_past_the_plain_limits_go_to_h11() -> None:
    long_target = b"GET /" + b"a" * MAX_PLAIN_HEAD + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * MAX_HEADERS + b"\r\n"
    unfinished = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * MAX_PLAIN_HEAD
    for head in (long_target, many, unfinished):
        assert read_plain_request(head) is NOT_PLAIN


def test_h11_request_problems_are_the_ports_limits() -> None:
    def problem(head: bytes) -> int | None:
        request, _, _ = h11_reads(head)
        return h11_request_problem(request, max_body=1024)

    base = b"GET / HTTP/1.1\r\nHost: x\r\n"
    assert problem(base + b"Content-Length: 1024\r\n\r\n" + b"x" * 1024) is None
    assert problem(base + b"Content-Length: 1025\r\n\r\n" + b"x" * 1025) == 413
    assert problem(base + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 413
    assert problem(b"GET /" + b"a" * 8190 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 414
    assert problem(base + b"X: " + b"v" * 8190 + b"\r\n\r\n") == 431
    assert problem(base + b"X: v\r\n" * 128 + b"\r\n") == 431


def test_an_answer_is_built_once_per_variant_and_date() -> None:
    answer = Answer(503, b'{"ready":false}', "application/json")
    date = date_line(0)
    assert date == b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    get = answer.wire(date, head_only=False, close=False)
    assert get == (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
                   + date + b'\r\n{"ready":false}')
    assert answer.wire(date, head_only=False, close=False) is get
    head = answer.wire(date, head_only=True, close=True)
    assert head == get[: get.index(b"\r\n\r\n")] + b"\r\nConnection: close\r\n\r\n"
    assert answer.wire(date_line(1), head_only=False, close=False) is not get
    assert b"Server" not in get
