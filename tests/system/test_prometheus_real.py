"""Real Prometheus tools against our metrics and examples: promtool, and a Prometheus server
scraping a sidecar subprocess (docs/behaviour.md#metrics, docs/testing.md#prometheus-and-promtool).
Missing binaries: require_peer."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import sidecar
from probes.spec import HttpGetSpec, TcpSocketSpec
from sidecar.app import Sidecar
from sidecar.config.loader import load_config
from sidecar.contract import GRPC_PORT_NAME, HEALTH_PORT_NAME, METRICS_PORT_NAME
from sidecar.model import ContainerSpec, ProbeTiming, SidecarConfig
from sidecar.runtime.settings import RunSettings
from tests.conftest import REPO, require_peer
from tests.sidecar_process import SidecarProcess
from tests.target_apps import FlipTarget

PROMETHEUS_EXAMPLES = REPO / "examples" / "prometheus"
K8S_EXAMPLES = REPO / "examples" / "k8s"
FIRST_SAMPLE_WITHIN = 20.0  # seconds; Prometheus shows its first sample ~5 s after start here


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_peer(f"{name} not installed (apt-get install prometheus)")
        raise AssertionError("unreachable")  # require_peer skips or fails
    return path


def _promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run([_binary("promtool"), *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


# -- promtool ----------------------------------------------------------------------------


async def test_promtool_check_metrics_accepts_the_exposition_in_every_state() -> None:
    _binary("promtool")
    up, down = await FlipTarget.start(200), await FlipTarget.start(503)
    config = SidecarConfig((
        ContainerSpec("ready", HttpGetSpec(up.port, "/health")),
        ContainerSpec("failing", HttpGetSpec(down.port, "/health")),
        ContainerSpec("optional", HttpGetSpec(down.port, "/health"), required=False),
        ContainerSpec("tcp", TcpSocketSpec(up.port), liveness=HttpGetSpec(down.port, "/health"),
                      startup=TcpSocketSpec(up.port)),  # the checks behind /live/tcp and /startup/tcp
        ContainerSpec("pending", TcpSocketSpec(up.port), ProbeTiming(initial_delay=3600.0)),
        ContainerSpec("unobserved", None),
    ))
    car = Sidecar(config, RunSettings(health_port=0, grpc_port=None, metrics_port=0,
                                      bind="127.0.0.1"))
    try:
        ports = await car.start()
        states = car.state.containers
        assert await car.state.wait_for(lambda: states["ready"].ready and states["tcp"].ready, 2.0)
        async with aiohttp.ClientSession() as session:
            for path in ("/live/tcp", "/startup/tcp"):
                async with session.get(f"http://127.0.0.1:{ports.health}{path}") as resp:
                    await resp.read()
            car.drainer.begin()
            async with session.get(f"http://127.0.0.1:{ports.metrics}/metrics") as resp:
                exposition = await resp.text()
    finally:
        await car.stop()
        await up.stop()
        await down.stop()
    # The states really are in it: otherwise the check below proves less than it claims.
    assert 'readiness_container_ready{container="ready"} 1.0' in exposition
    assert 'readiness_container_ready{container="failing"} 0.0' in exposition
    assert 'readiness_probe_total{container="optional",probe="httpGet",result="failure"}' \
        in exposition
    assert 'readiness_time_to_ready_seconds{container="tcp"}' in exposition
    assert "readiness_draining 1.0" in exposition
    assert 'readiness_routed_check_total{container="tcp",kind="liveness",result="failure"} 1.0' in exposition
    assert 'readiness_routed_check_total{container="tcp",kind="startup",result="success"} 1.0' in exposition
    assert 'container="unobserved"' not in exposition
    assert _promtool("check", "metrics", stdin=exposition) == ""


def test_example_prometheus_config_and_alert_rules_pass_promtool() -> None:
    config_out = _promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS_EXAMPLES)
    assert "SUCCESS: 1 rule files found" in config_out, "prometheus.yml must load alerts.yml"
    rules_out = _promtool("check", "rules", "alerts.yml", cwd=PROMETHEUS_EXAMPLES)
    assert "SUCCESS: 6 rules found" in rules_out
    # Each alert fires on the series it is about, and only there.
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS_EXAMPLES)


def test_commented_kubernetes_sd_job_is_a_valid_config(tmp_path: Path) -> None:
    text = (PROMETHEUS_EXAMPLES / "prometheus.yml").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - job_name:"))
    block = "".join(f"  {line.removeprefix('  #').removeprefix(' ')}\n" for line in lines[start:])
    config = yaml.safe_load(text[: text.index("scrape_configs:")] + "scrape_configs:\n" + block)
    job = config["scrape_configs"][0]
    assert job["job_name"] == "readiness-sidecar", "alerts.yml matches on this job name"
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    # Debian's prometheus (2.42+ds) is built without Kubernetes discovery, so promtool
    # rejects the field itself; a static target still validates the relabelling rules.
    job["static_configs"] = [{"targets": ["10.0.0.1:8552"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS_EXAMPLES / "alerts.yml", tmp_path / "alerts.yml")
    _promtool("check", "config", "prometheus.yml", cwd=tmp_path)


# -- the Kubernetes examples scrape what the sidecar serves --------------------------------


def _sidecar_and_pod(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    template = doc if doc["kind"] == "Pod" else doc["spec"]["template"]
    containers = template["spec"]["containers"]
    sidecar = next(c for c in containers if c["name"] == "readiness-sidecar")
    return sidecar, template["metadata"]


@pytest.mark.parametrize("name", ["pod.yaml", "deployment.yaml"])
def test_k8s_example_annotations_point_at_the_sidecars_metrics_port(name: str) -> None:
    sidecar, meta = _sidecar_and_pod(K8S_EXAMPLES / name)
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {HEALTH_PORT_NAME: 8550, GRPC_PORT_NAME: 8551, METRICS_PORT_NAME: 8552}
    prometheus = {k: v for k, v in meta["annotations"].items() if k.startswith("prometheus.io/")}
    assert prometheus == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8552", "prometheus.io/path": "/metrics"
    }
    monitor = yaml.safe_load((PROMETHEUS_EXAMPLES / "podmonitor.yaml").read_text())
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()
    assert sidecar["args"] == ["run"]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready?wait=900ms", "port": 8550}
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    config = load_config(environ={"READINESS_SIDECAR_CONFIG": env["READINESS_SIDECAR_CONFIG"]})
    assert [(c.name, c.handler) for c in config.containers] == [
        ("app", HttpGetSpec(port=8080, path="/healthz"))
    ]


# -- a real Prometheus server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _query(session: aiohttp.ClientSession, base: str, promql: str) -> dict[str, Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        doc: dict[str, Any] = await resp.json()
    assert doc["status"] == "success", doc
    return doc


def _values(doc: dict[str, Any]) -> list[float]:
    return [float(r["value"][1]) for r in doc["data"]["result"]]


def _tail(log: Path) -> str:
    return log.read_text()[-2000:] if log.exists() else ""


def _by_result(doc: dict[str, Any]) -> dict[str, float]:
    return {r["metric"]["result"]: float(r["value"][1]) for r in doc["data"]["result"]}


async def _poll(session: aiohttp.ClientSession, base: str, promql: str, want: float,
                log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + FIRST_SAMPLE_WITHIN
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            doc = await _query(session, base, promql)
        except aiohttp.ClientError:
            pass  # Prometheus still starting
        else:
            if _values(doc) == [want]:
                return doc
        await asyncio.sleep(0.25)
    raise AssertionError(f"{promql} never became {want}; last answer {doc}\n"
                         f"prometheus log:\n{_tail(log)}")


async def test_real_prometheus_scrapes_a_sidecar_process_and_sees_it_turn_ready(
    tmp_path: Path,
) -> None:
    prometheus = _binary("prometheus")
    target = await FlipTarget.start(503)
    car = await SidecarProcess.start(
        "--health-port", "0", "--grpc-port", "off", "--metrics-port", "0",
        "--probe", f"app=http://127.0.0.1:{target.port}/health",
    )
    server: asyncio.subprocess.Process | None = None
    log = tmp_path / "prometheus.log"
    try:
        assert car.metrics_port is not None
        web_port = _free_port()
        base = f"http://127.0.0.1:{web_port}"
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "readiness-sidecar",
                "static_configs": [{"targets": [f"127.0.0.1:{car.metrics_port}"]}],
            }],
        }))
        with log.open("wb") as log_file:
            server = await asyncio.create_subprocess_exec(
                prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                stdout=log_file, stderr=log_file, start_new_session=True,
            )
        async with aiohttp.ClientSession() as session:
            ready_query = 'readiness_ready{job="readiness-sidecar"}'
            totals_query = 'readiness_probe_total{container="app"}'
            await _poll(session, base, ready_query, 0.0, log)
            before = _by_result(await _query(session, base, totals_query))
            target.status = 200
            ready = await _poll(session, base, ready_query, 1.0, log)
            totals = await _query(session, base, totals_query)
            # Prometheus asks for gzip (and OpenMetrics first): what it gets it parses, whole.
            health = await _query(session, base, 'up{job="readiness-sidecar"} == 1 and scrape_samples_scraped > 50')
            created = await _query(session, base, '{job="readiness-sidecar", __name__=~".+_created"}')
            build = await _query(session, base, "readiness_sidecar_build_info")
            print(f"\nPrometheus /api/v1/query?query={ready_query}:", json.dumps(ready))
            print(f"Prometheus /api/v1/query?query={totals_query}:", json.dumps(totals))
    finally:
        if server is not None:
            server.kill()
            await server.wait()
        await car.kill()
        await target.stop()
    assert len(health["data"]["result"]) == 1, health
    assert created["data"]["result"] == [], "no _created series reach Prometheus"
    assert [r["metric"]["version"] for r in build["data"]["result"]] == [sidecar.__version__]
    after = _by_result(totals)
    assert before["failure"] > 0 and before["success"] == 0, "the target answered 503 at first"
    assert after["success"] >= 1, "the attempt that turned it ready was counted"
    assert after["failure"] >= before["failure"]
    assert sum(after.values()) > sum(before.values()), "readiness_probe_total increased"
