"""The JSON views of a container that every surface shows: /ready, /status and `check`.

One place decides what a container looks like to a reader, so `check -o json` and
/status name the same things the same way.

    ready_summary(state.containers["app"])  # {"ready": false, "status": "not_ready", "reason": "HTTP 503"}
    pod_status(state)                       # "ready", "not_ready" or "draining"
    print(check_table(rows))
    print(check_summary(rows))  # ready: 2 of 2 containers ready
"""

from __future__ import annotations

import time
from typing import Any

from probes import ProbeResult
from sidecar.model import DRAINING, UNOBSERVED, UNOBSERVED_REASON, ContainerSpec, readiness_word
from sidecar.runtime.attempt import CheckRow, check_exit_code
from sidecar.runtime.state import AggregateState, ContainerState


def pod_status(state: AggregateState) -> str:
    """The pod's state, one of POD_STATES (sidecar.model): draining wins over everything."""
    return DRAINING if state.draining else readiness_word(state.ready)


def check_status(row: CheckRow) -> str:
    """A container's state after `check`'s one attempt, in /status's words."""
    return UNOBSERVED if row.result is None else readiness_word(row.passed)


def probe_view(spec: ContainerSpec) -> dict[str, Any]:
    """What is probed, and whether it gates readiness."""
    return {
        "probe": spec.handler.kind if spec.handler else None,
        "target": spec.handler.target if spec.handler else None,
        "required": spec.required,
    }


def latency_ms(result: ProbeResult | None) -> float | None:
    return round(result.duration * 1000, 3) if result else None


def rfc3339(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def ready_summary(c: ContainerState) -> dict[str, Any]:
    """A container in /ready and /ready/<name>: short, since /ready is the hot path."""
    doc: dict[str, Any] = {"ready": c.ready, "status": c.status}
    if not c.spec.required:
        doc["required"] = False
    if not c.ready:
        doc["reason"] = c.reason
    return doc


def container_status(c: ContainerState, started_mono: float) -> dict[str, Any]:
    """A container in /status: everything known of it."""
    spec, result = c.spec, c.last_result
    return {
        "name": spec.name,
        **probe_view(spec),
        "status": c.status,
        "ready": c.ready,
        "consecutive_successes": c.consecutive_successes,
        "consecutive_failures": c.consecutive_failures,
        "attempts": c.attempts,
        "last_result": result.outcome.value if result else None,
        "message": c.reason,
        "latency_ms": latency_ms(result),
        "last_transition_time": rfc3339(c.since_wall) if c.since_mono != started_mono else None,
        "time_to_first_ready_seconds": (
            round(c.time_to_first_ready, 6) if c.time_to_first_ready is not None else None
        ),
        "timing": {
            "initial_delay_seconds": spec.timing.initial_delay,
            "timeout_seconds": spec.timing.timeout,
            "period_seconds": spec.timing.period,
            "aggressive": spec.timing.aggressive,
            "success_threshold": spec.timing.success_threshold,
            "failure_threshold": spec.timing.failure_threshold,
        },
    }


def check_row(row: CheckRow) -> dict[str, Any]:
    """A container in `check`'s output: its one attempt."""
    result = row.result
    return {
        "container": row.container.name,
        **probe_view(row.container),
        "status": check_status(row),
        "result": row.result_name,
        "latency_ms": latency_ms(result),
        "message": result.message if result else UNOBSERVED_REASON,
    }


def check_document(rows: list[CheckRow]) -> dict[str, Any]:
    """`check -o json` and `-o yaml`."""
    ready = check_exit_code(rows) == 0
    return {"ready": ready, "status": readiness_word(ready), "containers": [check_row(row) for row in rows]}


def check_summary(rows: list[CheckRow], hidden_optional: int = 0) -> str:
    """`check`'s one line: the verdict, k of n ready, each container that is not and why, and
    how many optional containers `check` left out (--all-containers shows them).

        ready: 3 of 4 containers ready; cache (optional): HTTP 503
    """
    verdict = readiness_word(check_exit_code(rows) == 0)
    failing = [row for row in rows if not row.passed]
    notes = [f"{row.container.name}{'' if row.container.required else ' (optional)'}: {check_row(row)['message']}"
             for row in failing]
    if hidden_optional:
        plural, them = ("", "it") if hidden_optional == 1 else ("s", "them")
        notes.append(f"{hidden_optional} optional container{plural} hidden (--all-containers shows {them})")
    counts = f"{verdict}: {sum(row.passed for row in rows)} of {len(rows)} containers ready"
    return "; ".join([counts, *notes])


def check_table(rows: list[CheckRow]) -> str:
    header = ("CONTAINER", "PROBE", "TARGET", "RESULT", "LATENCY", "MESSAGE")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        d = check_row(row)
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
