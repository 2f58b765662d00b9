"""Drainer on its own: queue-proxy's drain (Knative pkg/queue/sharedmain, the preStop /wait-for-drain).

SIGTERM makes the pod not ready at once and exits after the drain period; a preStop hook
that arrives first starts the drain too, and is undone after 1 s if no SIGTERM follows
(a container restarting under its liveness probe, not the pod going away).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from sidecar.model import ContainerSpec
from sidecar.runtime.drain import Drainer
from sidecar.runtime.state import AggregateState


def ready_state() -> AggregateState:
    state = AggregateState([ContainerSpec("app", TcpSocketSpec(port=8080))])
    state.record("app", ProbeResult(Outcome.SUCCESS, "connected", 0.001))
    assert state.ready
    return state


async def test_begin_turns_not_ready_at_once_and_drains_after_the_period() -> None:
    state = ready_state()
    drainer = Drainer(state, drain_seconds=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    drainer.begin()
    assert (state.ready, state.draining) == (False, True)
    await asyncio.wait_for(drainer.drained.wait(), 5)
    assert loop.time() - started >= 0.19


async def test_a_second_signal_ends_the_drain_now() -> None:
    drainer = Drainer(ready_state(), drain_seconds=3600)
    drainer.begin()
    assert not drainer.drained.is_set()
    drainer.begin()
    assert drainer.drained.is_set()


async def test_the_drain_logs_what_is_left_and_the_second_signal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    drainer = Drainer(ready_state(), drain_seconds=0.5, log_every=0.2)
    drainer.begin()
    await asyncio.sleep(0.45)  # countdown lines at 0, 0.2 and 0.4 s
    drainer.begin()
    drainer.begin()  # a third signal: already over, nothing more to say
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drain: ")]
    assert [line.split(" left")[0] for line in lines[:3]] == ["drain: 500ms", "drain: 300ms", "drain: 100ms"]
    assert all(line.endswith("then exit; a second SIGTERM or SIGINT ends it now") for line in lines[:3])
    assert len(lines) == 4 and lines[3].startswith("drain: second stop signal, ending the drain now, "), lines
    assert drainer.drained.is_set()


async def test_prestop_waits_for_the_end_of_the_drain() -> None:
    drainer = Drainer(ready_state(), drain_seconds=0.1)
    hook = asyncio.create_task(drainer.wait_for_drain())
    await asyncio.sleep(0.01)
    assert not hook.done()
    drainer.begin()
    assert await asyncio.wait_for(hook, 5) == "drained"


async def test_prestop_without_sigterm_drains_then_resets_readiness(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    state = ready_state()
    drainer = Drainer(state, drain_seconds=30, reset_after=0.1)
    hook = asyncio.create_task(drainer.wait_for_drain())
    await asyncio.sleep(0.01)
    assert not state.ready, "the hook starts the drain: the SIGTERM usually follows within milliseconds"
    assert await asyncio.wait_for(hook, 5) == "reset"
    assert state.ready and not state.draining
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drain: ")]
    assert said == ["drain: a preStop hook called /wait-for-drain: draining, reset in 100ms unless a SIGTERM follows"]


async def test_overlapping_prestops_reset_only_when_the_last_one_gives_up() -> None:
    state = ready_state()
    drainer = Drainer(state, drain_seconds=30, reset_after=0.15)
    first = asyncio.create_task(drainer.wait_for_drain())
    await asyncio.sleep(0.1)
    second = asyncio.create_task(drainer.wait_for_drain())
    assert await asyncio.wait_for(first, 5) == "reset"
    assert state.draining, "the second hook still waits for its SIGTERM"
    assert await asyncio.wait_for(second, 5) == "reset"
    assert not state.draining and state.ready


async def test_sigterm_during_a_prestop_wait_turns_it_into_a_full_drain() -> None:
    state = ready_state()
    drainer = Drainer(state, drain_seconds=0.1, reset_after=5)
    hook = asyncio.create_task(drainer.wait_for_drain())
    await asyncio.sleep(0.01)
    drainer.begin()
    assert await asyncio.wait_for(hook, 5) == "drained"
    assert state.draining and not state.ready, "a pod going away never turns ready again"
