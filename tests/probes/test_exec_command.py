"""The exec probe against real subprocesses: exit codes, output, timeouts, and what it leaves.

Tests about orphans run with this process as a child subreaper, so orphans are
reparented to us exactly as they would be to the sidecar running as PID 1.
Children are watched through pidfds; the tests of the fallback (no pidfds: an old kernel,
a seccomp profile) make pidfd_open fail as such a kernel does.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import resource
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from probes import exec_command
from probes.exec_command import MAX_OUTPUT_BYTES, ExecProbe, reap_adopted_zombies
from probes.result import MAX_MESSAGE_CHARS, Outcome, ProbeResult
from probes.spec import ExecSpec

TIMEOUT = 0.3
# Time an attempt may take beyond its timeout: killing, reaping, scheduling noise.
SLACK = 0.3
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@pytest.fixture
def adopts_orphans() -> Iterator[None]:
    """Make this process inherit orphaned descendants, as PID 1 does in a container."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def stat_fields(pid: int) -> list[str] | None:
    """state, ppid, pgrp, session, ... of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            yield int(entry.name), fields


def group_members(pgid: int) -> list[int]:
    """Every process, zombie or not, still in process group `pgid`."""
    return [pid for pid, fields in processes() if int(fields[2]) == pgid]


def our_zombies() -> list[int]:
    return [
        pid for pid, fields in processes() if fields[0] == "Z" and int(fields[1]) == os.getpid()
    ]


def our_children() -> set[int]:
    return {pid for pid, fields in processes() if int(fields[1]) == os.getpid()}


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


T = TypeVar("T")


def run_on(loop: str, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run `scenario` on a fresh loop of that kind, as `run --loop` would."""

    async def main() -> T:
        return await scenario()

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        result: T = uvloop.run(main())
        return result
    return asyncio.run(main())


@pytest.fixture
def without_pidfds(monkeypatch: pytest.MonkeyPatch) -> None:
    """pidfd_open as Linux < 5.3 answers it (a seccomp profile says EPERM instead): the fallback."""

    def unsupported(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", unsupported)
    monkeypatch.setattr(exec_command, "_pidfd_supported", None)  # ask the "kernel" again


def eventually(condition: Callable[[], object], failure: str) -> None:
    """Poll for something a process does on its own time (blocking: call it off the loop)."""
    deadline = time.monotonic() + 2
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.005)


def read_pids(path: Path, count: int = 2) -> list[int]:
    """Pids a shell command wrote, one per line, once it has written `count` of them."""

    def lines() -> list[str]:
        return path.read_text().split() if path.exists() else []

    eventually(lambda: len(lines()) >= count, f"command never wrote its pids to {path}")
    return [int(line) for line in lines()]


async def attempt(*command: str, within: float = TIMEOUT) -> ProbeResult:
    probe = ExecProbe(ExecSpec(command=command))
    return await probe.attempt(timeout=within)


async def test_exit_zero_is_success() -> None:
    result = await attempt("true")
    assert result.outcome is Outcome.SUCCESS
    assert result.message == "exit 0"
    assert 0 < result.duration < TIMEOUT


async def test_nonzero_exit_names_code_and_first_output_line() -> None:
    result = await attempt("sh", "-c", "echo '  not ready: db down'; echo second; exit 1")
    assert result.outcome is Outcome.FAILURE
    assert result.message == "exec exit 1: not ready: db down"


async def test_stderr_counts_as_output() -> None:
    result = await attempt("sh", "-c", "echo 'oops' >&2; exit 2")
    assert result.message == "exec exit 2: oops"


async def test_silent_failure_has_bare_exit_code() -> None:
    assert (await attempt("false")).message == "exec exit 1"


async def test_death_by_signal_is_named() -> None:
    result = await attempt("sh", "-c", "kill -SEGV $$")
    assert result.outcome is Outcome.FAILURE
    assert result.message == "exec killed by SIGSEGV"


async def test_output_is_sanitised() -> None:
    result = await attempt("sh", "-c", "printf '\\033[31mred\\007\\n'; exit 3")
    assert result.message == "exec exit 3: ?[31mred?"


async def test_missing_binary_is_failure_not_exception() -> None:
    result = await attempt("no-such-command-anywhere", "--flag")
    assert result.outcome is Outcome.FAILURE
    assert result.message == "exec: command not found: no-such-command-anywhere"


async def test_not_executable_is_permission_denied(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = await attempt(str(script))
    assert result.outcome is Outcome.FAILURE
    assert result.message.startswith("exec: permission denied: /")


async def test_timeout_kills_whole_group_and_leaves_no_zombie(
    tmp_path: Path, adopts_orphans: None
) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    script = f"sleep 100 & echo $! > {pids}; echo $$ >> {pids}; sleep 100"
    result = await attempt("sh", "-c", script)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.FAILURE
    assert result.message == f"timeout after {TIMEOUT:g}s"
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    grandchild, shell = read_pids(pids)
    assert group_members(shell) == []
    assert stat_fields(grandchild) is None
    assert our_zombies() == []


async def test_command_ignoring_sigterm_is_still_killed(
    tmp_path: Path, adopts_orphans: None
) -> None:
    pids = tmp_path / "pids"
    script = f'trap "" TERM; sleep 100 & echo $! > {pids}; echo $$ >> {pids}; wait; sleep 100'
    result = await attempt("sh", "-c", script)
    assert result.message == f"timeout after {TIMEOUT:g}s"
    _, shell = read_pids(pids)
    assert group_members(shell) == []


async def test_closing_stdout_and_lingering_times_out_and_is_killed(
    tmp_path: Path, adopts_orphans: None
) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = await attempt("sh", "-c", f"echo $$ > {pids}; exec >&- 2>&-; sleep 100")
    assert result.message == f"timeout after {TIMEOUT:g}s"
    assert time.monotonic() - started < TIMEOUT + SLACK
    [shell] = read_pids(pids, count=1)
    assert group_members(shell) == []


async def test_success_does_not_wait_for_grandchild_holding_output(
    tmp_path: Path, adopts_orphans: None
) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 100 & echo $! > {pids}; echo $$ >> {pids}; echo ready"
    result = await attempt("sh", "-c", script, within=2.0)
    assert result.outcome is Outcome.SUCCESS
    assert result.duration < 0.5  # decided at the shell's exit, not at the pipe's EOF
    grandchild, shell = read_pids(pids)
    assert stat_fields(grandchild) is None  # killed with the group, and reaped
    assert group_members(shell) == []
    assert our_zombies() == []


async def test_failure_output_is_read_even_when_grandchild_holds_pipe() -> None:
    result = await attempt("sh", "-c", "sleep 100 & echo 'first words'; exit 4", within=2.0)
    assert result.message == "exec exit 4: first words"
    assert result.duration < 0.5


async def test_huge_output_is_capped_and_drained() -> None:
    tracemalloc.start()
    try:
        result = await attempt("sh", "-c", "head -c 50000000 /dev/zero; exit 1", within=5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.message.startswith("exec exit 1: ")  # ended by its exit: never blocked
    assert len(result.message) <= MAX_MESSAGE_CHARS
    assert peak < 1024 * 1024  # 50 MB went through; a chunk plus MAX_OUTPUT_BYTES stayed
    assert MAX_OUTPUT_BYTES == 10 * 1024


async def test_endless_output_times_out_with_short_message() -> None:
    tracemalloc.start()
    try:
        started = time.monotonic()
        result = await attempt("yes", "y" * 1000)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.message == f"timeout after {TIMEOUT:g}s"
    assert elapsed < TIMEOUT + SLACK
    assert peak < 1024 * 1024


async def test_cancelled_attempt_propagates_and_kills_group(
    tmp_path: Path, adopts_orphans: None
) -> None:
    pids = tmp_path / "pids"
    probe = ExecProbe(ExecSpec(("sh", "-c", f"sleep 100 & echo $$ > {pids}; wait")))
    task = asyncio.create_task(probe.attempt(timeout=5.0))
    [shell] = await asyncio.to_thread(read_pids, pids, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert group_members(shell) == []


async def test_escaped_orphan_is_reaped_once_it_exits(tmp_path: Path, adopts_orphans: None) -> None:
    # setsid puts the sleeper beyond the group kill; it exits later as our zombie.
    escaped = tmp_path / "escaped"
    script = f"setsid sh -c 'echo $$ > {escaped}; sleep 0.05' & until [ -s {escaped} ]; do :; done"
    result = await attempt("sh", "-c", script)
    assert result.outcome is Outcome.SUCCESS
    await asyncio.to_thread(eventually, our_zombies, "the escaped sleeper never became our zombie")
    assert reap_adopted_zombies() >= 1
    assert our_zombies() == []


def test_reaping_never_steals_children_in_our_group(adopts_orphans: None) -> None:
    child = subprocess.Popen(["sh", "-c", "exit 7"])
    eventually(lambda: (stat_fields(child.pid) or ["Z"])[0] == "Z", "child never exited")
    assert reap_adopted_zombies() == 0
    assert child.wait(timeout=1) == 7  # still ours to wait for


async def test_many_attempts_leak_no_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        await attempt("sh", "-c", "echo x; exit 1")
        await attempt("no-such-command-anywhere")
    assert len(os.listdir("/proc/self/fd")) <= before


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_concurrent_attempts_start_no_thread(loop: str) -> None:
    # The reason for pidfds: asyncio's ThreadedChildWatcher started a thread per child.
    async def scenario() -> tuple[int, int, list[str]]:
        before = thread_count()
        probe = ExecProbe(ExecSpec(("sleep", "0.2")))
        attempts = [asyncio.create_task(probe.attempt(timeout=2.0)) for _ in range(20)]
        timing_out = asyncio.create_task(ExecProbe(ExecSpec(("sleep", "100"))).attempt(timeout=0.1))
        await asyncio.sleep(0.05)  # every child running, one about to be killed
        during = thread_count()
        results = await asyncio.gather(*attempts, timing_out)
        return before, during, [result.message for result in results]

    before, during, messages = run_on(loop, scenario)
    assert during <= before  # (a thread of an earlier test may end meanwhile)
    assert messages == ["exit 0"] * 20 + ["timeout after 0.1s"]
    assert our_zombies() == []


async def test_reaper_never_takes_a_child_an_attempt_awaits(adopts_orphans: None) -> None:
    # No watcher reaps our children any more: between its exit and our reap, the child is a
    # zombie of ours that the orphan reaper must leave alone.
    before = our_children()
    task = asyncio.create_task(ExecProbe(ExecSpec(("sh", "-c", "exit 3"))).attempt(timeout=2.0))
    await asyncio.sleep(0)  # the attempt's first step: spawned, now waiting for its exit
    [child] = our_children() - before
    eventually(lambda: (stat_fields(child) or ["Z"])[0] == "Z", "child never exited")  # the loop held on purpose
    assert reap_adopted_zombies() == 0
    result = await task
    assert result.message == "exec exit 3"
    assert stat_fields(child) is None


async def test_attempt_cancelled_before_it_ran_spawns_nothing() -> None:
    # The spawn is the coroutine's first step, not start()'s: a task cancelled before that
    # step can leave no child behind, unkilled and unreaped.
    before = our_children()
    task = asyncio.create_task(ExecProbe(ExecSpec(("sleep", "100"))).attempt(timeout=5.0))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert our_children() - before == set()


async def test_without_pidfds_falls_back_to_the_loops_child_watcher(
    tmp_path: Path, adopts_orphans: None, without_pidfds: None
) -> None:
    assert (await attempt("true")).message == "exit 0"
    assert (await attempt("sh", "-c", "echo 'db down'; exit 2")).message == "exec exit 2: db down"
    assert (await attempt("no-such-command-anywhere")).message == "exec: command not found: no-such-command-anywhere"
    pids = tmp_path / "pids"
    running = asyncio.create_task(attempt("sh", "-c", f"sleep 100 & echo $$ > {pids}; wait"))
    [shell] = await asyncio.to_thread(read_pids, pids, 1)
    # asyncio's own ThreadedChildWatcher: the way children were watched before pidfds.
    assert any(thread.name.startswith("asyncio-waitpid-") for thread in threading.enumerate())
    assert (await running).message == f"timeout after {TIMEOUT:g}s"
    assert group_members(shell) == []
    assert our_zombies() == []
    assert exec_command._pidfd_supported is False  # asked once, then remembered


def test_without_pidfds_uvloop_falls_back_too(without_pidfds: None) -> None:
    async def scenario() -> list[str]:
        return [(await attempt(*command)).message for command in (("true",), ("sh", "-c", "exit 4"), ("sleep", "9"))]

    assert run_on("uvloop", scenario) == ["exit 0", "exec exit 4", f"timeout after {TIMEOUT:g}s"]
    assert our_zombies() == []


async def test_pidfd_refused_after_the_spawn_fails_and_still_kills_and_reaps(
    monkeypatch: pytest.MonkeyPatch, adopts_orphans: None
) -> None:
    # The descriptor Popen freed can be taken by another thread before pidfd_open: the child
    # then runs unwatched, and must be killed and reaped all the same.
    assert exec_command._pidfds_supported()
    asked_for: list[int] = []

    def out_of_descriptors(pid: int, flags: int = 0) -> int:
        asked_for.append(pid)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pidfd_open", out_of_descriptors)
    result = await attempt("sh", "-c", "sleep 100 & sleep 100", within=5.0)
    assert result.outcome is Outcome.FAILURE
    assert result.message == "exec: Too many open files: sh"
    assert result.duration < 1.0
    [shell] = asked_for
    assert stat_fields(shell) is None  # killed and reaped, no zombie
    assert group_members(shell) == []
    assert our_zombies() == []


async def test_running_out_of_descriptors_is_a_failure_never_an_exception() -> None:
    # Each descriptor the attempt opens, refused in turn by a real RLIMIT_NOFILE: the output
    # pipe, Popen's /dev/null and error pipe, the pidfd. In the kubelet such an error is
    # probe.Unknown (pkg/probe/exec/exec.go: only an ExitError or a timeout decides); here an
    # exec that cannot be started is a failure with a short reason (docs/behaviour.md).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_fds = open_descriptors()
    outcomes: list[tuple[int, str]] = []
    try:
        for free in range(8):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving(open_fds, free), hard))
            result = await attempt("true")
            outcomes.append((free, result.message))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    refused = {message for _, message in outcomes if message != "exit 0"}
    # Refused at the output pipe, then at the spawn: both stages were reached.
    assert refused == {"exec: Too many open files", "exec: Too many open files: true"}, outcomes
    assert outcomes[-1][1] == "exit 0", outcomes  # and with enough of them, the attempt runs
    assert open_descriptors() == open_fds
    assert our_zombies() == []
    assert not exec_command._SPAWNED


def open_descriptors() -> set[int]:
    """Our open descriptors, less the one that listed them."""
    listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if fd_is_open(fd)}


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def limit_leaving(open_fds: set[int], free: int) -> int:
    """The RLIMIT_NOFILE under which exactly `free` descriptor numbers are still unused."""
    limit = 0
    while free or limit in open_fds:
        if limit not in open_fds:
            free -= 1
        limit += 1
    return limit
