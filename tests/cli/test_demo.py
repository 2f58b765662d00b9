"""`run --demo`'s targets: real child processes whose readiness changes on schedule."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from probes import Probe, build_probe
from sidecar.demo.launcher import Demo, DemoStartError, start_demo
from tests.conftest import REPO


def _process_gone(pid: int) -> bool:
    """Exited: no longer in /proc, or a zombie an init that doesn't reap still holds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _our_demo_children() -> list[int]:
    """Live children of this process that run a demo app, straight from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z" and b"sidecar.demo" in cmdline:
            found.append(int(entry.name))
    return found


async def _watch(
    demo: Demo, seconds: float, *, until_ready: tuple[str, ...] = ()
) -> dict[str, list[tuple[float, bool]]]:
    """Probe every container, one attempt each, every 50 ms; per container the
    (time since start, ok) of the first attempt and of every change after it.

    Stops after `seconds`, or 0.3 s after every container in `until_ready` is ok."""
    probes: dict[str, Probe] = {
        c.name: build_probe(c.handler) for c in demo.config.containers if c.handler is not None
    }
    seen: dict[str, list[tuple[float, bool]]] = {name: [] for name in probes}
    start = time.monotonic()
    end = seconds
    while (now := time.monotonic() - start) < end:
        results = await asyncio.gather(*(p.attempt(1.0) for p in probes.values()))
        for name, result in zip(probes, results, strict=True):
            if not seen[name] or seen[name][-1][1] != result.outcome.ok:
                seen[name].append((now, result.outcome.ok))
        if until_ready and all(seen[name][-1][1] for name in until_ready):
            end = min(end, now + 0.3)
        await asyncio.sleep(0.05)
    return seen


async def test_demo_watches_one_container_of_every_probe_type() -> None:
    demo = await start_demo()
    try:
        kinds = {c.name: c.handler.kind for c in demo.config.containers if c.handler}
        assert kinds == {"web": "httpGet", "grpc": "grpc", "tcp": "tcpSocket", "file": "exec"}
        targets = {c.name: c.handler.target for c in demo.config.containers if c.handler}
        assert targets["web"].endswith("/healthz")
        assert targets["file"] == f"exec:test -f {demo.ready_file}"
        assert all(c.required for c in demo.config.containers)
        assert demo.config.sources == ("--demo",)
    finally:
        await demo.close()


async def test_web_tcp_and_file_go_from_failing_to_ready_on_schedule() -> None:
    demo = await start_demo(grpc_flip_every=3600)
    try:
        seen = await _watch(demo, seconds=5.0, until_ready=("tcp", "web", "file"))
    finally:
        await demo.close()
    # Each starts failing, turns ready once, and stays ready: [(t0, False), (t_ready, True)].
    for name, after in (("tcp", 1.0), ("web", 2.0), ("file", 3.0)):
        assert [ok for _, ok in seen[name]] == [False, True], (name, seen[name])
        ready_at = seen[name][1][0]
        # Timers start when the app (or start_demo) does, a little before we watch.
        assert after - 1.0 < ready_at < after + 1.0, (name, seen[name])
    assert [ok for _, ok in seen["grpc"]] == [True]


async def test_grpc_target_flips_between_serving_and_not_serving() -> None:
    demo = await start_demo(grpc_flip_every=0.3)
    try:
        seen = await _watch(demo, seconds=1.2)
    finally:
        await demo.close()
    # Where it starts depends on how long the other apps took to come up (it starting
    # SERVING is pinned above); here, both states and at least two changes are seen.
    changes = len(seen["grpc"]) - 1
    assert changes >= 2, seen["grpc"]


async def test_close_leaves_no_child_and_no_temp_dir() -> None:
    demo = await start_demo()
    pids = [app.process.pid for app in demo.apps]
    assert len(pids) == 3 and sorted(_our_demo_children()) == sorted(pids)
    await demo.close()
    assert _our_demo_children() == []
    assert all(_process_gone(pid) for pid in pids)
    assert not demo.workdir.exists()
    await demo.close()  # a second close is harmless


async def test_failed_start_stops_the_apps_already_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # The tcp app, started last, rejects the value and exits before announcing a port.
    with pytest.raises(DemoStartError, match="tcp_app exited"):
        await start_demo(tcp_listen_after=-1)
    assert _our_demo_children() == []
    assert os.listdir(tmp_path) == []


_DEMO_THEN_HANG = """
import asyncio
from sidecar.demo.launcher import start_demo

async def main():
    demo = await start_demo()
    print(*(app.process.pid for app in demo.apps), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_apps_exit_when_the_demo_process_is_killed(tmp_path: Path) -> None:
    # The apps run in their own session, so only their stdin lifeline can tell them.
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DEMO_THEN_HANG, stdout=asyncio.subprocess.PIPE,
        # A SIGKILLed demo can't remove its temp dir: keep it in ours.
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)},
    )
    assert parent.stdout is not None
    try:
        async with asyncio.timeout(20):
            pids = [int(pid) for pid in (await parent.stdout.readline()).split()]
        assert len(pids) == 3
    finally:
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
    for _ in range(100):  # up to 5 s
        if all(_process_gone(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    assert all(_process_gone(pid) for pid in pids)
