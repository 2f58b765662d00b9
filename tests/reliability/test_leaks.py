"""Leaks: thousands of failing attempts against every hostile target, with the sidecar serving.

Before and after, the same figures are taken from outside the process: open descriptors
(/proc/<pid>/fd), RSS (also halfway through: the second half must not grow), threads,
asyncio tasks (/status "tasks") and descendants. In-flight
attempts hold descriptors (a socket to a target, an exec output pipe) and children, so
descriptors are split: those to targets and pipes are bounded by what can be in flight,
and the rest, "held", must come back to where it was. Each figure is the extreme of a
burst of samples. Run with -s to see the figures.
Tasks are bounded the same way: an attempt that must wait runs as a task of its own
(sidecar/runtime/scheduler.py), at most one per container. Threads must stay as they
were: no library here sizes a pool to the load any more (exec watches a pidfd, not a
thread per child; gRPC is served and probed over h2).

READINESS_SIDECAR_SOAK_ATTEMPTS sets how many attempts (default 10000; .ci/run may lower it).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from probes.http_get import HttpGetProbe
from probes.spec import HttpGetSpec
from tests.reliability import procfs
from tests.reliability.hostile import ALL_CASES, HostileFleet
from tests.reliability.running import LOOPS, RunningSidecar

ATTEMPTS = int(os.environ.get("READINESS_SIDECAR_SOAK_ATTEMPTS", "10000"))
TIMEOUT = "50ms"  # every container's timeout: hanging targets cost 50 ms per attempt
SOAK_DEADLINE = max(150.0, ATTEMPTS / 50)  # seconds; on a quiet machine 10,000 take ~15 s
WARM_ATTEMPTS = 5  # per container, before the baseline: every code path has run
FD_SLACK = 5
TASK_SLACK = 2
THREAD_SLACK = 1  # an executor thread asyncio may start once, for a lookup
# RSS: the first half of the soak may still raise the allocator's high-water mark; the second
# half must not grow beyond noise, since a leak grows the same in both halves. Measured with
# `READINESS_SIDECAR_REQUIRE_PEERS=1 pytest -s` (6 runs, both loops, 14-15k attempts): whole soak
# +0.4..+1.2 MiB, second half -0.0..+0.6 MiB; a 1.4 KB/attempt native leak (malloc'd in every
# probe's start, by hand) gave +21 MiB and +13.5 MiB, on each loop (docs/security.md section 8).
RSS_BOUND = 6 * 2**20  # 5x the worst measured whole soak
RSS_SECOND_HALF_BOUND = 2.5 * 2**20  # 4x the worst measured second half; a leak over ~500 B/attempt fails
SAMPLES = 25
RSS_SAMPLES = 5
EXEC_CONTAINERS = sum(case.scheme == "exec" for case in ALL_CASES)
NETWORK_CONTAINERS = len(ALL_CASES) - EXEC_CONTAINERS
# Each exec attempt: the shell and at most three sleeps (two children, one orphan).
MAX_DESCENDANTS = 4 * EXEC_CONTAINERS


@dataclass(frozen=True)
class Figures:
    attempts: int
    fds: int  # everything open, lowest sample
    held: int  # what no attempt in flight accounts for: open minus target sockets and pipes, lowest sample
    target_sockets: int  # connections to the hostile fleet, highest sample
    pipes: int  # highest sample
    rss: int
    threads: int
    tasks: int
    descendants: int

    def show(self) -> str:
        return (f"attempts={self.attempts} fds={self.fds} (held {self.held}, to targets <={self.target_sockets}, "
                f"pipes <={self.pipes}) rss={self.rss / 2**20:.1f}MiB threads={self.threads} tasks={self.tasks} "
                f"descendants<={self.descendants}")


def _figures(car: RunningSidecar, target_ports: set[int]) -> Figures:
    fds = held = tasks = threads = 10**9
    to_targets = pipes = most = 0
    for _ in range(SAMPLES):
        kinds = procfs.open_fds(car.pid)
        peers = sum(port in target_ports for port in procfs.tcp_peer_ports(car.pid))
        fds = min(fds, kinds.total())
        held = min(held, kinds.total() - peers - kinds["pipe"])
        to_targets, pipes = max(to_targets, peers), max(pipes, kinds["pipe"])
        tasks = min(tasks, car.status()["tasks"])
        threads = min(threads, procfs.thread_count(car.pid))
        most = max(most, len(car.descendants()))
        time.sleep(0.02)
    return Figures(car.total_attempts(), fds, held, to_targets, pipes, _rss(car.pid), threads, tasks, most)


def _rss(pid: int) -> int:
    """The lowest of a short burst: an attempt in flight holds a read buffer for a moment."""
    lowest = procfs.rss_bytes(pid)
    for _ in range(RSS_SAMPLES - 1):
        time.sleep(0.02)
        lowest = min(lowest, procfs.rss_bytes(pid))
    return lowest


@pytest.mark.parametrize("loop", LOOPS)
def test_ten_thousand_failing_attempts_leak_no_fds_tasks_children_or_memory(fleet: HostileFleet, loop: str) -> None:
    flags = [arg for case in ALL_CASES for arg in ("--probe", case.flag(fleet.ports, f";timeout={TIMEOUT}"))]
    car = RunningSidecar.start(
        "--health-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--drain-seconds", "0",
        # Aggressive mode flat out: no widening window, the shortest interval and timeout.
        "--aggressive-interval", "1ms", "--aggressive-timeout", TIMEOUT, "--aggressive-window", "0",
        *flags, subreaper=True, loop=loop,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while min(c["attempts"] for c in car.status()["containers"]) < WARM_ATTEMPTS:
            assert time.monotonic() < deadline, car.containers()
            time.sleep(0.1)
        target_ports = set(fleet.ports.values())
        before = _figures(car, target_ports)
        started = time.monotonic()
        most_descendants = 0
        halfway: int | None = None  # RSS once half the attempts are done
        while True:
            done = car.total_attempts() - before.attempts
            if halfway is None and done >= ATTEMPTS // 2:
                halfway = _rss(car.pid)
            if done >= ATTEMPTS:
                break
            assert time.monotonic() - started < SOAK_DEADLINE, f"only {done} attempts in {SOAK_DEADLINE:.0f}s"
            most_descendants = max(most_descendants, len(car.descendants()))
            time.sleep(0.2)
        assert halfway is not None  # taken on the way: done passes ATTEMPTS // 2 before ATTEMPTS
        elapsed = time.monotonic() - started
        after = _figures(car, target_ports)
        scrape = car.metrics()
        healthz = car.get("/healthz")[0]
        containers = car.containers()
    finally:
        car.terminate()
        code = car.wait(15)
        car.stop()
    attempts = after.attempts - before.attempts
    print(f"\nleak soak ({loop}): {attempts} failing attempts over {len(ALL_CASES)} hostile containers "
          f"in {elapsed:.1f}s ({attempts / elapsed:.0f}/s)\n  before: {before.show()}\n  after:  {after.show()}"
          f"\n  growth: fds {after.fds - before.fds:+d} (held {after.held - before.held:+d}), "
          f"rss {(after.rss - before.rss) / 2**20:+.1f}MiB ({(after.rss - halfway) / 2**20:+.1f} in the second half), "
          f"tasks {after.tasks - before.tasks:+d}, threads {after.threads - before.threads:+d}; "
          f"descendants at most {max(most_descendants, after.descendants)} at once")

    assert code == 0
    assert healthz == 200
    outcomes = {case.name: case.outcome for case in ALL_CASES}
    assert all(c["last_result"] == outcomes[name] for name, c in containers.items()), containers
    failures = sum(scrape.value("readiness_probe_total", container=c.name, probe=p, result=result)
                   for c in ALL_CASES for p in ("httpGet", "grpc", "exec") for result in ("failure", "error"))
    assert failures >= before.attempts + ATTEMPTS
    # In-flight attempts hold sockets to the targets and exec output pipes; the rest is what
    # the sidecar holds for itself, and that must not grow. Nor may the in-flight ones pile up:
    # at most one connection per network container, and a pipe or two per exec container.
    assert abs(after.held - before.held) <= FD_SLACK, (before, after)
    assert after.target_sockets <= NETWORK_CONTAINERS, (before, after)
    assert after.pipes <= before.pipes + 2 * EXEC_CONTAINERS, (before, after)
    assert after.fds <= before.fds + NETWORK_CONTAINERS + 2 * EXEC_CONTAINERS, (before, after)
    assert after.tasks <= before.tasks + TASK_SLACK + len(ALL_CASES), (before, after)
    assert after.threads <= before.threads + THREAD_SLACK, (before, after)
    assert after.rss - before.rss < RSS_BOUND, (before, after)
    assert after.rss - halfway < RSS_SECOND_HALF_BOUND, (halfway, after)
    assert max(most_descendants, before.descendants, after.descendants) <= MAX_DESCENDANTS


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_handshakes_cut_short_by_the_timeout_free_their_memory_within_it(fleet: HostileFleet, loop: str) -> None:
    """uvloop kept each cancelled handshake's buffers until its 60 s handshake timeout:
    600 attempts of 3 ms held ~17 MiB for a minute. The probe's timeout bounds it now."""
    timeout = 0.003
    probe = HttpGetProbe(HttpGetSpec(port=fleet.ports["tls_stall"], scheme="https"))

    async def attempts() -> float:
        for _ in range(20):  # warm: first-use allocations are not a leak
            await probe.attempt(timeout)
        gc.collect()
        tracemalloc.start()
        try:
            for _ in range(600):
                result = await probe.attempt(timeout)
                assert result.message == f"timeout after {timeout:g}s"
            await asyncio.sleep(timeout + 0.5)  # every handshake timer has fired
            gc.collect()
            return tracemalloc.get_traced_memory()[0] / 2**20
        finally:
            tracemalloc.stop()

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        held = runner.run(attempts())
    assert held < 1.0, f"{held:.1f} MiB still held by 600 finished attempts"
