"""`inject --rewrite-liveness` through the real CLI, and the probes it writes answered by a real `run`.

Istio's injector rewrites httpGet, tcpSocket and grpc liveness and startup probes to its agent's
/app-health/<c>/livez|startupz and leaves exec probes alone (istio pkg/kube/inject/app_probe.go;
its fixture pkg/kube/inject/testdata/inject/startup_ready_live.yaml.injected). We do the same to
/live/<c> and /startup/<c>: the kubelet keeps its timing and thresholds, the sidecar runs the
original check once per request.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from probes.spec import GrpcSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.documents import load_documents
from sidecar.config.loader import load_config
from sidecar.config.pod_template import find_pod_specs
from sidecar.contract import CONFIG_ENV, HEALTH_PORT_NAME, SIDECAR_NAME
from sidecar.k8s.lint import lint_documents
from sidecar.model import ROUTED_CHECK_FIELDS
from tests.conftest import REPO, sidecar_cmd
from tests.serve.test_metrics import Scrape
from tests.sidecar_process import SidecarProcess
from tests.target_apps import FlipTarget

ROUTED = REPO / "tests" / "data" / "inject" / "routed-probes.yaml"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def inject(text: str, env: dict[str, str], *flags: str) -> str:
    done = subprocess.run(
        sidecar_cmd("inject", "--rewrite-liveness", *flags),
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def containers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every container of the object's one pod template, by name."""
    (ref,) = find_pod_specs(doc, "out")
    spec = ref.pod_spec
    return {c["name"]: c for c in spec["containers"] + spec.get("initContainers", [])}


def sidecar_config_text(doc: dict[str, Any]) -> str:
    (env,) = [e for e in containers(doc)[SIDECAR_NAME]["env"] if e["name"] == CONFIG_ENV]
    return str(env["value"])


def test_http_grpc_and_tcp_liveness_and_startup_go_through_the_sidecar_and_exec_stays(
    sidecar_env: dict[str, str],
) -> None:
    doc = yaml.safe_load(inject(ROUTED.read_text(), sidecar_env))
    by_name = containers(doc)
    (health_port,) = [p["containerPort"] for p in by_name[SIDECAR_NAME]["ports"] if p["name"] == HEALTH_PORT_NAME]

    def route(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": health_port}, **timing}

    # The kubelet's own fields stay; its timeout is the check's plus a second to answer with the reason.
    assert by_name["web"]["livenessProbe"] == route("/live/web", periodSeconds=10, timeoutSeconds=4)
    assert by_name["web"]["startupProbe"] == route(
        "/startup/web", initialDelaySeconds=1, periodSeconds=2, failureThreshold=30, timeoutSeconds=2
    )
    assert by_name["api"]["livenessProbe"] == route("/live/api", timeoutSeconds=2)
    assert by_name["api"]["startupProbe"] == route("/startup/api", failureThreshold=30, timeoutSeconds=2)
    assert by_name["cache"]["startupProbe"] == route("/startup/cache", timeoutSeconds=2)
    assert by_name["cache"]["livenessProbe"] == {"exec": {"command": ["redis-cli", "ping"]}}, "exec stays"

    config = {c.name: c for c in load_config(environ={CONFIG_ENV: sidecar_config_text(doc)}).containers}
    assert (config["web"].liveness, config["web"].liveness_timeout) == (HttpGetSpec(port=8080, path="/healthz"), 3)
    assert config["web"].startup == HttpGetSpec(port=8080, path="/started", headers=(("X-Probe", "startup"),))
    assert (config["api"].liveness, config["api"].startup) == (GrpcSpec(port=9090, service="live"), GrpcSpec(port=9090))
    assert config["cache"].liveness is None, "an exec check must run in its own container: the kubelet keeps it"
    assert config["cache"].startup == TcpSocketSpec(port=6379), "named port resolved"


def test_reinjecting_the_output_changes_no_byte(sidecar_env: dict[str, str]) -> None:
    once = inject(ROUTED.read_text(), sidecar_env)
    assert inject(once, sidecar_env) == once
    assert inject(once, sidecar_env, "--native-sidecar") == once, "an injected template is never injected again"


def test_lint_finds_the_same_in_the_output_as_in_the_input(sidecar_env: dict[str, str]) -> None:
    # web's startupProbe has periodSeconds 2 and the default 1 s timeout: the rewritten probe's
    # 2 s must not read as timeout-not-below-period, since the sidecar answers within the 1 s.
    text = ROUTED.read_text()
    before = [(f.container, f.rule, f.message) for f in lint_documents(load_documents(text, "in"), "in")]
    out = inject(text, sidecar_env)
    after = [(f.container, f.rule, f.message) for f in lint_documents(load_documents(out, "in"), "in")]
    assert before and after == before


# -- the sidecar answers the rewritten probes from the apps' own checks ------------------------


@pytest.fixture
async def http_app() -> AsyncIterator[FlipTarget]:
    target = await FlipTarget.start(200)
    yield target
    await target.stop()


@pytest.fixture
async def grpc_app() -> AsyncIterator[tuple[health_aio.HealthServicer, int]]:
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", SERVING)
    await servicer.set("live", SERVING)
    yield servicer, port
    await server.stop(None)


@pytest.fixture
async def tcp_app() -> AsyncIterator[asyncio.Server]:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    yield server
    server.close()
    await server.wait_closed()


def manifest(http_port: int, grpc_port: int, tcp_port: int) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: apps}}
spec:
  containers:
  - name: web
    image: example.com/web:1
    ports: [{{name: http, containerPort: {http_port}}}]
    readinessProbe: {{httpGet: {{path: /health, port: http}}}}
    livenessProbe: {{httpGet: {{path: /health, port: http}}, periodSeconds: 5}}
    startupProbe: {{httpGet: {{path: /health, port: http}}, failureThreshold: 30}}
  - name: api
    image: example.com/api:1
    ports: [{{containerPort: {grpc_port}}}]
    livenessProbe: {{grpc: {{port: {grpc_port}, service: live}}}}
    startupProbe: {{grpc: {{port: {grpc_port}}}}}
  - name: cache
    image: example.com/cache:1
    ports: [{{containerPort: {tcp_port}}}]
    startupProbe: {{tcpSocket: {{port: {tcp_port}}}}}
"""


async def test_a_running_sidecar_answers_the_rewritten_probes_200_or_503_with_the_apps_reason(
    sidecar_env: dict[str, str],
    http_app: FlipTarget,
    grpc_app: tuple[health_aio.HealthServicer, int],
    tcp_app: asyncio.Server,
) -> None:
    servicer, grpc_port = grpc_app
    tcp_port = tcp_app.sockets[0].getsockname()[1]
    text = manifest(http_app.port, grpc_port, tcp_port)
    pod = yaml.safe_load(await asyncio.to_thread(inject, text, sidecar_env))
    routed = {
        (name, kind): c[kind]["httpGet"]["path"]
        for name, c in containers(pod).items()
        for kind in ("livenessProbe", "startupProbe")
        if name != SIDECAR_NAME and "httpGet" in c.get(kind, {})
    }
    assert set(routed) == {("web", "livenessProbe"), ("web", "startupProbe"), ("api", "livenessProbe"),
                           ("api", "startupProbe"), ("cache", "startupProbe")}  # fmt: skip
    car = await SidecarProcess.start(
        "--grpc-port", "off", "--metrics-port", "0", env={CONFIG_ENV: sidecar_config_text(pod)}
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, dict[str, Any]]:
                async with session.get(car.base + path) as response:
                    return response.status, json.loads(await response.read())

            for (name, kind), path in routed.items():
                status, body = await get(path)
                verdict = "alive" if kind == "livenessProbe" else "started"
                assert (status, body[verdict], body["result"]) == (200, True, "success"), (path, body)
                assert body["container"] == name

            http_app.status = 500
            await servicer.set("live", NOT_SERVING)
            await servicer.set("", NOT_SERVING)
            tcp_app.close()
            await tcp_app.wait_closed()
            answers = {path: await get(path) for path in routed.values()}
            failed = {"alive": False, "result": "failure"}
            assert answers["/live/web"] == (503, {"container": "web", **failed, "reason": "HTTP 500"})
            assert answers["/live/api"] == (503, {"container": "api", **failed, "reason": "grpc NOT_SERVING"})
            refused = f"connect ECONNREFUSED 127.0.0.1:{tcp_port}"
            failed = {"started": False, "result": "failure"}
            assert answers["/startup/web"] == (503, {"container": "web", **failed, "reason": "HTTP 500"})
            assert answers["/startup/api"] == (503, {"container": "api", **failed, "reason": "grpc NOT_SERVING"})
            assert answers["/startup/cache"] == (503, {"container": "cache", **failed, "reason": refused})

            async with session.get(f"http://127.0.0.1:{car.metrics_port}/metrics") as response:
                metrics = Scrape(await response.text(), response.headers["Content-Type"])
    finally:
        await car.stop()
    for name, kind in routed:
        check = ROUTED_CHECK_FIELDS[kind]
        for result in ("success", "failure"):
            assert metrics.value("readiness_routed_check_total", container=name, kind=check, result=result) == 1
        assert metrics.value("readiness_routed_check_duration_seconds_count", container=name, kind=check) == 2
