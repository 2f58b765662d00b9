"""The sidecar's own limits with real processes at a low fd limit, and the webhook's against
clients that dawdle or hang up: the limits degrade cleanly (docs/security.md, "Limits").

- `run` and `webhook` raise the soft RLIMIT_NOFILE to the hard limit (as Go's runtime does:
  golang/go src/os/rlimit.go, Go 1.19);
- a flood of idle connections at the fd limit: /healthz still answered, a short log, on both loops;
- at a port's connection cap, whatever every connection holds (long-polls, slowloris heads, Watch
  streams, TLS handshakes, reviews in flight), the kubelet's probe gets in (fd_limit.Standing);
- a connection closed by a deadline with its answers unread is reset, not left waiting for a reader;
- fd exhaustion at accept itself: one line, not asyncio's traceback per retry;
- the webhook: a trickled head or body is closed, an aborted upload is one debug line.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.http_site import KEEPALIVE_SECONDS
from sidecar.k8s.webhook import BODY_READ_SECONDS
from tests.conftest import REPO
from tests.reliability.running import LOOPS
from tests.sidecar_process import parse_ports, run_command, sidecar_environ

# An fd limit low enough to reach with a test's connections, high enough to start on.
LOW_FDS = 64
# Room for a loaded 2-core machine on top of a timeout under test.
MARGIN = 5.0


def _with_fd_limit(soft: int, hard: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _soft_open_files(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "open files" in line)
    return int(line.split()[3])


class Stderr:
    """A child's stderr, read by a thread, so a chatty child never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self.bytes = 0
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            self.bytes += len(raw)
            self.lines.append(raw.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in:\n" + "".join(self.lines))

    @property
    def text(self) -> str:
        return "".join(self.lines)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def _start_run(loop: str, soft: int, hard: int) -> tuple[subprocess.Popen[bytes], Stderr, int, int, int]:
    argv = run_command(
        ("--loop", loop, "--health-port", "0", "--metrics-port", "0", "--grpc-port", "0", "--drain-seconds", "0",
         "--log-level", "debug", "--probe", "web=tcp://127.0.0.1:1"),
    )  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sidecar_environ(),
        cwd=REPO, preexec_fn=_with_fd_limit(soft, hard),
    )  # fmt: skip
    assert proc.stdout is not None
    stderr = Stderr(proc)
    line = proc.stdout.readline()
    if not line:
        _stop(proc)
        raise AssertionError("run did not start:\n" + stderr.text)
    ports = parse_ports(line)
    assert ports.metrics is not None and ports.grpc is not None
    return proc, stderr, ports.health, ports.metrics, ports.grpc


def _healthz(port: int, timeout: float = 3.0, path: str = "/healthz") -> int | str:
    """The status of one GET on a new connection, or the name of the error instead."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError as exc:
        return type(exc).__name__
    finally:
        connection.close()


def _open_sending(port: int, count: int, payload: bytes) -> list[socket.socket]:
    """`count` connections that each send `payload` and then nothing, none read."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(payload)
        socks.append(sock)
    return socks


def _answered(sock: socket.socket) -> bytes | str:
    """What the server sent on `sock` so far without waiting: bytes (b"" for a FIN), or "reset", or
    "nothing" if it is still held."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return "nothing"
    except ConnectionResetError:
        return "reset"
    finally:
        sock.setblocking(True)


def _open_sockets(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if _readlink(fd).startswith("socket:"))


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""  # closed meanwhile


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing; the ones the kernel refuses or resets are kept too."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # a non-blocking connect in progress
            sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


@pytest.mark.parametrize("loop", LOOPS)
def test_run_raises_the_soft_open_files_limit_to_the_hard_one(loop: str) -> None:
    proc, stderr, *_ = _start_run(loop, soft=LOW_FDS, hard=4 * LOW_FDS)
    try:
        assert _soft_open_files(proc.pid) == 4 * LOW_FDS
        raised = stderr.wait_for(r"INFO open files limit raised from (\d+) to the hard limit (\d+)")
        assert raised.groups() == (str(LOW_FDS), str(4 * LOW_FDS))
    finally:
        _stop(proc)


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_connections_at_the_fd_limit_leave_healthz_answered_and_the_log_short(loop: str) -> None:
    """Before the cap: asyncio logged a traceback per accept retry (52 MB in 15 s at 64 fds) and
    /healthz hung; uvloop reset every new connection, the kubelet's included."""
    proc, stderr, health, metrics, _ = _start_run(loop, soft=LOW_FDS, hard=LOW_FDS)
    flood = _open_idle(health, 2 * LOW_FDS) + _open_idle(metrics, LOW_FDS)
    try:
        answers = []
        started = time.monotonic()
        while time.monotonic() - started < 5:
            answers.append(_healthz(health))
            time.sleep(0.25)
        assert 200 in answers, answers
        assert "Traceback" not in stderr.text
        # The probe's own lines (a start, a failure a second at debug, a summary) and no more.
        assert len(stderr.lines) < 40 and stderr.bytes < 8000, stderr.text[-2000:]
    finally:
        for sock in flood:
            sock.close()
        _stop(proc)


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_connections_at_the_fd_limit_leave_a_grpc_check_answered(loop: str) -> None:
    """The kubelet's grpc probe opens a connection per probe (kubernetes pkg/probe/grpc/grpc.go):
    at the cap, an idle one that never sent its preface makes room for it."""
    proc, stderr, _, _, grpc_port = _start_run(loop, soft=LOW_FDS, hard=LOW_FDS)
    flood = _open_idle(grpc_port, 2 * LOW_FDS)
    try:
        time.sleep(0.5)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert "Traceback" not in stderr.text
    finally:
        for sock in flood:
            sock.close()
        _stop(proc)


# An fd limit whose port share (fd_limit.PORT_SHARE_OF_FDS) is 1,000 connections: the flood below.
THOUSAND_FDS = 4000
THOUSAND = 1000
_HELD_POLL = b"GET /ready?wait=120s HTTP/1.1\r\nHost: x\r\n\r\n"  # the probe never passes: held
_HALF_HEAD = b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow"  # a slowloris, 10 s from its request timeout


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("flood", ["held", "mixed"])
def test_at_the_cap_a_flood_of_requests_in_flight_leaves_the_kubelets_probe_answered(loop: str, flood: str) -> None:
    """1,000 connections held at the health port's cap of 1,000 (and 20 more come), each with a request
    in flight: `held`, every one a /ready?wait= long-poll; `mixed`, half of them slowloris heads.
    The kubelet's probe (a new connection per probe: kubernetes pkg/probe/http/http.go sets
    DisableKeepAlives) is answered at once. Before: with every slot holding a long-poll each
    newcomer was reset, until a wait ended. The rule (fd_limit.Standing): a slowloris goes first,
    then the oldest long-poll, answered with what its wait's end would say (a whole answer,
    Connection: close), not a reset."""
    proc, stderr, health, _, _ = _start_run(loop, soft=THOUSAND_FDS, hard=THOUSAND_FDS)
    over = 20
    held_count = THOUSAND + over if flood == "held" else THOUSAND // 2
    slow = _open_sending(health, THOUSAND + over - held_count, _HALF_HEAD)
    time.sleep(0.5)  # read: dawdling, not new (fd_limit.NEW_CONNECTION_SECONDS counts from nothing heard)
    polls = _open_sending(health, held_count, _HELD_POLL)
    made_room = (polls if flood == "held" else slow)[:over]  # the first come, when the last 20 came
    try:
        deadline = time.monotonic() + 10
        while _answered(made_room[-1]) == "nothing" and time.monotonic() < deadline:
            time.sleep(0.05)
        probes = []
        for _ in range(5):
            started = time.monotonic()
            probes.append((_healthz(health, path="/ready"), time.monotonic() - started))
        assert [status for status, _ in probes] == [503] * 5, probes  # answered: not ready, as the probe fails
        assert max(seconds for _, seconds in probes) < 1.0, probes  # the kubelet's default timeoutSeconds
        if flood == "held":
            for early in made_room[:-1]:
                early.settimeout(5)
                answer = early.recv(65536)
                assert answer.startswith(b"HTTP/1.1 503 ") and b"connection: close" in answer.lower(), answer
            assert all(_answered(sock) == "nothing" for sock in polls[over + 5 :])
        else:
            assert all(_answered(sock) == "nothing" for sock in polls), "a long-poll went before a slowloris"
            assert all(_answered(sock) in ("reset", b"") for sock in made_room[:-1])
            assert all(_answered(sock) == "nothing" for sock in slow[over + 5 :])
        assert "Traceback" not in stderr.text
    finally:
        for sock in polls + slow:
            sock.close()
        _stop(proc)


def _watch_channel(port: int) -> grpc.Channel:
    # A subchannel pool of its own: a connection per channel, as separate clients would have.
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


@pytest.mark.parametrize("loop", LOOPS)
def test_at_the_cap_watch_streams_leave_a_grpc_check_answered(loop: str) -> None:
    """Every connection of the gRPC port at its cap holds a Watch stream: the kubelet's grpc probe
    (a new connection per probe: kubernetes pkg/probe/grpc/grpc.go) still gets its Check answered.
    Before: each newcomer was reset while every connection had a stream open. The oldest Watch
    ends UNAVAILABLE, the code a gRPC client retries."""
    proc, stderr, _, _, grpc_port = _start_run(loop, soft=LOW_FDS, hard=LOW_FDS)
    cap = LOW_FDS // 4
    channels = [_watch_channel(grpc_port) for _ in range(cap)]
    try:
        watches = []
        for channel in channels:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            next(stream)  # the first status: the stream is open on its own connection
            watches.append(stream)
        for _ in range(3):
            with _watch_channel(grpc_port) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as ended:
            next(watches[0])
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Traceback" not in stderr.text
    finally:
        for channel in channels:
            channel.close()
        _stop(proc)


# TCP's state in struct tcp_info (linux include/uapi/linux/tcp.h): CLOSE once a reset came.
_TCP_CLOSE = 7


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_closed_by_its_deadline_with_answers_unread_is_reset(loop: str) -> None:
    """A client that asks and never reads, then dawdles over a last head: at the request timeout the
    connection is reset. Before, a graceful close waited for the answers to drain (in the
    transport's buffer: the fd held until the client left; in the kernel's: the socket kept,
    retransmitting to a zero window). Answers from a few KiB to past the kernel's buffers."""
    proc, stderr, health, _, _ = _start_run(loop, soft=LOW_FDS, hard=LOW_FDS)
    socks = []
    try:
        for count in (20, 60, 150, 300):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connecting: a small window
            sock.connect(("127.0.0.1", health))
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n" * count + _HALF_HEAD)
            socks.append(sock)
        time.sleep(1)
        assert [_tcp_state(sock) for sock in socks] == [1] * len(socks)  # ESTABLISHED, answers unread
        deadline = time.monotonic() + 10 + MARGIN  # Timeouts.request, and room for a loaded machine
        while time.monotonic() < deadline and any(_tcp_state(sock) != _TCP_CLOSE for sock in socks):
            time.sleep(0.2)
        assert [_tcp_state(sock) for sock in socks] == [_TCP_CLOSE] * len(socks)
        assert _open_sockets(proc.pid) <= 3 + 2  # the listeners, and the probe's own at most
        assert "Traceback" not in stderr.text
    finally:
        for sock in socks:
            sock.close()
        _stop(proc)


_UNCAPPED_SERVER = """
import asyncio, logging, resource, sys
from sidecar.serve.http_server import GetOnlyServer
from sidecar.serve.http_wire import json_answer
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
async def main():
    # A cap above the fd limit: accept itself runs out of fds.
    routes = {"/healthz": lambda r: json_answer("ok")}
    server = GetOnlyServer(routes, max_body=0, shutdown_grace=0, max_connections=10_000)
    print(await server.start("127.0.0.1", 0), flush=True)
    await asyncio.sleep(3600)
if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_fd_exhaustion_at_accept_is_one_rate_limited_line(loop: str) -> None:
    """asyncio's selector loop logs `socket.accept() out of system resource` with a traceback once per
    pending connection per retry (cpython Lib/asyncio/selector_events.py, _accept_connection);
    uvloop (libuv's reserve-fd trick) resets the connection and logs nothing."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _UNCAPPED_SERVER, loop], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=sidecar_environ(), cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    stderr = Stderr(proc)
    port = int(proc.stdout.readline() or 0)
    assert port, stderr.text
    flood = _open_idle(port, 120)
    try:
        time.sleep(5)
        assert "Traceback" not in stderr.text
        exhausted = [line for line in stderr.lines if "cannot accept" in line]
        assert len(exhausted) <= 1, stderr.text[-2000:]
        assert len(stderr.lines) <= 3, stderr.text[-2000:]
        if loop == "asyncio":
            assert exhausted and "EMFILE" in exhausted[0]
    finally:
        for sock in flood:
            sock.close()
        _stop(proc)


@dataclass
class Webhook:
    proc: subprocess.Popen[bytes]
    port: int
    stderr: Stderr
    context: ssl.SSLContext

    def connect(self) -> ssl.SSLSocket:
        return self.context.wrap_socket(socket.create_connection(("127.0.0.1", self.port)), server_hostname="127.0.0.1")


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[Webhook]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "webhook", "--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0",
         "--cert", str(cert), "--key", str(key), "--log-level", "debug"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
        env=sidecar_environ(), preexec_fn=_with_fd_limit(LOW_FDS * 4, LOW_FDS * 8),
    )  # fmt: skip
    stderr = Stderr(proc)
    try:
        port = int(stderr.wait_for(r"webhook listening on https://127\.0\.0\.1:(\d+)")[1])
        context = ssl.create_default_context()
        ca.configure_trust(context)
        yield Webhook(proc, port, stderr, context)
    finally:
        _stop(proc)


def _closed_within(sock: ssl.SSLSocket, seconds: float) -> float | None:
    """Seconds until the server ends the connection (EOF or reset), or None if it did not in `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def test_webhook_raises_the_soft_open_files_limit_to_the_hard_one(webhook: Webhook) -> None:
    assert _soft_open_files(webhook.proc.pid) == LOW_FDS * 8


def test_webhook_aborted_uploads_are_one_debug_line_each_and_no_traceback(webhook: Webhook) -> None:
    """Before: 20 aborted uploads were 20 ERROR tracebacks, 440 lines."""
    before = len(webhook.stderr.lines)
    head = b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    for _ in range(20):
        with webhook.connect() as sock:
            sock.sendall(head + b"{" * 100)
            time.sleep(0.02)  # the head is read and the handler waits for the rest
    time.sleep(1)
    added = webhook.stderr.lines[before:]
    assert "Traceback" not in "".join(added)
    assert not [line for line in added if " ERROR " in line or " WARNING " in line], added
    assert len(added) <= 20, added


def test_webhook_closes_a_trickled_head_and_a_trickled_body(webhook: Webhook) -> None:
    """A slowloris over TLS: part of a request line, or a whole head and part of its body, then nothing."""
    head_only = webhook.connect()
    head_only.sendall(b"POST /mut")
    body = webhook.connect()
    body.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    try:
        body_closed = _closed_within(body, BODY_READ_SECONDS + MARGIN)
        head_closed = _closed_within(head_only, KEEPALIVE_SECONDS + MARGIN)
    finally:
        head_only.close()
        body.close()
    assert body_closed is not None, "a trickled body is held past BODY_READ_SECONDS"
    assert head_closed is not None, "a trickled head is held past KEEPALIVE_SECONDS"
    assert "Traceback" not in webhook.stderr.text


def _webhook_healthz(webhook: Webhook, timeout: float = 5.0) -> bytes:
    """GET /healthz over TLS on a new connection: the status line, or the error's name."""
    try:
        raw = socket.create_connection(("127.0.0.1", webhook.port), timeout=timeout)
        with webhook.context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(65536).partition(b"\r\n")[0]
    except OSError as exc:
        return type(exc).__name__.encode()


def _webhook_cap(webhook: Webhook) -> int:
    """The webhook's port share of the fd limit it raised to at start (fd_limit.connections_per_port)."""
    return _soft_open_files(webhook.proc.pid) // 4


def test_webhook_at_the_cap_tls_handshakes_never_begun_make_room_for_a_new_client(webhook: Webhook) -> None:
    """More connections than the fd limit, none starting its TLS handshake: the kubelet's /healthz and
    the API server still get in, and the webhook holds at most its cap. Before, the webhook had no
    cap: accept ran out of fds and /healthz waited in the backlog."""
    cap = _webhook_cap(webhook)
    flood = _open_idle(webhook.port, _soft_open_files(webhook.proc.pid) + 100)
    try:
        time.sleep(1.5)  # past NEW_CONNECTION_SECONDS: the flood's handshakes are dawdling
        answers = [_webhook_healthz(webhook) for _ in range(3)]
        assert answers == [b"HTTP/1.1 200 OK"] * 3, answers
        assert _open_sockets(webhook.proc.pid) <= cap + 2 + 4  # both ports' connections at most, the listeners
        assert _answered(flood[0]) in ("reset", b"")  # the first come made room first
        assert "Traceback" not in webhook.stderr.text
    finally:
        for sock in flood:
            sock.close()


def test_webhook_at_the_cap_reviews_in_flight_make_room_oldest_first(webhook: Webhook) -> None:
    """Every connection at the cap is a review whose body never comes whole (a slowloris past its
    head, in flight for BODY_READ_SECONDS): a new client still gets in, and the oldest in flight
    made room for it."""
    cap = _webhook_cap(webhook)
    head = b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"
    trickles = []
    try:
        for _ in range(cap):
            sock = webhook.connect()
            sock.sendall(head)
            trickles.append(sock)
        time.sleep(1.5)  # every one in flight, none new
        assert _webhook_healthz(webhook) == b"HTTP/1.1 200 OK"
        assert _webhook_healthz(webhook) == b"HTTP/1.1 200 OK"
        assert _closed_within(trickles[0], 2.0) is not None
        assert _closed_within(trickles[-1], 0.3) is None, "the newest in flight is held"
        assert "Traceback" not in webhook.stderr.text
    finally:
        for sock in trickles:
            sock.close()
