"""One guarded attempt: the rule that a probe's exception never escapes, kept once, by the caller.

The kubelet's worker survives a crashing probe the same way (pkg/kubelet/prober/worker.go:
`defer runtime.HandleCrash(...)` around doProbe, and `keepGoing` after it).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from probes import HandlerSpec, ProbeResult, Started
from probes.base import ProbeBase
from probes.result import Outcome
from probes.spec import HttpGetSpec, TcpSocketSpec
from sidecar.model import ContainerSpec
from sidecar.runtime.attempt import CRASH_LOG_EVERY, MAX_PROBE_RETRIES, CrashLog, GuardedProbe, RoutedChecks
from tests.target_apps import FlipTarget

LOGGER = logging.getLogger("readiness_sidecar.test")


class ExplodingProbe(ProbeBase):
    """A probe with a bug: what the guard exists for. It raises on the loop, or in `start` itself."""

    def __init__(self, error: BaseException, *, at_once: bool = False) -> None:
        self.error = error
        self.at_once = at_once
        self.spec: HandlerSpec = TcpSocketSpec(port=1)
        self.calls = 0

    def start(self, timeout: float) -> Started:
        self.calls += 1
        if self.at_once:
            raise self.error
        return self._explode()

    async def _explode(self) -> ProbeResult:
        raise self.error


@pytest.mark.parametrize("at_once", [False, True], ids=["on the loop", "in start"])
async def test_an_exception_is_a_failure_with_a_short_reason(at_once: bool) -> None:
    probe = ExplodingProbe(OSError(24, "Too many open files"), at_once=at_once)
    result = await GuardedProbe(probe, "app", LOGGER, CrashLog(LOGGER)).attempt(1.0)
    # The errno's name, what an operator greps for, not "OSError".
    assert (result.outcome.value, result.message) == ("failure", "probe error: EMFILE: too many open files")
    assert result.duration >= 0


async def test_a_crashing_probe_logs_once_per_window_not_once_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    probe = ExplodingProbe(RuntimeError("bug"))
    guarded = GuardedProbe(probe, "app", LOGGER, CrashLog(LOGGER))
    with caplog.at_level(logging.ERROR, logger=LOGGER.name):
        for _ in range(50):
            await guarded.attempt(1.0)
    assert probe.calls == 50
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("app: probe error: RuntimeError (RuntimeError('bug') at "), lines[0]
    assert f"{CRASH_LOG_EVERY:g}s" in lines[0]


async def test_one_reason_in_many_containers_is_one_line_that_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    # EMFILE hits every container at once: 100 identical lines would say no more than one.
    crash_log = CrashLog(LOGGER)
    guards = [
        GuardedProbe(ExplodingProbe(OSError(24, "Too many open files")), f"c{i}", LOGGER, crash_log) for i in range(100)
    ]
    with caplog.at_level(logging.ERROR, logger=LOGGER.name):
        results = [await guard.attempt(1.0) for guard in guards]
        await GuardedProbe(ExplodingProbe(RuntimeError("bug")), "other", LOGGER, crash_log).attempt(1.0)
    assert {r.message for r in results} == {"probe error: EMFILE: too many open files"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and crash_log.lines == 2, lines
    assert lines[0].startswith("c0: probe error: EMFILE: too many open files (OSError(24, "), lines[0]
    assert lines[1].startswith("other: probe error: RuntimeError (") and "99 more held back" in lines[1], lines[1]


async def test_cancellation_is_not_swallowed() -> None:
    with pytest.raises(asyncio.CancelledError):
        await GuardedProbe(ExplodingProbe(asyncio.CancelledError()), "app", LOGGER).attempt(1.0)


async def test_a_real_probe_passes_through_unchanged() -> None:
    target = await FlipTarget.start(200)
    try:
        from probes import build_probe

        spec = HttpGetSpec(port=target.port, path="/health")
        result = await GuardedProbe(build_probe(spec), "app", LOGGER).attempt(1.0)
    finally:
        await target.stop()
    assert (result.outcome.value, result.message) == ("success", "HTTP 200")


async def test_concurrent_liveness_calls_share_one_attempt() -> None:
    target = await FlipTarget.start(200, delay=0.2)
    spec = ContainerSpec("app", TcpSocketSpec(port=target.port), liveness=HttpGetSpec(port=target.port, path="/health"))
    checks = RoutedChecks([spec, ContainerSpec("db", TcpSocketSpec(port=1))], LOGGER)
    try:
        results = await asyncio.gather(*(checks.check("app") for _ in range(10)))
        again = await checks.check("app")
    finally:
        await target.stop()
    assert {r.message for r in results} == {"HTTP 200"} and again.message == "HTTP 200"
    assert len(target.request_times) == 2, "ten concurrent callers, one request; a later call, a new one"
    assert "app" in checks and "db" not in checks, "only containers with a liveness check have one"


class ScriptedProbe(ProbeBase):
    """Answers from a script, one result per try, and counts the tries; at once, as a refused connect is."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.spec: HandlerSpec = TcpSocketSpec(port=1)
        self.tries = 0

    def start(self, timeout: float) -> Started:
        outcome = self.outcomes[min(self.tries, len(self.outcomes) - 1)]
        self.tries += 1
        return ProbeResult(outcome, f"try {self.tries}: {outcome.value}", 0.0)


async def test_an_errored_try_is_retried_at_once_and_the_first_conclusive_result_counts() -> None:
    # pkg/kubelet/prober/prober.go: runProbeWithRetries runs an attempt that errs again, up to
    # maxProbeRetries = 3 tries, and returns the first result that did not err.
    probe = ScriptedProbe(Outcome.ERROR, Outcome.ERROR, Outcome.SUCCESS)
    result = await GuardedProbe(probe, "app", LOGGER).attempt(1.0)
    assert (probe.tries, result.outcome, result.message) == (3, Outcome.SUCCESS, "try 3: success")


async def test_three_errored_tries_make_one_errored_attempt() -> None:
    probe = ScriptedProbe(Outcome.ERROR)
    result = await GuardedProbe(probe, "app", LOGGER).attempt(1.0)
    assert probe.tries == MAX_PROBE_RETRIES == 3
    assert (result.outcome, result.message) == (Outcome.ERROR, "try 3: error")


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.WARNING, Outcome.FAILURE])
async def test_a_conclusive_try_is_never_retried(outcome: Outcome) -> None:
    probe = ScriptedProbe(outcome)
    assert (await GuardedProbe(probe, "app", LOGGER).attempt(1.0)).outcome is outcome
    assert probe.tries == 1
