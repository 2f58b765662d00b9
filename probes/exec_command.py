"""exec probe: run an argv in its own process group, as the kubelet's pkg/probe/exec.

    probe = ExecProbe(ExecSpec(command=("pg_isready", "-q")))
    result = await probe.attempt(timeout=1.0)  # SUCCESS on exit 0

The command runs inside the sidecar's own container, without a shell. Whatever happens,
the whole process group is SIGKILLed when the attempt ends, so nothing it started
outlives the attempt.

How a child is run, the same on asyncio and uvloop: spawned by subprocess.Popen (vfork
on Linux: no page tables copied, whatever the sidecar's RSS), its exit learned from a
pidfd the loop watches, and exactly that pid reaped. No child watcher, no thread, no
subprocess transport. Where pidfds are missing (Linux < 5.3, some seccomp sandboxes) it
falls back to asyncio.create_subprocess_exec and the loop's own child watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from probes.base import ProbeBase, Started
from probes.result import Outcome, ProbeResult, sanitize, timed_out
from probes.spec import ExecSpec

# The kubelet keeps at most 10 KiB of probe output; we only ever show its first line.
MAX_OUTPUT_BYTES = 10 * 1024
# One pipe buffer per read, so a flood drains in few wakeups (read, then dropped at once).
READ_CHUNK_BYTES = 64 * 1024
# SIGKILLed processes die at once unless stuck in the kernel (D state): don't wait for those.
KILL_GRACE_SECONDS = 0.5

# Pids of exec children an attempt is still awaiting. Module-level on purpose: a
# process's children are process-wide, and the reaper must never take one of these.
_SPAWNED: set[int] = set()
_PR_GET_CHILD_SUBREAPER = 37
# How often to look again for killed group members we adopted that are not zombies yet,
# and for the exit of a child we hold no pidfd for.
REAP_POLL_SECONDS = 0.001
# What the asyncio child watchers report for a child someone else reaped (its status is lost).
LOST_STATUS_RETURNCODE = 255
# pidfd_open errors that say "not here, ever" (old kernel, seccomp), not "not now" (EMFILE).
_PIDFD_UNSUPPORTED_ERRNOS = frozenset({errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EINVAL})
# None until the first attempt has asked the kernel.
_pidfd_supported: bool | None = None


# How a command is spawned, on either path. Its own group, through a new session (setsid in
# the child, which vfork allows, and uvloop has no process_group=), so one killpg reaches
# every descendant that stayed in it.
_SPAWN_OPTIONS: dict[str, Any] = {
    "stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "start_new_session": True, "close_fds": True,
}


class ExecProbe(ProbeBase):
    """Runs one command per attempt; exit 0 is success.

        probe = ExecProbe(ExecSpec(command=("cat", "/tmp/ready")))
        result = await probe.attempt(timeout=0.5)
        result.message  # "exit 0", "exec exit 1: cat: /tmp/ready: No such file ...", "timeout ..."
    """

    def __init__(self, spec: ExecSpec) -> None:
        self.spec = spec

    def start(self, timeout: float) -> Started:
        # A process is never answered at once. The spawn itself happens in the coroutine's
        # first step, which runs before the loop does: spawning here instead would gain
        # nothing, and a coroutine dropped before that step (a task cancelled before it
        # ran) would leave its child unkilled and unreaped.
        return self._attempt(timeout)

    async def _attempt(self, timeout: float) -> ProbeResult:
        start = time.monotonic()
        outcome, message = await self._run(seconds=timeout)
        return ProbeResult(outcome, message, time.monotonic() - start)

    async def _run(self, seconds: float) -> tuple[Outcome, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        command = self.spec.command
        if not command:
            return Outcome.FAILURE, "exec: empty command"
        try:
            output = _CappedOutput(loop)
        except OSError as error:  # out of file descriptors
            return Outcome.FAILURE, f"exec: {sanitize(error.strerror or str(error))}"
        with output:
            child: _Child | str
            if _pidfds_supported():
                child = _spawn_with_pidfd(command, output, loop)
            else:
                child = await _spawn_with_watcher(command, output)
            if isinstance(child, str):
                return Outcome.FAILURE, child
            _SPAWNED.add(child.pid)
            try:
                if child.failure:  # spawned, but unwatchable: killed and reaped below
                    return Outcome.FAILURE, child.failure
                async with asyncio.timeout_at(deadline):
                    await child.exited()
            except TimeoutError:
                return Outcome.FAILURE, timed_out(seconds)
            finally:
                # Also on success: a background grandchild must not outlive the attempt.
                try:
                    await _end_group(child)
                finally:
                    _SPAWNED.discard(child.pid)
                    child.close()
            # The child has exited, so all it wrote is in the pipe: no need to wait for an
            # EOF that a grandchild holding the pipe might never send.
            output.read_written()
            returncode = child.returncode
        if returncode == 0:
            return Outcome.SUCCESS, "exit 0"
        return Outcome.FAILURE, _exit_failure(returncode, output.text())


class _Child(Protocol):
    """A spawned exec child, whichever way its exit is learned."""

    pid: int
    failure: str  # non-empty: the attempt fails with this, once the group is killed

    async def exited(self) -> None:
        """Return once the child has exited (a zombie or already reaped)."""

    def reap(self) -> None:
        """Collect its exit status; call only once exited() returned."""

    @property
    def returncode(self) -> int:
        """As subprocess's: negative for a signal. Valid once reaped."""

    def close(self) -> None:
        """Let go of what watching it held."""


class _PidfdChild:
    """A child whose exit the loop learns from its pidfd, with no thread and no child watcher.

    It is reaped only once its group has been killed: a zombie keeps its pid, so until then
    neither the pid nor the group id can be reused under us.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], pidfd: int | None, loop: asyncio.AbstractEventLoop, failure: str = ""
    ) -> None:
        self.pid = process.pid
        self.failure = failure
        self._process = process
        self._pidfd = pidfd
        self._loop = loop
        self._has_exited = False

    async def exited(self) -> None:
        if self._has_exited:
            return
        if self._pidfd is None:  # only after the kill, within its grace: a short poll
            # No pidfd and no watcher: nothing tells us of the exit, so time is all to wait on.
            while not _exit_pending(self.pid):  # noqa: ASYNC110
                await asyncio.sleep(REAP_POLL_SECONDS)
        else:
            readable = self._loop.create_future()
            self._loop.add_reader(self._pidfd, _resolve, readable)
            try:
                await readable
            finally:
                self._loop.remove_reader(self._pidfd)
        self._has_exited = True

    def reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped behind our back: what asyncio's watchers report
            self._process.returncode = LOST_STATUS_RETURNCODE
            return
        if pid == self.pid:
            # Set on the Popen too: one with no returncode would be kept and polled by subprocess.
            self._process.returncode = os.waitstatus_to_exitcode(status)

    @property
    def returncode(self) -> int:
        returncode = self._process.returncode
        return LOST_STATUS_RETURNCODE if returncode is None else returncode

    def close(self) -> None:
        # A child still unreaped here is stuck in the kernel past the kill's grace. Dropping
        # its Popen hands it to subprocess, which reaps it at a later Popen (subprocess._active).
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _resolve(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_result(None)


def _exit_pending(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _spawn_with_pidfd(
    command: Sequence[str], output: _CappedOutput, loop: asyncio.AbstractEventLoop
) -> _PidfdChild | str:
    """Spawn the command, watched by a pidfd; a short reason if it could not be started.

    Blocking only for the spawn itself: vfork suspends us until the child has exec'd.
    """
    try:
        process = subprocess.Popen(command, stdout=output.write_fd, **_SPAWN_OPTIONS)
    except (OSError, ValueError) as error:
        return _spawn_failure(error, command[0])
    finally:
        output.close_write_end()
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError as error:  # EMFILE: another thread took a descriptor Popen had freed
        return _PidfdChild(process, None, loop, failure=_spawn_failure(error, command[0]))
    return _PidfdChild(process, pidfd, loop)


class _WatchedChild:
    """A child awaited through asyncio's subprocess machinery: the fallback without pidfds.

    On plain asyncio that is the ThreadedChildWatcher (a thread per child); uvloop spawns
    with fork() and learns of exits from SIGCHLD.
    """

    failure = ""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.pid = process.pid
        self._process = process

    async def exited(self) -> None:
        await self._process.wait()

    def reap(self) -> None:
        pass  # the watcher reaped it before exited() returned

    @property
    def returncode(self) -> int:
        returncode = self._process.returncode
        return LOST_STATUS_RETURNCODE if returncode is None else returncode

    def close(self) -> None:
        pass


async def _spawn_with_watcher(command: Sequence[str], output: _CappedOutput) -> _WatchedChild | str:
    """Spawn the command through the loop; a short reason if it could not be started."""
    try:
        process = await asyncio.create_subprocess_exec(*command, stdout=output.write_fd, **_SPAWN_OPTIONS)
    except (OSError, ValueError) as error:
        return _spawn_failure(error, command[0])
    finally:
        output.close_write_end()
    return _WatchedChild(process)


def _pidfds_supported() -> bool:
    """Whether this kernel and sandbox give us pidfds, asked once (but again after an EMFILE)."""
    global _pidfd_supported
    if _pidfd_supported is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
        except AttributeError:  # a Python built without it
            _pidfd_supported = False
        except OSError as error:
            if error.errno not in _PIDFD_UNSUPPORTED_ERRNOS:
                return True  # a passing shortage: the attempt itself will report it
            _pidfd_supported = False
        else:
            _pidfd_supported = True
    return _pidfd_supported


class _CappedOutput:
    """The child's stdout and stderr: the first MAX_OUTPUT_BYTES kept, the rest drained and dropped.

    Our own pipe rather than asyncio's PIPE: Process.wait() waits for EOF on asyncio's pipes,
    and a background grandchild can hold them open forever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._read_fd, self.write_fd = os.pipe()
        self._write_open = True
        self._kept = bytearray()
        os.set_blocking(self._read_fd, False)
        loop.add_reader(self._read_fd, self._read_once)

    def __enter__(self) -> _CappedOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.remove_reader(self._read_fd)
        os.close(self._read_fd)
        self.close_write_end()

    def close_write_end(self) -> None:
        """The child has its copy; ours would keep the pipe from ever reaching EOF."""
        if self._write_open:
            self._write_open = False
            os.close(self.write_fd)

    def read_written(self) -> None:
        """Take what is in the pipe now, stopping once there is nothing more worth keeping."""
        while len(self._kept) < MAX_OUTPUT_BYTES and self._read_once():
            pass

    def text(self) -> str:
        return self._kept.decode("utf-8", errors="replace")

    def _read_once(self) -> bool:
        """Read one chunk; False once the pipe is empty for now or closed."""
        try:
            chunk = os.read(self._read_fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return False
        if not chunk:
            self._loop.remove_reader(self._read_fd)
            return False
        room = MAX_OUTPUT_BYTES - len(self._kept)
        if room > 0:
            self._kept += chunk[:room]
        return True


async def _end_group(child: _Child) -> None:
    """SIGKILL the child's process group, reap the child, and reap group members we adopted."""
    signalled = _kill_group(child.pid)  # the child may be a zombie: its group id still holds
    adopts = _adopts_orphans()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE_SECONDS):
            await child.exited()
            child.reap()
            if signalled and adopts:
                await _reap_adopted_group(child.pid)
    if adopts:
        # Orphans that escaped the group (setsid) in earlier attempts may have exited since.
        _reap_adopted_zombies()


def _kill_group(pgid: int) -> bool:
    """Whether anything was left in the group to kill."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_exists(pgid: int) -> bool:
    """Whether any process, zombies included, is still in the group (one syscall, no /proc)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (setuid): it exists
        return True
    return True


async def _reap_adopted_group(pgid: int) -> None:
    """Wait for killed members of `pgid` that were reparented to us to die, and reap them.

    Only when we are PID 1 (or a subreaper) do orphans become ours; otherwise init reaps them.
    """
    while _group_exists(pgid):  # the common case, nothing left: no /proc scan at all
        _reap_adopted_zombies()
        if all(child.pgrp != pgid for child in _children()):
            return
        await asyncio.sleep(REAP_POLL_SECONDS)


class _ChildStat(NamedTuple):
    pid: int
    state: str
    pgrp: int
    session: int


def reap_adopted_zombies() -> int:
    """Reap zombie children we inherited but never spawned; return how many were reaped.

    As PID 1 in a container (or as a subreaper), orphans of killed or escaped
    grandchildren (`setsid cmd &`) become our children, and nothing else waits for them.
    Our own exec children (in _SPAWNED) and other code's children (which share our group)
    are left to whoever awaits them, as waitpid(-1) would steal them.
    """
    if not _adopts_orphans():
        return 0  # orphans go to init, never to us: every zombie child of ours is awaited
    return _reap_adopted_zombies()


def _adopts_orphans() -> bool:
    return os.getpid() == 1 or _is_subreaper()


def _reap_adopted_zombies() -> int:
    own_pgrp = os.getpgrp()
    reaped = 0
    for child in _children():
        if child.state != "Z" or child.pid in _SPAWNED or child.pgrp == own_pgrp:
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(child.pid, os.WNOHANG)[0] == child.pid:
                reaped += 1
    return reaped


def _children() -> Iterator[_ChildStat]:
    """Our direct children, from every thread's list (orphans may land on any of them)."""
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:  # no /proc: nothing we can find, nothing we can do
        return
    for thread in threads:
        # Raw reads: this runs after every attempt, and pathlib would cost 4x as much.
        listing = _read_proc(f"/proc/self/task/{thread}/children")
        for pid in map(int, listing.split()):
            stat = _read_proc(f"/proc/{pid}/stat")
            if not stat:  # already gone
                continue
            # The command name may contain spaces and parentheses; the fields after it cannot.
            fields = stat[stat.rfind(b")") + 2 :].split()
            yield _ChildStat(pid, fields[0].decode(), int(fields[2]), int(fields[3]))


def _read_proc(path: str) -> bytes:
    """A small /proc file, or b"" if it vanished (or the kernel lacks CONFIG_PROC_CHILDREN)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 64 * 1024)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _spawn_failure(error: OSError | ValueError, program: str) -> str:
    name = sanitize(program, 60)
    if isinstance(error, FileNotFoundError):
        return f"exec: command not found: {name}"
    if isinstance(error, PermissionError):
        return f"exec: permission denied: {name}"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"exec: {sanitize(reason, 60)}: {name}"


def _exit_failure(returncode: int, output: str) -> str:
    if returncode < 0:
        try:
            status = f"exec killed by {signal.Signals(-returncode).name}"
        except ValueError:
            status = f"exec killed by signal {-returncode}"
    else:
        status = f"exec exit {returncode}"
    first_line = sanitize(output)
    return f"{status}: {first_line}" if first_line else status


def _is_subreaper() -> bool:
    import ctypes

    flag = ctypes.c_int(0)
    try:
        _libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return flag.value != 0


@functools.cache
def _libc() -> Any:
    # Loading libc costs 5-10% of an exec attempt; the subreaper flag itself can change, so
    # only the handle is kept.
    import ctypes

    return ctypes.CDLL(None, use_errno=True)
