"""docs/img/dashboard.png: the panels of examples/grafana/readiness-sidecar.json, drawn with matplotlib
from a real run (Grafana itself is not installed here).

A live sidecar (ready, failing, optional, flapping and routed-check containers) is scraped by a real
Prometheus for --seconds, then drained (SIGTERM) for the last quarter; every panel's queries are
then read back over the run with query_range and drawn, one subplot per panel:

    pip install matplotlib   # not a dependency of the project
    python -m benchmarks.dashboard_png [--seconds 40] [--out docs/img/dashboard.png]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.system.dashboard_live import Live, fill_variables, live_sidecar, load_dashboard

REPO = Path(__file__).resolve().parent.parent
STEP = 0.5  # seconds between points: a few scrapes
# Grafana's $__rate_interval at this zoom (4 x the 0.25 s scrape interval), widened so the
# plotted rates are smooth rather than scrape-by-scrape.
RATE_INTERVAL = "2s"
COLUMNS = 3


async def collect(seconds: float) -> tuple[dict[str, Any], list[tuple[dict[str, Any], list[dict[str, Any]]]], float]:
    """Each panel with the query_range answer of each of its targets, and the run's start."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("prometheus not installed (apt-get install prometheus)")
    dashboard = load_dashboard()
    with tempfile.TemporaryDirectory() as workdir:
        async with live_sidecar(prometheus, Path(workdir)) as live:
            await live.wait_for("readiness_ready", 30.0)
            start = time.time()
            await asyncio.sleep(seconds * 0.75)
            live.car.terminate()  # the drain, for its panel
            await asyncio.sleep(seconds * 0.25)
            end = time.time()
            panels = [p for p in dashboard["panels"] if p["type"] != "row"]
            answers = [(panel, await _ranges(live, panel, start, end)) for panel in panels]
    return dashboard, answers, start


async def _ranges(live: Live, panel: dict[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    results = []
    for target in panel["targets"]:
        doc = await live.query_range(fill_variables(target["expr"], RATE_INTERVAL), start, end, STEP)
        assert doc["status"] == "success", (panel["title"], doc)
        results.append({"target": target, "result": doc["data"]["result"]})
    return results


def _legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    while "{{" in text:  # a label the series lacks (no pod outside Kubernetes)
        head, _, rest = text.partition("{{")
        text = head + rest.partition("}}")[2]
    return " ".join(text.split()) or "value"


def _series(result: dict[str, Any], start: float) -> tuple[list[float], list[float]]:
    xs = [float(t) - start for t, _ in result["values"]]
    ys = [float(v) for _, v in result["values"]]
    return xs, ys


def draw(
    dashboard: dict[str, Any], answers: list[tuple[dict[str, Any], list[dict[str, Any]]]], start: float, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(answers) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 3.1 * rows), squeeze=False)
    title = f"{dashboard['title']} (examples/grafana/readiness-sidecar.json), a live run: drained at the dashed line"
    fig.suptitle(title, fontsize=14)
    drain_at = None
    for panel, targets in answers:
        if panel["title"] == "Draining":
            for result in targets[0]["result"]:
                xs, ys = _series(result, start)
                drain_at = next((x for x, y in zip(xs, ys, strict=True) if y >= 1), None)
    for ax, (panel, targets) in zip(axes.flat, answers, strict=False):
        ax.set_title(panel["title"], fontsize=10)
        kind = panel["type"]
        if kind == "heatmap":
            _heatmap(ax, targets[0]["result"], start)
        elif kind == "state-timeline":
            _lanes(ax, targets[0], start)
        elif kind == "table":
            _table(ax, targets[0])
        elif kind in ("bargauge", "stat"):
            _bars(ax, targets)
        else:
            for target in targets:
                for result in target["result"]:
                    xs, ys = _series(result, start)
                    ax.plot(xs, ys, label=_legend(target["target"]["legendFormat"], result["metric"]))
            ax.legend(fontsize=6, loc="upper left")
            ax.set_xlabel("s", fontsize=7)
        if drain_at is not None and kind not in ("bargauge", "table", "stat"):
            ax.axvline(drain_at, color="grey", linestyle="--", linewidth=0.8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(answers) :]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)


def _heatmap(ax: Any, results: list[dict[str, Any]], start: float) -> None:
    """Per-bucket rates from the cumulative le series, as Grafana's heatmap (format heatmap) draws them."""
    by_le = sorted(((float(r["metric"]["le"]), r) for r in results), key=lambda pair: pair[0])
    if not by_le:
        return
    xs = _series(by_le[0][1], start)[0]
    cumulative = [[0.0 if math.isnan(y) else y for y in _series(r, start)[1]] for _, r in by_le]
    cells = [
        [max(0.0, row[i] - (cumulative[k - 1][i] if k else 0.0)) for i in range(len(xs))]
        for k, row in enumerate(cumulative)
    ]
    ax.pcolormesh(xs, range(len(by_le)), cells, shading="nearest", cmap="Oranges")
    ax.set_yticks(range(len(by_le))[::2], [f"{le:g}" for le, _ in by_le][::2], fontsize=6)
    ax.set_ylabel("le (s)", fontsize=7)
    ax.set_xlabel("s", fontsize=7)


def _lanes(ax: Any, target: dict[str, Any], start: float) -> None:
    """A state timeline: one lane per series, coloured by value as the panel's value mappings."""
    results = sorted(target["result"], key=lambda r: _legend(target["target"]["legendFormat"], r["metric"]))
    for lane, result in enumerate(results):
        xs, ys = _series(result, start)
        # a container: red not ready, green ready; the drain: green serving, orange draining
        colors = ("tab:red", "tab:green") if "container" in result["metric"] else ("tab:green", "tab:orange")
        segments = [(x, STEP) for x in xs]
        ax.broken_barh(segments, (lane - 0.4, 0.8), facecolors=[colors[int(y >= 1)] for y in ys])
    ax.set_yticks(
        range(len(results)), [_legend(target["target"]["legendFormat"], r["metric"]) for r in results], fontsize=7
    )
    ax.set_xlabel("s", fontsize=7)


def _table(ax: Any, target: dict[str, Any]) -> None:
    """A table: one line per row, its labels and value."""
    ax.axis("off")
    lines = [
        ", ".join(f"{k}={v}" for k, v in r["metric"].items() if k not in ("__name__", "job", "instance"))
        + f": {float(r['values'][-1][1]):g}"
        for r in target["result"]
    ]
    ax.text(0.02, 0.95, "\n".join(lines) or "(none)", va="top", family="monospace", fontsize=8, transform=ax.transAxes)


def _bars(ax: Any, targets: list[dict[str, Any]]) -> None:
    """The last value of each series, as a bar: what a bar gauge, stat or table shows."""
    labels, values = [], []
    for target in targets:
        for result in target["result"]:
            label = _legend(target["target"]["legendFormat"], result["metric"])
            if label == "value":
                label = ", ".join(f"{k}={v}" for k, v in result["metric"].items() if k != "__name__")
            labels.append(label)
            values.append(float(result["values"][-1][1]))
    ax.barh(labels, values, color="tab:green")
    ax.tick_params(axis="y", labelsize=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "dashboard.png")
    args = parser.parse_args(argv)
    dashboard, answers, start = asyncio.run(collect(args.seconds))
    draw(dashboard, answers, start, args.out)
    print(f"{args.out}: {len(answers)} panels")


if __name__ == "__main__":
    main()
