"""One table for the whole run, machine facts, and the JSON file.

    rows = [Row("1", "ready detection, tcp (ms p50/p90/p99)", "2.6 / 4.1 / 5.2", "kubelet 1s: ...", "190x", ...)]
    print(render_table(rows))
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

MET = "met"
MISSED = "MISSED"


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    figure: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    verdict: str = ""  # MET, MISSED or "" when the issue sets no goal
    before: str = ""  # with --baseline-rev: the same figure on the baseline revision
    change: str = ""  # and this ÷ baseline of its headline numbers


def verdict(ok: bool) -> str:
    return MET if ok else MISSED


def verdict_parts(parts: dict[str, bool]) -> str:
    """'met', or 'MISSED: p50, CPU' naming the parts of a compound goal that were missed."""
    missed = [name for name, ok in parts.items() if not ok]
    return MET if not missed else f"{MISSED}: {', '.join(missed)}"


def times(value: float) -> str:
    """A ratio as '12x' or '0.42x'."""
    if math.isnan(value):
        return "-"
    return f"{value:.0f}x" if value >= 10 else f"{value:.2f}x" if value < 1 else f"{value:.1f}x"


def change(value: float) -> str:
    """A this ÷ baseline ratio, two decimals: '0.83x', '1.04x'."""
    return "-" if math.isnan(value) else f"{value:.2f}x"


_HEADERS = ("§", "figure", "measured", "baseline (same run)", "ratio", "goal", "verdict")


def _headers(before_label: str | None) -> tuple[str, ...]:
    return _HEADERS if before_label is None else (*_HEADERS, f"before ({before_label})", "this / before")


def render_table(rows: list[Row], before_label: str | None = None) -> str:
    """`before_label` (the baseline revision) adds its two columns."""
    headers = _headers(before_label)
    cells = [headers] + [astuple_row(r, before_label is not None) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = []
    for index, cell in enumerate(cells):
        lines.append("  ".join(text.ljust(width) for text, width in zip(cell, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_markdown(rows: list[Row], before_label: str | None = None) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    headers = _headers(before_label)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in astuple_row(r, before_label is not None)) + " |" for r in rows]
    return "\n".join(lines)


def astuple_row(row: Row, with_before: bool = False) -> tuple[str, ...]:
    cells = (row.section, row.figure, row.measured, row.baseline, row.ratio, row.goal, row.verdict)
    return (*cells, row.before, row.change) if with_before else cells


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else None


def machine_facts() -> dict[str, Any]:
    return {
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "default_loop": "uvloop" if _version("uvloop") else "asyncio",
        "uvloop": _version("uvloop"),
        "aiohttp": _version("aiohttp"),
        "grpcio": _version("grpcio"),
        "wrk": _wrk_version(),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe_machine(facts: dict[str, Any]) -> str:
    loop = f"uvloop {facts['uvloop']}" if facts["uvloop"] else "asyncio (uvloop not installed)"
    return (
        f"{facts['cpus_usable']} CPU ({facts['cpu_model']}), Linux {facts['kernel']}, "
        f"Python {facts['python']}, sidecar default loop: {loop}, aiohttp {facts['aiohttp']}, "
        f"grpcio {facts['grpcio']}"
    )


def write_json(path: Path, document: dict[str, Any], rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**document, "table": [asdict(r) for r in rows]}
    path.write_text(json.dumps(plain(document), indent=2, allow_nan=False) + "\n")


def plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, NaN and infinities as null, floats rounded to 4 places."""
    if hasattr(value, "as_json"):
        return plain(value.as_json())
    if hasattr(value, "__dataclass_fields__"):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    return value
