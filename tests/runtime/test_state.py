"""AggregateState on its own: the kubelet's thresholds, the aggregate, draining and change notification.

The threshold rules are the kubelet's worker (kubernetes pkg/kubelet/prober/worker.go, doProbe):
a container starts not ready ("initialValue" results.Failure for readiness), turns ready after
successThreshold consecutive successes and not ready after failureThreshold consecutive failures,
and a result that disagrees with the last resets the other counter.
"""

from __future__ import annotations

import asyncio

import pytest

from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.model import ContainerSpec, ProbeTiming
from sidecar.runtime.state import AggregateState, Clock, ContainerState, StateObserver, Transition

OK = ProbeResult(Outcome.SUCCESS, "connected", 0.001)
WARN = ProbeResult(Outcome.WARNING, "HTTP 302: redirect to other host x not followed", 0.001)
FAIL = ProbeResult(Outcome.FAILURE, "connect ECONNREFUSED 127.0.0.1:1", 0.001)


def spec(name: str = "app", *, required: bool = True, observed: bool = True, **timing: int) -> ContainerSpec:
    handler = TcpSocketSpec(port=8080) if observed else None
    return ContainerSpec(name, handler, ProbeTiming(**timing), required)  # type: ignore[arg-type]


class Recorder(StateObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        self.events.append(("attempt", result.outcome))

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        self.events.append(("container", transition.now_ready))

    def aggregate_changed(self, state: AggregateState) -> None:
        self.events.append(("aggregate", state.ready))

    def draining_changed(self, state: AggregateState) -> None:
        self.events.append(("draining", state.draining))


def test_a_container_starts_not_ready_not_probed_yet() -> None:
    state = AggregateState([spec()])
    c = state.containers["app"]
    assert (state.ready, c.ready, c.status, c.reason) == (False, False, "not_ready", "not probed yet")


def test_ready_exactly_at_success_threshold_and_a_failure_resets_the_count() -> None:
    state = AggregateState([spec(success_threshold=3)])
    assert [state.record("app", r).ready for r in (OK, OK, FAIL, OK, OK)] == [False] * 5
    assert state.record("app", OK).ready, "three in a row, counted afresh after the failure"
    assert state.ready


def test_not_ready_exactly_at_failure_threshold_and_a_success_resets_the_count() -> None:
    state = AggregateState([spec(failure_threshold=3)])
    state.record("app", OK)
    assert [state.record("app", r).ready for r in (FAIL, FAIL, OK, FAIL, FAIL)] == [True] * 5
    verdict = state.record("app", FAIL)
    assert (verdict.ready, verdict.consecutive_failures) == (False, 3)
    assert state.containers["app"].reason == FAIL.message


def test_a_warning_counts_as_success_as_the_kubelet_treats_probe_warning() -> None:
    # pkg/kubelet/prober/prober.go: probe.Warning is logged and reported as results.Success.
    state = AggregateState([spec()])
    assert state.record("app", WARN).ready


def test_the_verdict_carries_when_the_current_readiness_began() -> None:
    now = [100.0]
    state = AggregateState([spec()], clock=Clock(monotonic=lambda: now[0], wall=lambda: 0.0))
    now[0] = 105.0
    assert state.record("app", FAIL).since == 100.0, "not ready since start"
    now[0] = 107.5
    verdict = state.record("app", OK)
    assert (verdict.ready, verdict.since) == (True, 107.5)
    assert state.containers["app"].time_to_first_ready == 7.5


def test_only_required_observed_containers_gate_the_aggregate() -> None:
    state = AggregateState([spec("app"), spec("side", required=False), spec("lone", observed=False)])
    assert state.containers["lone"].status == "unobserved"
    state.record("app", OK)
    assert state.ready, "the optional and the unobserved container never gate"
    state.record("side", FAIL)
    assert state.ready


def test_no_gating_container_means_ready_from_the_start_as_an_empty_knative_probe() -> None:
    assert AggregateState([spec("side", required=False)]).ready
    assert AggregateState([]).ready


def test_draining_forces_not_ready_and_its_end_restores_it() -> None:
    state = AggregateState([spec()])
    state.record("app", OK)
    state.set_draining(True)
    assert (state.ready, state.containers["app"].ready) == (False, True)
    state.set_draining(False)
    assert state.ready


def test_observers_see_each_attempt_then_the_container_then_the_aggregate() -> None:
    recorder = Recorder()
    state = AggregateState([spec()], observers=[recorder])
    state.record("app", OK)
    state.set_draining(True)
    assert recorder.events == [
        ("attempt", Outcome.SUCCESS), ("container", True), ("aggregate", True),
        ("draining", True), ("aggregate", False),
    ]


def test_the_revision_moves_on_every_attempt_and_drain_change() -> None:
    state = AggregateState([spec()])
    revisions = [state.revision]
    for result in (FAIL, FAIL, OK):
        state.record("app", result)
        revisions.append(state.revision)
    state.set_draining(True)
    revisions.append(state.revision)
    assert revisions == sorted(set(revisions)), "strictly increasing: cached bodies rebuild on each"


async def test_waiters_wake_at_the_change_not_at_their_timeout() -> None:
    state = AggregateState([spec()])
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(state.wait_ready(timeout=30.0))
    changed = state.changed
    await asyncio.sleep(0.01)
    started = loop.time()
    state.record("app", OK)
    assert changed.is_set(), "the event of the generation that saw the change is set"
    assert not state.changed.is_set(), "and a fresh one waits for the next change"
    assert await waiter
    assert loop.time() - started < 1.0


async def test_wait_for_times_out_with_the_predicate_false() -> None:
    state = AggregateState([spec()])
    assert not await state.wait_for(lambda: state.ready, timeout=0.05)


async def test_a_dead_scheduler_is_kept_with_its_reason_and_wakes_waiters() -> None:
    state = AggregateState([spec()])
    changed = state.changed
    assert not state.dead_schedulers
    state.scheduler_died("app", "RuntimeError('bug')")
    assert dict(state.dead_schedulers) == {"app": "RuntimeError('bug')"}
    assert changed.is_set()


def test_recording_an_unknown_container_is_a_bug_not_a_silent_no_op() -> None:
    with pytest.raises(KeyError):
        AggregateState([spec()]).record("ghost", OK)


ERR = ProbeResult(Outcome.ERROR, "error reading body: connection reset", 0.001)


def test_an_errored_attempt_is_shown_but_thrown_away() -> None:
    # pkg/kubelet/prober/worker.go, doProbe: "Prober error, throw away the result." Neither
    # readiness nor the consecutive counters move.
    recorder = Recorder()
    state = AggregateState([spec(failure_threshold=1, success_threshold=2)], observers=[recorder])
    state.record("app", OK)
    state.record("app", OK)
    assert state.ready
    verdict = state.record("app", ERR)
    c = state.containers["app"]
    assert (verdict.ready, c.ready, state.ready) == (True, True, True), "failureThreshold 1 and still ready"
    assert (c.consecutive_successes, c.consecutive_failures) == (2, 0)
    assert (c.attempts, c.last_result, c.reason) == (3, ERR, ERR.message)
    assert recorder.events[-1] == ("attempt", Outcome.ERROR), "observers (metrics, logs) still see it"


def test_errored_attempts_neither_start_nor_break_a_run_of_successes() -> None:
    state = AggregateState([spec(success_threshold=2)])
    assert [state.record("app", r).ready for r in (OK, ERR, ERR, OK)] == [False, False, False, True]
