"""Hostile HTTP, gRPC and exec targets as containers of one real `readiness-sidecar run`.

Beside them runs one healthy container. Every hostile container must fail within its
timeout (plus slack) with a short printable reason that quotes nothing the target sent;
the sidecar must stay live; and the healthy container's transitions must go on as if
the hostile ones were not there. The sidecar runs as a child subreaper, as PID 1 of a
container is, so exec probes' orphans become its children and must be reaped. It runs
once per event loop installed (asyncio always; uvloop where the extra is installed).

The single-probe versions of these cases are in tests/probes/test_*.py; what is new here
is that they all run at once, at aggressive intervals, inside the real process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability import procfs
from tests.reliability.hostile import (
    ALL_CASES,
    BODY_MARKER,
    OUTPUT_MARKER,
    TIMEOUT_REASON,
    HostileCase,
    HostileFleet,
    short_printable,
)
from tests.reliability.running import LOOPS, RunningSidecar, wait_until

TIMEOUT = 0.5  # every hostile container's timeoutSeconds
# Beyond its timeout an attempt may take this long: killing, reaping, a loop that is
# busy with twenty containers at aggressive intervals on a shared two-core machine.
SLACK = 0.5
STEADY_PERIOD = 0.2
FAILURE_THRESHOLD = 3  # the kubelet's default, used by every container here
HEALTHY = "healthy"
# The failure budget (docs/behaviour.md#scheduling), plus SLACK, for a flip of the healthy target to show on
# /ready/<name>: to ready within the widest not-ready interval and one attempt; to not
# ready within one steady period and failureThreshold fast re-probes.
TO_READY_BUDGET = 0.1 + TIMEOUT + SLACK
TO_UNREADY_BUDGET = STEADY_PERIOD + FAILURE_THRESHOLD * (0.005 + TIMEOUT) + SLACK
# How long to watch a fast-failing target for its own reason (not a short timeout).
REASON_WATCH = 3.0
# A zombie, or a process whose attempt is over, may exist this long before it is a leak.
STALE_AFTER = 1.0


@dataclass
class HostileRun:
    car: RunningSidecar
    fleet: HostileFleet
    # /status right after every container's first attempt should have ended.
    first: dict[str, dict[str, Any]]


@pytest.fixture(scope="module", params=LOOPS)
def run(request: pytest.FixtureRequest, fleet: HostileFleet) -> Iterator[HostileRun]:
    fleet.set_status(HEALTHY, 503)
    flags = [arg for case in ALL_CASES for arg in ("--probe", case.flag(fleet.ports, f";timeout={TIMEOUT}s"))]
    car = RunningSidecar.start(
        "--health-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--drain-seconds", "1", "--steady-period", f"{STEADY_PERIOD}s",
        *flags, "--probe", f"{HEALTHY}={fleet.flip_url(HEALTHY)};timeout={TIMEOUT}s",
        subreaper=True, loop=request.param,
    )  # fmt: skip
    try:
        started = time.monotonic()
        time.sleep(TIMEOUT + SLACK)
        first = car.containers()
        assert time.monotonic() - started < TIMEOUT + 2 * SLACK, "the /status snapshot came late"
        yield HostileRun(car, fleet, first)
    finally:
        car.stop()


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.name for case in ALL_CASES])
def test_hostile_target_fails_within_its_timeout_with_a_short_reason(run: HostileRun, case: HostileCase) -> None:
    early = run.first[case.name]
    assert early["attempts"] >= 1 and early["last_result"] == case.outcome, early

    # Aggressive mode alternates a short timeout (0.1 s) with the full one, and on a busy
    # machine even a quick failure can run into the short one: watch a few attempts, and
    # require the target's own reason among them and nothing but it or a timeout.
    times_out_anyway = re.fullmatch(case.reason, f"timeout after {TIMEOUT:g}s") is not None
    seen: set[str] = set()
    deadline = time.monotonic() + REASON_WATCH
    while time.monotonic() < deadline and not (seen - {"timeout"}):
        container = run.car.containers()[case.name]
        message = container["message"]
        assert container["status"] == "not_ready"
        assert short_printable(message), message
        assert BODY_MARKER not in message and OUTPUT_MARKER not in message
        assert container["latency_ms"] <= (TIMEOUT + SLACK) * 1000, container
        assert re.fullmatch(f"{case.reason}|{TIMEOUT_REASON}", message), message
        seen.add("timeout" if re.fullmatch(TIMEOUT_REASON, message) else message)
        if times_out_anyway:
            break
        time.sleep(0.05)
    assert times_out_anyway or seen - {"timeout"}, f"only timeouts in {REASON_WATCH}s"

    # Every attempt so far, not just the last: all in the bucket that ends at 1 s.
    scrape = run.car.metrics()
    series = {"container": case.name, "probe": "exec" if case.scheme == "exec" else
              "grpc" if case.scheme == "grpc" else "httpGet"}
    count = scrape.value("readiness_probe_duration_seconds_count", **series)
    within = scrape.value("readiness_probe_duration_seconds_bucket", **series, le=str(TIMEOUT + SLACK))
    assert count >= 1 and within == count, f"{count - within} of {count} attempts took over {TIMEOUT + SLACK}s"

    assert run.car.get("/healthz")[0] == 200


def test_nothing_a_hostile_target_sent_reaches_an_endpoint_or_the_log(run: HostileRun) -> None:
    car = run.car
    bodies = [car.get(path)[1] for path in ("/ready", "/status", *(f"/ready/{c.name}" for c in ALL_CASES))]
    bodies.append(car.metrics().text.encode())
    for body in bodies:
        assert BODY_MARKER.encode() not in body and OUTPUT_MARKER.encode() not in body
    assert BODY_MARKER not in car.log_text() and OUTPUT_MARKER not in car.log_text()


def test_grpc_health_server_answers_for_hostile_containers(run: HostileRun) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{run.car.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", *(case.name for case in ALL_CASES)):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING, name


def _wait_for_ready(car: RunningSidecar, name: str, want: int, budget: float) -> float:
    started = time.monotonic()
    while (status := car.get(f"/ready/{name}")[0]) != want:
        assert time.monotonic() - started < budget, f"/ready/{name} still {status} after {budget:.2f}s"
        time.sleep(0.005)
    return time.monotonic() - started


def test_healthy_container_follows_its_target_promptly_among_hostile_ones(run: HostileRun) -> None:
    car, fleet = run.car, run.fleet
    to_ready, to_unready = [], []
    for _ in range(3):
        fleet.set_status(HEALTHY, 200)
        to_ready.append(_wait_for_ready(car, HEALTHY, 200, TO_READY_BUDGET))
        time.sleep(STEADY_PERIOD)
        fleet.set_status(HEALTHY, 503)
        to_unready.append(_wait_for_ready(car, HEALTHY, 503, TO_UNREADY_BUDGET))
        assert car.get("/healthz")[0] == 200
    print(f"\nhealthy among {len(ALL_CASES)} hostile containers: to ready "
          f"{', '.join(f'{t * 1000:.0f}' for t in to_ready)} ms (budget {TO_READY_BUDGET * 1000:.0f}), "
          f"to not ready {', '.join(f'{t * 1000:.0f}' for t in to_unready)} ms "
          f"(budget {TO_UNREADY_BUDGET * 1000:.0f})")
    healthy = car.containers()[HEALTHY]
    transitions = car.metrics().value("readiness_transitions_total", container=HEALTHY, to="ready")
    assert transitions == 3, healthy
    assert car.get("/ready")[0] == 503  # the hostile containers still gate the pod


def _stale(car: RunningSidecar, descendants: list[procfs.Proc]) -> list[procfs.Proc]:
    """Descendants no running exec attempt accounts for: zombies, and members of a
    process group whose leader (the attempt's own child) is gone."""
    stale = []
    for member in descendants:
        leader = procfs.proc(member.pgrp)
        in_flight = leader is not None and leader.state != "Z" and leader.ppid == car.pid
        if member.state == "Z" or not in_flight:
            stale.append(member)
    return stale


def test_exec_timeouts_leave_no_zombie_or_orphan_behind(run: HostileRun) -> None:
    exec_cases = sum(case.scheme == "exec" for case in ALL_CASES)
    first_seen: dict[int, float] = {}
    most = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        descendants = run.car.descendants()
        most = max(most, len(descendants))
        stale = {p.pid: p for p in _stale(run.car, descendants)}
        first_seen = {pid: first_seen.get(pid, now) for pid in stale}
        lasting = [stale[pid] for pid, seen in first_seen.items() if now - seen > STALE_AFTER]
        assert not lasting, f"left behind by finished attempts: {lasting}"
        time.sleep(0.02)
    # Each exec attempt: the shell and at most three sleeps (two children, one orphan).
    assert most <= exec_cases * 4, most
    print(f"\nexec descendants of the sidecar at once: at most {most} ({exec_cases} exec containers)")


def test_sigterm_exits_zero_leaving_no_process_behind(run: HostileRun) -> None:
    car = run.car
    assert car.get("/healthz")[0] == 200
    car.terminate()
    assert car.wait(15) == 0
    # SIGKILLed children die at once, but on a loaded machine their exit can take a while to land.
    wait_until(lambda: not car.descendants(), 5.0, "every process the sidecar started to be gone")
    log = car.log_text()
    assert "Traceback" not in log, log
    assert "drain complete" in log
