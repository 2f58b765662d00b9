"""examples/grafana/readiness-sidecar.json against a real Prometheus scraping a live sidecar: every
panel's query parses and returns data (docs/behaviour.md#a-grafana-dashboard). Missing Prometheus:
require_peer."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import require_peer
from tests.system.dashboard_live import (
    DASHBOARD,
    live_sidecar,
    load_dashboard,
    panel_queries,
    variable_queries,
)

# Prometheus' first sample comes ~5 s after its start here; every query then has data within a few scrapes.
FIRST_DATA_WITHIN = 20.0
DRAIN_SEEN_WITHIN = 10.0
# The panels examples/grafana/README.md and docs/behaviour.md promise, by kind.
PROMISED = {
    "Ready per container": "state-timeline",
    "Time to first ready": "bargauge",
    "Probe latency": "heatmap",
    "Failed attempts by result": "timeseries",
    "Draining": "state-timeline",
    "Scrape health": "timeseries",
}


def test_the_dashboard_is_importable_with_the_datasource_as_an_input() -> None:
    dashboard = load_dashboard()
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    assert {title: panels[title]["type"] for title in PROMISED} == PROMISED
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "Grafana needs unique panel ids"
    for panel in panels.values():
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"{panel['title']}: a panel without a query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}", variable["name"]
    assert "${DS_PROMETHEUS}" not in DASHBOARD.read_text().replace('"uid": "${DS_PROMETHEUS}"', "")


async def test_every_panel_query_parses_and_returns_data_from_a_live_sidecar(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        require_peer("prometheus not installed (apt-get install prometheus)")
        return
    dashboard = load_dashboard()
    queries = panel_queries(dashboard) + variable_queries(dashboard)
    async with live_sidecar(prometheus, tmp_path) as live:
        # Data for every query while serving, then the drain: SIGTERM, and the drain panel sees it.
        await live.wait_for('readiness_container_ready{container="ready"} == 1', FIRST_DATA_WITHIN)
        await live.wait_for('increase(readiness_transitions_total{container="flapping"}[5s]) > 0', FIRST_DATA_WITHIN)
        live.car.terminate()
        await live.wait_for("max_over_time(readiness_draining[10s]) == 1", DRAIN_SEEN_WITHIN)
        answers = {}
        for query in queries:
            answers[query] = await live.wait_for(query.expr, FIRST_DATA_WITHIN)
        failing = await live.query('readiness_container_ready{container="failing"}')
        time_to_ready = await live.query("readiness_time_to_ready_seconds")
    for query, doc in answers.items():
        assert doc["status"] == "success", f"{query.panel} ({query.ref}): {doc}"
        assert doc["data"]["result"], f"{query.panel} ({query.ref}): no data for {query.expr}"
    # The states really are in the data the panels read.
    assert [r["value"][1] for r in failing["data"]["result"]] == ["0"]
    assert {r["metric"]["container"] for r in time_to_ready["data"]["result"]} >= {"ready", "routed"}
    print(f"\n{len(answers)} dashboard queries answered with data by Prometheus")
