"""The claims of docs/security.md, each against a real process.

1. Endpoints never echo target bodies or exec output beyond a short, sanitised reason.
2. Every server limits request size: health, metrics, gRPC and the webhook refuse oversized
   requests, and no client can make the sidecar log a traceback.
3. The webhook speaks TLS only.
4. The exec command comes only from config: no path, query, header, body or gRPC service
   name makes the sidecar run anything.
5. The image and the injected container run as non-root with a read-only root filesystem,
   and a running sidecar writes no files.
6. Nothing listens outside the configured bind address.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import trustme
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from probes.result import MAX_MESSAGE_CHARS
from sidecar.k8s.inject import SIDECAR_NAME, InjectOptions, inject_object
from sidecar.k8s.webhook import MAX_REVIEW_BYTES
from tests.conftest import REPO
from tests.reliability import procfs
from tests.reliability.hostile import BODY_MARKER, OUTPUT_MARKER, REDIRECT_HOST, HostileFleet, short_printable
from tests.reliability.running import RunningSidecar, wait_until

# Health and metrics take bodiless GETs (MAX_REQUEST_BYTES = 1 KiB of body at most).
OVERSIZED_BODY = 2 * 1024 * 1024
# aiohttp refuses a request line or a header line over 8190 bytes.
OVERSIZED_LINE = 64 * 1024
LONG_FIRST_LINE = "A" * 100 + "TAIL-BEYOND-EIGHTY"


@dataclass
class Secured:
    car: RunningSidecar
    workdir: Path
    witness: Path  # no request may ever create this file


@pytest.fixture(scope="module")
def secured(fleet: HostileFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("security")
    output = workdir / "exec-output.txt"  # read by the command, so the markers are not in its argv
    output.write_text(f"{LONG_FIRST_LINE}\n{OUTPUT_MARKER}\n")
    fleet.set_status("secure-web", 503)
    config = {"containers": [
        {"name": "web", "readinessProbe": {"httpGet": {"port": fleet.ports["flip"], "path": "/flip/secure-web"}}},
        {"name": "away", "readinessProbe": {"httpGet": {"port": fleet.ports["flip"], "path": "/away"}}},
        {"name": "cmd", "readinessProbe": {"exec": {"command": ["sh", "-c", f"cat {output}; exit 4"]}},
         "livenessProbe": {"exec": {"command": ["true"]}}},
        {"name": "slow-live", "readinessProbe": {"exec": {"command": ["true"]}},
         "livenessProbe": {"exec": {"command": ["sh", "-c", f"echo run >> {workdir / 'live-runs'}; sleep 0.5"]},
                           "timeoutSeconds": 2}},
    ]}  # fmt: skip
    config_file = workdir / "containers.yaml"
    config_file.write_text(yaml.safe_dump(config))
    car = RunningSidecar.start("--health-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                               "--drain-seconds", "0", "-f", str(config_file))
    try:
        wait_until(lambda: all(c["attempts"] for c in car.status()["containers"]), 10, "every first attempt")
        yield Secured(car, workdir, workdir / "pwned")
    finally:
        car.stop()


def raw_request(port: int, data: bytes, *, tls: bool = False) -> bytes:
    """Send raw bytes, return what comes back first ("" if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        sock: socket.socket = plain
        if tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(plain)
        try:
            view, sent = memoryview(data), 0
            while sent < len(data):
                # A server that refuses early (413) answers, then closes with our unsent bytes
                # still coming: read its answer as soon as it is there, before the reset lands.
                if select.select([sock], [], [], 0)[0] and (early := _read_now(sock)):
                    return early
                sent += sock.send(view[sent : sent + 64 * 1024])
            return sock.recv(256)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return b""


def _read_now(sock: socket.socket) -> bytes:
    """What has arrived, without waiting: b"" when it was only TLS housekeeping (a session ticket)."""
    sock.settimeout(0)
    try:
        return sock.recv(256)
    except (ssl.SSLWantReadError, BlockingIOError):
        return b""
    finally:
        sock.settimeout(10)


def refused_with(port: int, data: bytes, tries: int = 5) -> int:
    """The status a TLS server refuses `data` with.

    The server answers, then closes with our last bytes unread, so its kernel resets the
    connection, and the reset can beat its answer to us (or drop it, unsent). A reset is
    a refusal too; the answer itself must come within `tries`.
    """
    for _ in range(tries):
        reply = raw_request(port, data, tls=True)
        if reply:
            return status_of(reply)
    raise AssertionError(f"{tries} tries, every one reset before an answer")


def status_of(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    assert match, reply[:80]
    return int(match[1])


# -- 1. no echo ------------------------------------------------------------------------------------


def test_no_endpoint_echoes_a_target_body_or_exec_output_beyond_a_short_reason(secured: Secured) -> None:
    car = secured.car
    containers = car.containers()
    assert containers["web"]["message"] == "HTTP 503"
    assert containers["away"]["message"] == f"HTTP 302: redirect to other host {REDIRECT_HOST} not followed"
    # Exec output: the first line only, sanitised and cut at 80 characters.
    assert containers["cmd"]["message"] == f"exec exit 4: {LONG_FIRST_LINE[:77]}..."
    for container in containers.values():
        assert short_printable(container["message"], MAX_MESSAGE_CHARS)

    texts = [car.get(path)[1].decode() for path in ("/ready", "/status", "/healthz", "/ready/web", "/ready/away",
                                                    "/ready/cmd", "/live/cmd")]
    texts += [car.metrics().text, car.log_text()]
    with grpc.insecure_channel(f"127.0.0.1:{car.grpc_port}") as channel:
        listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    texts.append(str(listed))
    for text in texts:
        for secret in (BODY_MARKER, OUTPUT_MARKER, "TAIL-BEYOND-EIGHTY"):
            assert secret not in text


# -- 2. request size limits -------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["health", "metrics"])
def test_health_and_metrics_ports_refuse_oversized_requests(secured: Secured, server: str) -> None:
    car = secured.car
    port, path = (car.health_port, "/ready") if server == "health" else (car.metrics_port, "/metrics")
    assert port is not None
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
    body = head + b"Content-Length: %d\r\n\r\n" % OVERSIZED_BODY + b"x" * OVERSIZED_BODY
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n100000\r\n" + b"x" * 0x100000 + b"\r\n0\r\n\r\n"
    long_header = head + b"X-Big: " + b"h" * OVERSIZED_LINE + b"\r\n\r\n"
    long_url = f"GET {path}?{'q' * OVERSIZED_LINE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    many_headers = head + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(300)) + b"\r\n"
    assert status_of(raw_request(port, body)) == 413
    assert status_of(raw_request(port, chunked)) == 413
    for oversized in (long_header, long_url, many_headers):
        assert status_of(raw_request(port, oversized)) in (400, 413, 414, 431)
    # A small body is still within the limit: the limit refuses size, not shape.
    assert status_of(raw_request(port, head + b"Content-Length: 5\r\n\r\nhello")) in (200, 503)
    # The client got its 4xx; the log got nothing (not one line per bad request, no traceback).
    time.sleep(0.2)
    assert "Traceback" not in car.log_text() and "Error handling request" not in car.log_text()


def test_grpc_port_refuses_oversized_messages_and_metadata(secured: Secured) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secured.car.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(service="s" * 8192), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(service=""), metadata=(("x-big", "m" * OVERSIZED_LINE),),
                       timeout=5)
        assert caught.value.code() != grpc.StatusCode.OK
        # Still serving the next caller.
        assert stub.Check(health_pb2.HealthCheckRequest(service="web"), timeout=5).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
    assert "Traceback" not in secured.car.log_text()


@dataclass
class Webhook:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int  # plain HTTP, GET /metrics only
    log: list[str]


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    certs = tmp_path_factory.mktemp("webhook-certs")
    leaf = trustme.CA().issue_cert("readiness-sidecar-webhook.default.svc", "127.0.0.1")
    cert, key = certs / "tls.crt", certs / "tls.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "webhook", "--bind", "127.0.0.1", "--port", "0",
         "--metrics-port", "0", "--cert", str(cert), "--key", str(key)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert proc.stderr is not None
    log: list[str] = []
    deadline = time.monotonic() + 20
    listening = r"webhook listening on https://127\.0\.0\.1:(\d+) .*metrics on http://127\.0\.0\.1:(\d+)/metrics"
    while not (match := re.search(listening, log[-1] if log else "")):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(log)
        log.append(proc.stderr.readline().decode())
    try:
        yield Webhook(proc, int(match[1]), int(match[2]), log)
    finally:
        proc.terminate()
        proc.wait(10)


def test_webhook_refuses_an_oversized_review_and_oversized_headers(webhook: Webhook) -> None:
    head = b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    too_big = head + b"Content-Length: %d\r\n\r\n" % (MAX_REVIEW_BYTES + 1) + b"{" * (MAX_REVIEW_BYTES + 1)
    assert refused_with(webhook.port, too_big) == 413
    long_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * OVERSIZED_LINE + b"\r\n\r\n"
    assert refused_with(webhook.port, long_header) in (400, 431)
    assert status_of(raw_request(webhook.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", tls=True)) == 200


# -- 3. TLS only ------------------------------------------------------------------------------------


def test_webhook_answers_no_plain_http(webhook: Webhook) -> None:
    reply = raw_request(webhook.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not reply.startswith(b"HTTP/"), reply
    review = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode()
    reply = raw_request(webhook.port, b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(review), review))
    assert not reply.startswith(b"HTTP/"), reply
    # The one plain-HTTP port is the metrics port, and it serves nothing of the webhook's.
    assert sorted(p for p in procfs.listening_sockets(webhook.proc.pid) if p[0].startswith("tcp")) == sorted(
        [("tcp", "127.0.0.1", webhook.port), ("tcp", "127.0.0.1", webhook.metrics_port)]
    )
    for request in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(review), review)):
        assert status_of(raw_request(webhook.metrics_port, request)) == 404
    assert status_of(raw_request(webhook.metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


# -- 4. commands come from config only --------------------------------------------------------------


def test_no_request_makes_the_sidecar_run_a_command(secured: Secured) -> None:
    car, witness = secured.car, secured.witness
    command = f"touch {witness}"
    quoted = command.replace(" ", "%20").replace("/", "%2F")
    argv = json.dumps({"exec": {"command": ["touch", str(witness)]}, "command": ["touch", str(witness)]})
    paths = ["/ready", "/status", "/healthz", "/ready/cmd", "/live/cmd", "/wait-for-drain", "/exec", "/run",
             "/probe", "/check", "/debug", f"/ready/{quoted}", f"/live/{quoted}", "/ready/..%2F..%2Fbin%2Ftouch"]
    queries = ["", f"?command={quoted}", f"?cmd={quoted}&exec={quoted}", f"?probe=exec:{quoted}"]
    statuses: dict[str, set[int]] = {}
    for port in (car.health_port, car.metrics_port):
        assert port is not None
        for path in paths:
            if path == "/wait-for-drain" and port == car.health_port:
                continue  # it would start a drain (for a preStop hook); it takes no input either
            for query in queries:
                for method in ("GET", "POST", "PUT"):
                    body = argv.encode() if method != "GET" else b""
                    request = (f"{method} {path}{query} HTTP/1.1\r\nHost: x\r\nX-Command: {command}\r\n"
                               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                    reply = raw_request(port, request + body)
                    statuses.setdefault(method, set()).add(status_of(reply))
    with grpc.insecure_channel(f"127.0.0.1:{car.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in (f"exec:{command}", command, "cmd; touch x"):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    time.sleep(0.5)
    assert not witness.exists(), "a request ran a command"
    # Nothing but GET is served, and no GET took its argument from the request.
    assert statuses["POST"] <= {404, 405} and statuses["PUT"] <= {404, 405}, statuses
    status = car.containers()
    assert status["cmd"]["target"].startswith("exec:sh -c 'cat ") and "touch" not in status["cmd"]["target"]
    assert json.loads(car.get("/live/cmd?command=false")[1])["reason"] == "exit 0"  # still the configured `true`


async def test_concurrent_live_calls_share_one_attempt(secured: Secured) -> None:
    """/live/<name> runs the configured liveness check, and anything that reaches the port may
    call it: a hundred callers at once must not start a hundred processes."""
    runs = secured.workdir / "live-runs"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def call() -> int:
            async with session.get(secured.car.base + "/live/slow-live") as response:
                return response.status

        statuses = await asyncio.gather(*(call() for _ in range(100)))
    assert statuses == [200] * 100
    assert 1 <= len(runs.read_text().split()) <= 3, runs.read_text()


# -- 5. non-root, read-only root filesystem -----------------------------------------------------------

_WORKLOADS = {
    "Deployment": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "template": {"spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}],
                                              "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}}}]}}}},
    "Knative Service": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "web"},
                        "spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "native"), [("Deployment", False), ("Deployment", True), ("Knative Service", False)],
    ids=["deployment", "deployment-native-sidecar", "knative-service"],
)
def test_injected_sidecar_runs_non_root_with_a_read_only_root_filesystem(kind: str, native: bool) -> None:
    injected, _ = inject_object(_WORKLOADS[kind], "security.yaml", InjectOptions(native_sidecar=native))
    pod_spec = injected["spec"]["template"]["spec"]
    [sidecar] = [c for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
                 if c["name"] == SIDECAR_NAME]
    context: dict[str, Any] = sidecar["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0 and context.get("runAsGroup", 1) != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add")
    assert "privileged" not in context or context["privileged"] is False


def test_image_runs_as_a_numeric_non_root_user_without_writing_bytecode() -> None:
    dockerfile = REPO / "Dockerfile"
    if not dockerfile.exists():
        pytest.skip("no Dockerfile in this checkout")
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    final_stage = lines[max(i for i, line in enumerate(lines) if line.upper().startswith("FROM ")):]
    users = [line.split(None, 1)[1] for line in final_stage if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so Kubernetes can verify runAsNonRoot without a passwd lookup.
    assert user.isdigit() and int(user) != 0 and (not group or (group.isdigit() and int(group) != 0))
    # A read-only root filesystem leaves Python nowhere to write .pyc files.
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(final_stage)


def test_a_running_sidecar_writes_no_files(fleet: HostileFleet, tmp_path: Path) -> None:
    """What a read-only root filesystem needs: no file written at start, while probing
    (exec included) and serving, or at exit, in the working, home or temp directory."""
    places = {name: tmp_path / name for name in ("cwd", "home", "tmp")}
    for place in places.values():
        place.mkdir()
    car = RunningSidecar.start(
        "--health-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--drain-seconds", "0",
        "--probe", f"web={fleet.flip_url('writes-nothing')}", "--probe", "cmd=exec:true",
        env={"HOME": str(places["home"]), "TMPDIR": str(places["tmp"]), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=places["cwd"],
    )
    try:
        wait_until(lambda: all(c["attempts"] > 3 for c in car.status()["containers"]), 10, "attempts")
        car.metrics()
        car.terminate()
        assert car.wait(10) == 0
    finally:
        car.stop()
    assert {name: sorted(p.name for p in place.iterdir()) for name, place in places.items()} == {
        "cwd": [], "home": [], "tmp": []
    }


# -- 6. bind address ------------------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1"])
def test_every_listening_socket_is_on_the_configured_address(fleet: HostileFleet, bind: str) -> None:
    car = RunningSidecar.start("--health-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                               "--drain-seconds", "0", "--probe", f"web={fleet.flip_url('bind')}", "--probe",
                               f"rpc=grpc://127.0.0.1:{fleet.ports['grpc']}", bind=bind)
    try:
        wait_until(lambda: all(c["attempts"] for c in car.status()["containers"]), 10, "first attempts")
        listening = procfs.listening_sockets(car.pid)
    finally:
        car.stop()
    # Exactly the address: no socket of another family (grpcio's server listened on 127.0.0.1 as ::ffff:127.0.0.1).
    addresses = sorted((address, port) for _, address, port in listening)
    assert addresses == sorted((bind, port) for port in (car.health_port, car.grpc_port, car.metrics_port))
