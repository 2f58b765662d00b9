"""GET /live/<container> and /startup/<container>: the liveness and startup checks `inject --rewrite-liveness`
routes through the sidecar."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sidecar.app import Sidecar
from sidecar.config.loader import load_config
from sidecar.contract import CONFIG_ENV
from sidecar.runtime.settings import RunSettings
from tests.target_apps import FlipTarget

SETTINGS = RunSettings(health_port=0, grpc_port=None, metrics_port=None, bind="127.0.0.1", drain_seconds=0.5)


@pytest.fixture
async def live_target() -> AsyncIterator[FlipTarget]:
    target = await FlipTarget.start(200)
    yield target
    await target.stop()


@pytest.fixture
async def base_url(live_target: FlipTarget) -> AsyncIterator[str]:
    # The config exactly as inject writes it: readiness and liveness in one entry.
    config_text = json.dumps({"containers": [
        {"name": "app", "readinessProbe": {"tcpSocket": {"port": live_target.port}},
         "livenessProbe": {"httpGet": {"path": "/health", "port": live_target.port}, "timeoutSeconds": 1}},
        {"name": "db", "readinessProbe": {"tcpSocket": {"port": live_target.port}},
         "startupProbe": {"httpGet": {"path": "/health", "port": live_target.port}}},
    ]})  # fmt: skip
    car = Sidecar(load_config(environ={CONFIG_ENV: config_text}), SETTINGS)
    ports = await car.start()
    yield f"http://127.0.0.1:{ports.health}"
    await car.stop()


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_live_runs_the_liveness_check_once_per_request_and_answers_200_or_503(
    base_url: str, live_target: FlipTarget
) -> None:
    before = len(live_target.request_times)
    status, body = await get(base_url + "/live/app")
    assert (status, body["alive"], body["result"]) == (200, True, "success")
    assert len(live_target.request_times) == before + 1, "one request, not a cached answer"
    live_target.status = 500
    status, body = await get(base_url + "/live/app")
    assert (status, body) == (503, {"container": "app", "alive": False, "result": "failure", "reason": "HTTP 500"})


async def test_live_times_out_with_the_probes_own_timeout(base_url: str, live_target: FlipTarget) -> None:
    live_target.delay = 1.6  # past the 1 s timeout; short, so teardown need not wait long
    started = time.monotonic()
    status, body = await get(base_url + "/live/app")
    assert status == 503 and body["alive"] is False
    assert 0.9 < time.monotonic() - started < 1.5, "timeoutSeconds 1 bounds the attempt"


async def test_live_is_404_for_a_container_without_liveness_or_an_unknown_one(base_url: str) -> None:
    for name in ("db", "nope"):
        status, body = await get(f"{base_url}/live/{name}")
        assert status == 404
        assert body == {"error": f"no liveness check for container {name!r}"}


async def test_startup_runs_the_startup_check_once_per_request_and_answers_200_or_503(
    base_url: str, live_target: FlipTarget
) -> None:
    before = len(live_target.request_times)
    status, body = await get(base_url + "/startup/db")
    assert (status, body) == (200, {"container": "db", "started": True, "result": "success", "reason": "HTTP 200"})
    live_target.status = 500
    status, body = await get(base_url + "/startup/db")
    assert (status, body) == (503, {"container": "db", "started": False, "result": "failure", "reason": "HTTP 500"})
    assert len(live_target.request_times) == before + 2, "one request each, not a cached answer"


async def test_startup_is_404_for_a_container_without_one_even_with_a_liveness_check(base_url: str) -> None:
    for name in ("app", "nope"):
        status, body = await get(f"{base_url}/startup/{name}")
        assert (status, body) == (404, {"error": f"no startup check for container {name!r}"})
