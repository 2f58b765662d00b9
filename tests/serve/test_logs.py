"""Logs carry transitions and failure summaries that back off, never a line per attempt."""

from __future__ import annotations

import io
import json
import logging

from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.model import ContainerSpec, ProbeTiming
from sidecar.runtime.state import AggregateState, Clock
from sidecar.serve.logs import SUMMARY_BACKOFF, TransitionLogger, setup_logging

FAIL = ProbeResult(Outcome.FAILURE, "connect ECONNREFUSED 127.0.0.1:8080", 0.0001)
OK = ProbeResult(Outcome.SUCCESS, "HTTP 200", 0.0003)
# About aggressive mode's widest not-ready interval, 100 ms (docs/behaviour.md#scheduling), at
# which a container failing for minutes is probed; 1/8 s adds up exactly in floating point.
NOT_READY_INTERVAL = 0.125


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str = "app", *, required: bool = True) -> ContainerSpec:
    return ContainerSpec(name, TcpSocketSpec(port=8080), ProbeTiming(failure_threshold=1), required=required)


def logged_state(
    *specs: ContainerSpec, log_format: str = "text", level: str = "info"
) -> tuple[AggregateState, FakeTime, io.StringIO]:
    fake = FakeTime()
    clock = Clock(monotonic=fake, wall=fake)
    logger = setup_logging(log_format, level)
    stream = io.StringIO()
    assert isinstance(logger.handlers[0], logging.StreamHandler)
    logger.handlers[0].setStream(stream)
    state = AggregateState(specs or [spec()], clock=clock)
    state.observe(TransitionLogger(logger, clock))
    return state, fake, stream


def fail_for(state: AggregateState, fake: FakeTime, seconds: float, *names: str) -> None:
    for _ in range(round(seconds / NOT_READY_INTERVAL)):
        fake.now += NOT_READY_INTERVAL
        for name in names:
            state.record(name, FAIL)


def test_two_containers_failing_for_ten_minutes_write_a_handful_of_lines() -> None:
    # Before the backoff: one summary per container every 5 s, 240 lines in these 10 minutes.
    state, fake, stream = logged_state(spec("app"), spec("db"))
    fail_for(state, fake, 600.0, "app", "db")
    lines = stream.getvalue().splitlines()
    assert SUMMARY_BACKOFF == (5.0, 30.0, 300.0)
    for name in ("app", "db"):
        mine = [line for line in lines if f" {name}: " in line]
        # Summaries 5 s in, 30 s after that, then 5 min after that: at 5, 35 and 335 s.
        assert len(mine) == 3, mine
        assert [line.split(" in ")[1].split(",")[0] for line in mine] == ["5s", "30s", "300s"]
        assert all(" WARNING " in line and "last: connect ECONNREFUSED" in line for line in mine)
        assert [line.rsplit("next summary in ", 1)[1] for line in mine] == [
            "30s if it keeps failing",
            "300s if it keeps failing",
            "300s if it keeps failing",
        ]
    assert len(lines) == 6, lines


def test_a_transition_starts_the_backoff_over() -> None:
    state, fake, stream = logged_state()
    fail_for(state, fake, 40.0, "app")  # summaries at 5 and 35 s: the next gap is 5 min
    fake.now += 1.0
    state.record("app", OK)  # not_ready -> ready
    state.record("app", FAIL)  # ready -> not_ready (failureThreshold 1)
    stream.truncate(0)
    stream.seek(0)
    fail_for(state, fake, 6.0, "app")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "failures in 5s" in lines[0], "the first summary 5 s after the transition"


def test_a_success_between_failures_ends_the_run_without_a_line() -> None:
    state, fake, stream = logged_state(spec("app"), spec("db"))
    state.record("db", OK)  # ready, so the success below is no transition for app's sake
    stream.truncate(0)
    stream.seek(0)
    for _ in range(100):  # 4 s of failing, then a success: no summary is due yet
        fake.now += 0.04
        state.record("app", FAIL)
    state.record("app", OK)
    assert "failures" not in stream.getvalue()


def test_an_optional_container_logs_its_failures_at_info() -> None:
    state, fake, stream = logged_state(spec("app"), spec("extra", required=False))
    fail_for(state, fake, 6.0, "app", "extra")
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[2:4] for line in lines] == [["WARNING", "app:"], ["INFO", "extra:"]], lines


def test_log_level_warning_keeps_summaries_of_required_containers_only() -> None:
    state, fake, stream = logged_state(spec("app"), spec("extra", required=False), level="warning")
    fake.now += 1.0
    state.record("app", OK)  # a transition: info, so not written
    fail_for(state, fake, 6.0, "extra")
    state.record("app", FAIL)
    fail_for(state, fake, 6.0, "app")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and " WARNING app: " in lines[0], lines


def test_log_level_debug_adds_a_line_per_change_of_result_not_per_attempt() -> None:
    state, fake, stream = logged_state(level="debug")
    fail_for(state, fake, 1.0, "app")  # 8 attempts, one result
    state.record("app", OK)
    state.record("app", OK)
    debug = [line.split(" DEBUG ")[1] for line in stream.getvalue().splitlines() if " DEBUG " in line]
    assert debug == ["app: attempt failure: connect ECONNREFUSED 127.0.0.1:8080", "app: attempt success: HTTP 200"]


def test_each_transition_is_one_line_with_duration_and_reason() -> None:
    state, fake, stream = logged_state()
    fake.now += 2.5
    state.record("app", OK)
    for _ in range(50):
        fake.now += 1.0
        state.record("app", OK)  # steady successes log nothing
    state.record("app", FAIL)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("app: not_ready -> ready after 2.5s (HTTP 200)")
    assert lines[1].endswith("pod: ready")
    assert lines[2].endswith("app: ready -> not_ready after 50s (connect ECONNREFUSED 127.0.0.1:8080)")
    assert lines[3].endswith("pod: not_ready")


def test_draining_is_one_pod_line_and_its_reset_another() -> None:
    state, _fake, stream = logged_state()
    state.record("app", OK)
    stream.truncate(0)
    stream.seek(0)
    state.set_draining(True)
    state.set_draining(False)  # a preStop hook that no SIGTERM followed
    lines = stream.getvalue().splitlines()
    assert [line.split(" INFO ")[1] for line in lines] == [
        "pod: draining",
        "pod: drain reset: no SIGTERM followed the preStop hook",
        "pod: ready",
    ]


def test_json_format_carries_the_fields() -> None:
    state, fake, stream = logged_state(log_format="json")
    fake.now += 0.25
    state.record("app", OK)
    fail_for(state, fake, 0.125, "app")  # the transition: the run of failures starts after it
    fail_for(state, fake, 5.125, "app")
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    first = docs[0]
    assert first["msg"] == "app: not_ready -> ready after 250ms (HTTP 200)"
    assert (first["container"], first["from"], first["to"], first["held_for_seconds"]) == (
        "app",
        "not_ready",
        "ready",
        0.25,
    )
    assert [doc.get("pod") for doc in docs[:4]] == [None, "ready", None, "not_ready"]
    summary = docs[4]
    assert (summary["level"], summary["container"], summary["status"], summary["failures"]) == (
        "warning",
        "app",
        "not_ready",
        41,
    )
    assert summary["next_summary_seconds"] == 30.0
