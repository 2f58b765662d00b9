"""Logs carry transitions and rate-limited failure summaries, never a line per attempt."""

from __future__ import annotations

import io
import json
import logging

from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.model import ContainerSpec, ProbeTiming
from sidecar.runtime.state import AggregateState, Clock
from sidecar.serve.logs import SUMMARY_EVERY, TransitionLogger, setup_logging

FAIL = ProbeResult(Outcome.FAILURE, "connect ECONNREFUSED 127.0.0.1:8080", 0.0001)
OK = ProbeResult(Outcome.SUCCESS, "HTTP 200", 0.0003)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logged_state(log_format: str = "text") -> tuple[AggregateState, FakeTime, io.StringIO]:
    fake = FakeTime()
    clock = Clock(monotonic=fake, wall=fake)
    logger = setup_logging(log_format)
    stream = io.StringIO()
    assert isinstance(logger.handlers[0], logging.StreamHandler)
    logger.handlers[0].setStream(stream)
    spec = ContainerSpec("app", TcpSocketSpec(port=8080), ProbeTiming(failure_threshold=1))
    state = AggregateState([spec], clock=clock)
    state.observe(TransitionLogger(logger, clock))
    return state, fake, stream


def test_thousands_of_failures_give_one_summary_per_five_seconds() -> None:
    state, fake, stream = logged_state()
    for _ in range(2020):  # attempts every 5 ms: just over 10 s of failing
        fake.now += 0.005
        state.record("app", FAIL)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all("app: " in line and "failures in 5s, last: connect ECONNREFUSED" in line for line in lines)
    assert SUMMARY_EVERY == 5.0


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
    assert lines[0].endswith("app: not ready -> ready after 2.5s (HTTP 200)")
    assert lines[1].endswith("pod: ready")
    assert lines[2].endswith("app: ready -> not ready after 50s (connect ECONNREFUSED 127.0.0.1:8080)")
    assert lines[3].endswith("pod: not ready")


def test_json_format_carries_the_fields() -> None:
    state, fake, stream = logged_state("json")
    fake.now += 0.25
    state.record("app", OK)
    first = json.loads(stream.getvalue().splitlines()[0])
    assert first["msg"] == "app: not ready -> ready after 250ms (HTTP 200)"
    assert (first["container"], first["from"], first["to"], first["held_for_seconds"]) == (
        "app", "not ready", "ready", 0.25)
