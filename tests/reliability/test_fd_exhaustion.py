"""Out of file descriptors: every attempt that can't get a socket fails with EMFILE, and the
sidecar goes on.

`run` gets a hard RLIMIT_NOFILE of 64 (soft and hard, so raising the soft limit to the
hard one at start-up changes nothing) and 100 tcpSocket containers on one loopback port.
First nothing listens there: refusals hold a descriptor for microseconds. Then a listener
that never accepts, with a backlog of 0: the kernel drops further SYNs, so each container's
connect hangs for its timeout and holds a descriptor, and 100 of them need more than 64.
Some attempts find no descriptor. Then the listener accepts: connects finish at once, the
descriptors come back, and every container must get probed and become ready.

Throughout, over one keep-alive connection opened before the descriptors ran out (a new
one may not be accepted while they are out): /healthz stays 200 (no scheduler died), the
reasons name the errno ("connect EMFILE ..."), and what the sidecar logs about unexpected
exceptions stays at a few lines a second, not one per container or attempt. As the
kubelet's worker goes on after a crash (kubernetes pkg/kubelet/prober/worker.go, doProbe:
HandleCrash sets keepGoing).
"""

from __future__ import annotations

import http.client
import json
import re
import resource
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from sidecar.contract import HEALTHZ_PATH, READY_PATH, STATUS_PATH
from tests.reliability.running import LOOPS
from tests.sidecar_process import parse_ports, run_command, sidecar_environ

FD_LIMIT = 64  # soft and hard: a few dozen over what the sidecar needs idle
CONTAINERS = 100  # each holds a descriptor while its connect hangs: more than FD_LIMIT
EXHAUSTED_FOR = 3.0  # seconds of hanging connects
RECOVERY_TIMEOUT = 30.0
# "A few lines a second", in any one second, about unexpected exceptions.
MAX_CRASH_LINES_PER_SECOND = 3
# Lines about an exception an attempt or a scheduler raised, whatever their wording.
CRASH_LINE = re.compile(r"probe error|scheduler|died|Traceback", re.IGNORECASE)


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Acceptor:
    """Accepts and closes every connection on `sock`, from a thread, once started."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.sock.listen(1024)  # a listen() again resizes the queue: no SYN is dropped now
        self.sock.settimeout(0.1)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self.sock.close()


@pytest.fixture
def target_port() -> Iterator[int]:
    yield free_port()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


@pytest.mark.parametrize("loop", LOOPS)
def test_out_of_descriptors_attempts_fail_with_emfile_and_the_sidecar_recovers(loop: str, target_port: int) -> None:
    # Half by name (the resolver's path, open_socket), half by address (dial_at_once).
    hosts = ("localhost", "127.0.0.1")
    probes = [f"c{i}=tcp://{hosts[i % 2]}:{target_port}" for i in range(CONTAINERS)]
    argv = run_command(
        ["--loop", loop, "--grpc-port", "off", "--metrics-port", "off", *(a for p in probes for a in ("--probe", p))]
    )
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=sidecar_environ(), preexec_fn=low_fd_limit, start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: log.extend(line.decode(errors="replace") for line in stderr), daemon=True)
    reader.start()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    acceptor = Acceptor(listener)
    try:
        ports = parse_ports(proc.stdout.readline())
        conn = http.client.HTTPConnection("127.0.0.1", ports.health, timeout=5)
        assert get(conn, HEALTHZ_PATH)[0] == 200

        listener.bind(("127.0.0.1", target_port))
        listener.listen(0)  # and never accept: connects hang, each holding a descriptor
        messages: set[str] = set()
        deadline = time.monotonic() + EXHAUSTED_FOR
        while time.monotonic() < deadline:
            assert get(conn, HEALTHZ_PATH)[0] == 200
            status = json.loads(get(conn, STATUS_PATH)[1])
            messages.update(c["message"] for c in status["containers"] if c.get("message"))
            time.sleep(0.05)
        assert any("EMFILE" in m for m in messages), sorted(messages)[:20]
        assert not any("OSError" in m for m in messages), sorted(messages)[:20]

        acceptor.start()
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while (code := get(conn, READY_PATH)[0]) != 200 and time.monotonic() < deadline:
            assert get(conn, HEALTHZ_PATH)[0] == 200
            time.sleep(0.1)
        assert code == 200, "not every container got probed once descriptors were free"
        assert get(conn, HEALTHZ_PATH)[0] == 200
        conn.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        acceptor.stop()
    crash_lines = [line for line in log if CRASH_LINE.search(line)]
    per_second = Counter(line[:19] for line in crash_lines)  # "2026-12-02 14:10:41": the second it was logged
    assert max(per_second.values(), default=0) <= MAX_CRASH_LINES_PER_SECOND, crash_lines[:5]
