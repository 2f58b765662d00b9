"""A live sidecar process with ready, failing, optional, flapping and routed-check containers, scraped
by a real Prometheus, and the queries of examples/grafana/readiness-sidecar.json with Grafana's
variables filled in: what tests/system/test_grafana_dashboard.py checks and
benchmarks/dashboard_png.py plots.

    async with live_sidecar(prometheus_binary, tmp_path) as live:
        await live.query("readiness_ready")
        live.car.terminate()  # the drain
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from probes.spec import HttpGetSpec, TcpSocketSpec
from sidecar.config.encode import compact_json, containers_document
from sidecar.contract import CONFIG_ENV
from sidecar.model import ContainerSpec
from tests.sidecar_process import REPO, SidecarProcess
from tests.target_apps import FlipTarget

DASHBOARD = REPO / "examples" / "grafana" / "readiness-sidecar.json"
JOB = "readiness-sidecar"  # examples/prometheus/ and alerts.yml match on it
SCRAPE_INTERVAL = 0.25  # seconds: enough samples for rate() within a second or two
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval)
# (grafana pkg/promlib/models/query.go, calculateRateInterval); $__interval is at most a
# second at this zoom, so 4 x 0.25 s.
RATE_INTERVAL = "1s"
DRAIN_SECONDS = "60s"  # longer than any test: the drain is seen, never finished


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str  # with Grafana's variables filled in


def panel_queries(dashboard: dict[str, Any], *, rate_interval: str = RATE_INTERVAL) -> list[PanelQuery]:
    """Every target of every panel (rows included), variables replaced by what "All" means."""
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append(PanelQuery(panel["title"], target["refId"], fill_variables(target["expr"], rate_interval)))
    return found


def variable_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """The template variables' `label_values(selector, label)`, as the selector Prometheus must answer."""
    found = []
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match is not None, f"variable {variable['name']}: not label_values(selector, label)"
        found.append(PanelQuery(f"variable {variable['name']}", match[2], fill_variables(match[1], RATE_INTERVAL)))
    return found


def fill_variables(expr: str, rate_interval: str) -> str:
    """Grafana's substitution with every variable at "All" (allValue .*), the job at its default."""
    filled = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    filled = filled.replace("$job", JOB)
    for name in ("namespace", "pod", "container"):
        filled = filled.replace(f"${name}", ".*")
    assert "$" not in filled, f"a variable left unfilled: {filled}"
    return filled


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_panels(panel.get("panels", [])))  # a collapsed row holds its panels
    return flat


@dataclass
class Live:
    base: str  # Prometheus' HTTP API
    car: SidecarProcess
    session: aiohttp.ClientSession
    log: Path
    flapping: FlipTarget

    async def query(self, promql: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/api/v1/query", params={"query": promql}) as resp:
            doc: dict[str, Any] = await resp.json(content_type=None)
        return doc

    async def query_range(self, promql: str, start: float, end: float, step: float) -> dict[str, Any]:
        params = {"query": promql, "start": str(start), "end": str(end), "step": str(step)}
        async with self.session.get(f"{self.base}/api/v1/query_range", params=params) as resp:
            doc: dict[str, Any] = await resp.json(content_type=None)
        return doc

    async def wait_for(self, promql: str, within: float) -> dict[str, Any]:
        """The query's answer once it has data (Prometheus still starting counts as no data yet)."""
        deadline = time.monotonic() + within
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                doc = await self.query(promql)
                if doc.get("status") == "success" and doc["data"]["result"]:
                    return doc
            await asyncio.sleep(SCRAPE_INTERVAL)
        tail = self.log.read_text()[-2000:] if self.log.exists() else ""
        raise AssertionError(f"{promql}: no data within {within} s; last answer {doc}\nprometheus log:\n{tail}")


def containers(up: FlipTarget, down: FlipTarget, flapping: FlipTarget) -> list[ContainerSpec]:
    return [
        ContainerSpec("ready", HttpGetSpec(up.port, "/health")),
        ContainerSpec("failing", HttpGetSpec(down.port, "/health")),
        ContainerSpec("optional", HttpGetSpec(down.port, "/health"), required=False),
        ContainerSpec("flapping", HttpGetSpec(flapping.port, "/health")),
        # GET /live/routed and /startup/routed run these (inject --rewrite-liveness's routes)
        ContainerSpec(
            "routed", TcpSocketSpec(up.port), liveness=HttpGetSpec(down.port, "/health"), startup=TcpSocketSpec(up.port)
        ),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _keep_calling(session: aiohttp.ClientSession, base: str) -> None:
    """The kubelet's routed liveness and startup checks, a few a second."""
    while True:
        for path in ("/live/routed", "/startup/routed"):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}{path}") as resp:
                    await resp.read()
        await asyncio.sleep(0.2)


async def _flip(target: FlipTarget, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        target.status = 200 if target.status != 200 else 503


@contextlib.asynccontextmanager
async def live_sidecar(prometheus: str, workdir: Path, *, flip_every: float = 1.5) -> AsyncIterator[Live]:
    """The sidecar, its targets and a Prometheus scraping it every SCRAPE_INTERVAL, all stopped after."""
    up, down, flapping = await FlipTarget.start(200), await FlipTarget.start(503), await FlipTarget.start(200)
    config = compact_json(containers_document(containers(up, down, flapping)))
    car = await SidecarProcess.start(
        "--health-port",
        "0",
        "--grpc-port",
        "off",
        "--metrics-port",
        "0",
        "--drain-seconds",
        DRAIN_SECONDS,
        env={CONFIG_ENV: config},
    )
    server: asyncio.subprocess.Process | None = None
    tasks: list[asyncio.Task[None]] = []
    log = workdir / "prometheus.log"
    try:
        web_port = _free_port()
        interval = f"{int(SCRAPE_INTERVAL * 1000)}ms"
        (workdir / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": interval,
                        "scrape_timeout": interval,
                        "evaluation_interval": interval,
                    },
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{car.metrics_port}"]}]}
                    ],
                }
            )
        )
        with log.open("wb") as log_file:
            server = await asyncio.create_subprocess_exec(
                prometheus,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                f"--storage.tsdb.path={workdir / 'data'}",
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(_keep_calling(session, car.base)),
                asyncio.create_task(_flip(flapping, flip_every)),
            ]
            yield Live(f"http://127.0.0.1:{web_port}", car, session, log, flapping)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        if server is not None and server.returncode is None:
            server.kill()
            await server.wait()
        await car.kill()
        for target in (up, down, flapping):
            await target.stop()


def load_dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc
