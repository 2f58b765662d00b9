"""`readiness-sidecar check`: every container's probe once, all in parallel.

    rows = await check_once(config)
    print(render_table(rows)); exit_code(rows)  # 0 ready, 1 not ready
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from probes import ProbeResult, build_probe
from sidecar.spec import ContainerSpec, SidecarConfig


@dataclass(frozen=True, slots=True)
class CheckRow:
    container: ContainerSpec
    result: ProbeResult | None  # None: unobserved, nothing was run

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.outcome.ok

    @property
    def result_name(self) -> str:
        return self.result.outcome.value if self.result else "unobserved"


async def _probe_once(spec: ContainerSpec) -> CheckRow:
    if spec.handler is None:
        return CheckRow(spec, None)
    probe = build_probe(spec.handler)
    try:
        return CheckRow(spec, await probe.attempt(spec.timing.timeout))
    finally:
        await probe.close()


async def check_once(config: SidecarConfig, *, all_containers: bool = False) -> list[CheckRow]:
    """One attempt per container, concurrently: the round costs the slowest probe."""
    chosen = [c for c in config.containers if all_containers or c.required]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_probe_once(spec)) for spec in chosen]
    return [task.result() for task in tasks]


def exit_code(rows: list[CheckRow]) -> int:
    """0 when every required, observed container passed (warnings pass); else 1."""
    gating = [row for row in rows if row.container.gates]
    return 0 if all(row.passed for row in gating) else 1


def _row_dict(row: CheckRow) -> dict[str, object]:
    spec, result = row.container, row.result
    return {
        "container": spec.name,
        "probe": spec.handler.kind if spec.handler else None,
        "target": spec.handler.target if spec.handler else None,
        "required": spec.required,
        "result": row.result_name,
        "latency_ms": round(result.duration * 1000, 3) if result else None,
        "message": result.message if result else "left to the kubelet",
    }


def render_json(rows: list[CheckRow]) -> str:
    return json.dumps(
        {"ready": exit_code(rows) == 0, "containers": [_row_dict(row) for row in rows]}, indent=2
    )


def render_table(rows: list[CheckRow]) -> str:
    header = ("CONTAINER", "PROBE", "TARGET", "RESULT", "LATENCY", "MESSAGE")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        d = _row_dict(row)
        latency = f"{d['latency_ms']:.1f}ms" if d["latency_ms"] is not None else "-"
        name = str(d["container"]) + ("" if row.container.required else " (optional)")
        lines.append(
            (name, str(d["probe"] or "-"), str(d["target"] or "-"), str(d["result"]), latency,
             str(d["message"]))
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + "  " + line[-1]
        for line in lines
    )
