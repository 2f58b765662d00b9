"""What every port answers, asked for real: JSON on the health port whatever the request (a POST to
/ready too), no Server header on any port (health, metrics, gRPC, the webhook), and a ?wait= over
the cap held to the cap and said so.

A real `run` subprocess on 127.0.0.1; the webhook in-process on a real TLS socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from sidecar.contract import METRICS_PATH, READY_PATH, STATUS_PATH, WAIT_CAPPED_HEADER, WAIT_PARAM
from sidecar.k8s.inject import InjectOptions
from sidecar.k8s.tls_reload import TlsFiles
from sidecar.k8s.webhook import WebhookServer
from sidecar.serve.health_http import MAX_WAIT_SECONDS
from tests.serve.test_grpc_h2 import RawClient
from tests.sidecar_process import SidecarProcess

# Answered within this, or the test fails (a held long-poll would take MAX_WAIT_SECONDS).
WITHIN = 10.0


@pytest.fixture
def free_port() -> Iterator[int]:
    """A port on 127.0.0.1 nothing listens on (yet): the probe's target, refused until a test listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


@pytest.fixture
async def car(free_port: int) -> AsyncIterator[SidecarProcess]:
    car = await SidecarProcess.start(
        "--probe",
        f"app=tcp://127.0.0.1:{free_port}",
        "--health-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--drain-seconds",
        "0",
    )
    try:
        yield car
    finally:
        car.terminate()
        await car.wait()
        await car.kill()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WITHIN)) as s:
        yield s


async def test_a_post_to_ready_is_json_like_every_answer(car: SidecarProcess, session: aiohttp.ClientSession) -> None:
    metrics = f"http://127.0.0.1:{car.metrics_port}"
    for method, url in [
        ("POST", car.base + READY_PATH),
        ("PUT", car.base + STATUS_PATH),
        ("DELETE", car.base + READY_PATH + "/app"),
        ("POST", metrics + METRICS_PATH),
    ]:
        async with session.request(method, url, data=b"{}") as reply:
            assert reply.status == 405, (method, url)
            assert reply.headers["Content-Type"] == "application/json", (method, url)
            assert reply.headers["Allow"] == "GET, HEAD"
            assert await reply.json() == {"error": "Method Not Allowed"}
    for url in (car.base + "/nope", metrics + "/nope"):
        async with session.get(url) as reply:
            assert (reply.status, reply.headers["Content-Type"]) == (404, "application/json")
            assert await reply.json() == {"error": "Not Found"}


async def test_no_answer_of_run_carries_a_server_header(car: SidecarProcess, session: aiohttp.ClientSession) -> None:
    metrics = f"http://127.0.0.1:{car.metrics_port}"
    asked = []
    for method, url in [
        ("GET", car.base + READY_PATH),
        ("GET", car.base + READY_PATH + "/app"),
        ("GET", car.base + STATUS_PATH),
        ("GET", car.base + "/healthz"),
        ("HEAD", car.base + READY_PATH),
        ("POST", car.base + READY_PATH),
        ("GET", car.base + "/nope"),
        ("GET", metrics + METRICS_PATH),
        ("GET", metrics + "/nope"),
    ]:
        async with session.request(method, url) as reply:
            asked.append((method, url, reply.status))
            assert "Server" not in reply.headers, (method, url, reply.headers["Server"])
    assert len(asked) == 9
    assert car.grpc_port is not None
    client = await RawClient.connect(car.grpc_port)
    try:
        response = await client.response(client.request())
        ok = await client.response(client.request(method=b"GET"))  # not gRPC: refused with 405
    finally:
        await client.aclose()
    for headers in (response.headers, response.trailers, ok.headers):
        assert b"server" not in headers, headers
    assert response.headers[b":status"] == b"200" and ok.headers[b":status"] == b"405"


async def test_a_wait_over_the_cap_is_held_to_the_cap_and_says_so(
    car: SidecarProcess, session: aiohttp.ClientSession, free_port: int
) -> None:
    async with session.get(f"{car.base}{READY_PATH}?{WAIT_PARAM}=0s") as reply:
        assert reply.status == 503, "not ready: the probe's target refuses"
    held = asyncio.ensure_future(session.get(f"{car.base}{READY_PATH}?{WAIT_PARAM}=10m"))
    within = asyncio.ensure_future(session.get(f"{car.base}{READY_PATH}/app?{WAIT_PARAM}=5m"))
    await asyncio.sleep(0.3)
    assert not held.done() and not within.done(), "both held while not ready"
    # The app comes up (accepting, so probes never fill a backlog): the held answers go out now.
    target = await asyncio.start_server(_hang_up, "127.0.0.1", free_port)
    try:
        capped, exact = await asyncio.wait_for(asyncio.gather(held, within), WITHIN)
        async with capped, exact:
            assert (capped.status, exact.status) == (200, 200)
            assert capped.headers[WAIT_CAPPED_HEADER] == f"{MAX_WAIT_SECONDS:g}" == "300"
            assert WAIT_CAPPED_HEADER not in exact.headers, "5m is the cap itself: not capped"
            assert (await capped.json())["ready"] is True
        async with session.get(f"{car.base}{READY_PATH}?{WAIT_PARAM}=10m") as at_once:
            assert at_once.status == 200 and WAIT_CAPPED_HEADER not in at_once.headers, "ready: never held"
    finally:
        target.close()
        await target.wait_closed()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


# -- the webhook --------------------------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def webhook(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[int]:
    files = TlsFiles(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(files.cert)
    leaf.private_key_pem.write_to_path(files.key)
    server = WebhookServer(InjectOptions(), files)
    port = await server.start("127.0.0.1", 0)
    yield port
    await server.stop()


async def test_no_answer_of_the_webhook_carries_a_server_header(webhook: int, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    base = f"https://127.0.0.1:{webhook}"
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u"}}
    statuses = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for method, path, body in [
            ("POST", "/mutate", json.dumps(review).encode()),
            ("POST", "/mutate", b"not json"),
            ("GET", "/healthz", None),
            ("GET", "/mutate", None),
            ("GET", "/nope", None),
        ]:
            async with session.request(method, base + path, data=body) as reply:
                statuses.append(reply.status)
                assert "Server" not in reply.headers, (method, path, reply.headers["Server"])
    assert statuses[2:] == [200, 405, 404]
