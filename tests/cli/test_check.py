"""`readiness-sidecar check`: one parallel round, a table or JSON, and exit codes 0/1/2."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.cli.check import WAIT_RECHECK_SECONDS
from sidecar.config.loader import load_config
from sidecar.runtime.attempt import check_exit_code, check_once
from tests.conftest import PEER_MANIFESTS, sidecar_cmd
from tests.target_apps import FlipTarget


@pytest.fixture
async def healthy() -> AsyncIterator[FlipTarget]:
    target = await FlipTarget.start(200)
    yield target
    await target.stop()


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, sidecar_cmd("check", *args), capture_output=True, text=True, env=env, timeout=60
    )


async def test_exit_0_when_every_required_container_passes_and_a_table_is_printed(
    healthy: FlipTarget, sidecar_env: dict[str, str]
) -> None:
    proc = await run_cli(sidecar_env, "--probe", f"web={healthy.url}", "--probe", f"db=tcp://127.0.0.1:{healthy.port}")
    assert proc.returncode == 0, proc.stderr
    header, web, db, summary = proc.stdout.strip().splitlines()
    assert header.split() == ["CONTAINER", "PROBE", "TARGET", "RESULT", "LATENCY", "MESSAGE"]
    assert web.split()[:4] == ["web", "httpGet", healthy.url, "success"]
    assert db.split()[:4] == ["db", "tcpSocket", f"tcp://127.0.0.1:{healthy.port}", "success"]
    assert summary == "ready: 2 of 2 containers ready"


async def test_exit_1_when_a_required_container_fails_and_json_names_the_reason(
    healthy: FlipTarget, sidecar_env: dict[str, str]
) -> None:
    port = refused_port()
    proc = await run_cli(sidecar_env, "--json", "--probe", f"web={healthy.url}", "--probe", f"db=tcp://127.0.0.1:{port}")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert (doc["ready"], doc["status"]) == (False, "not_ready")
    by_name = {c["container"]: c for c in doc["containers"]}
    assert by_name["web"]["result"] == "success" and by_name["web"]["latency_ms"] > 0
    assert by_name["db"] == {
        "container": "db", "probe": "tcpSocket", "target": f"tcp://127.0.0.1:{port}", "required": True,
        "status": "not_ready", "result": "failure", "latency_ms": by_name["db"]["latency_ms"],
        "message": f"connect ECONNREFUSED 127.0.0.1:{port}",
    }


async def test_optional_containers_are_reported_only_with_all_containers_and_never_gate(
    healthy: FlipTarget, sidecar_env: dict[str, str]
) -> None:
    args = ("--json", "--probe", f"web={healthy.url}", "--probe", f"side=tcp://127.0.0.1:{refused_port()};required=false")
    plain = await run_cli(sidecar_env, *args)
    everything = await run_cli(sidecar_env, *args, "--all-containers")
    assert plain.returncode == everything.returncode == 0
    assert [c["container"] for c in json.loads(plain.stdout)["containers"]] == ["web"]
    assert [c["container"] for c in json.loads(everything.stdout)["containers"]] == ["web", "side"]


async def test_a_manifest_with_an_unobserved_container_warns_once_and_passes(
    sidecar_env: dict[str, str], tmp_path: Path
) -> None:
    # The exec-liveness peer pod has no readinessProbe and no ports: nothing to observe.
    proc = await run_cli(sidecar_env, "-f", str(PEER_MANIFESTS / "k8s-exec-liveness.yaml"))
    assert proc.returncode == 0
    assert proc.stderr.count("\n") == 1 and "left to the kubelet" in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--probe", "web=htp://x:1"), '--probe "web=htp://x:1": unknown scheme "htp"'),
        (("-f", "/nonexistent/pod.yaml"), "/nonexistent/pod.yaml: cannot read: No such file or directory"),
        ((), "no containers configured"),
        (("--bogus",), "readiness-sidecar check: unrecognized arguments: --bogus"),
    ],
)
async def test_user_mistakes_are_one_line_and_exit_2(
    sidecar_env: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    proc = await run_cli(sidecar_env, *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(expected), proc.stderr
    assert "Traceback" not in proc.stderr


async def test_twenty_300ms_probes_run_in_parallel() -> None:
    slow = await FlipTarget.start(200, delay=0.3)
    try:
        flags = [f"c{i}={slow.url};timeout=2s" for i in range(20)]
        config = load_config(probe_flags=flags, environ={})
        start = time.monotonic()
        rows = await check_once(config, logging.getLogger("readiness_sidecar.test"))
        elapsed = time.monotonic() - start
    finally:
        await slow.stop()
    assert check_exit_code(rows) == 0 and len(rows) == 20
    # Sequential would be 6 s; a parallel round costs about one probe.
    assert elapsed < 1.0, f"20 x 300 ms took {elapsed:.2f}s"


# -- the summary line, -q, --wait ---------------------------------------------------------


async def test_the_summary_names_what_is_not_ready_and_says_optional_containers_are_hidden(
    healthy: FlipTarget, sidecar_env: dict[str, str]
) -> None:
    down, side = refused_port(), refused_port()
    probes = ("--probe", f"web={healthy.url}", "--probe", f"db=tcp://127.0.0.1:{down}",
              "--probe", f"side=tcp://127.0.0.1:{side};required=false")
    plain = await run_cli(sidecar_env, *probes)
    assert plain.returncode == 1
    assert plain.stdout.splitlines()[-1] == (
        f"not_ready: 1 of 2 containers ready; db: connect ECONNREFUSED 127.0.0.1:{down};"
        " 1 optional container hidden (--all-containers shows it)"
    )
    everything = await run_cli(sidecar_env, *probes, "--all-containers")
    assert everything.stdout.splitlines()[-1] == (
        f"not_ready: 1 of 3 containers ready; db: connect ECONNREFUSED 127.0.0.1:{down};"
        f" side (optional): connect ECONNREFUSED 127.0.0.1:{side}"
    )


async def test_an_optional_container_that_fails_leaves_the_pod_ready(
    healthy: FlipTarget, sidecar_env: dict[str, str]
) -> None:
    side = refused_port()
    probes = ("--probe", f"web={healthy.url}", "--probe", f"side=tcp://127.0.0.1:{side};required=false")
    proc = await run_cli(sidecar_env, *probes, "--all-containers")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[-1] == (
        f"ready: 1 of 2 containers ready; side (optional): connect ECONNREFUSED 127.0.0.1:{side}"
    )


async def test_quiet_prints_only_the_summary_line(healthy: FlipTarget, sidecar_env: dict[str, str]) -> None:
    ready = await run_cli(sidecar_env, "-q", "--probe", f"web={healthy.url}")
    assert (ready.returncode, ready.stdout, ready.stderr) == (0, "ready: 1 of 1 containers ready\n", "")
    port = refused_port()
    down = await run_cli(sidecar_env, "--quiet", "--probe", f"db=tcp://127.0.0.1:{port}")
    expected = f"not_ready: 0 of 1 containers ready; db: connect ECONNREFUSED 127.0.0.1:{port}\n"
    assert (down.returncode, down.stdout) == (1, expected)


async def test_quiet_is_one_line_in_all_even_with_warnings(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    # `batch` has neither a probe nor ports: unobserved, a warning without -q.
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - {name: app, image: a, readinessProbe: {exec: {command: ['true']}}}\n"
        "  - {name: batch, image: b}\n"
    )
    loud = await run_cli(sidecar_env, "-f", str(pod))
    assert loud.returncode == 0 and "left to the kubelet" in loud.stderr
    quiet = await run_cli(sidecar_env, "-q", "-f", str(pod))
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert quiet.stdout == "ready: 1 of 2 containers ready; batch: left to the kubelet\n"


async def test_wait_rechecks_until_a_target_becomes_ready(sidecar_env: dict[str, str]) -> None:
    # A real HTTP target that answers 503 and turns 200 after half a second, as an app starts.
    target = await FlipTarget.start(503)
    try:
        started = time.monotonic()
        waiting = asyncio.create_task(run_cli(sidecar_env, "--wait", "20s", "-q", "--probe", f"web={target.url}"))
        # Until the first attempt arrives (the interpreter starting): FlipTarget only records times.
        while not target.request_times and time.monotonic() - started < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        target.status = 200
        flipped = time.monotonic()
        proc = await waiting
        ended = time.monotonic()
    finally:
        await target.stop()
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ready: 1 of 1 containers ready\n", "")
    # Re-checked, not once: several 503s before the 200, spaced by the re-check interval.
    before = [t for t in target.request_times if t < flipped]
    assert len(before) >= 2, target.request_times
    gaps = [b - a for a, b in zip(target.request_times, target.request_times[1:], strict=False)]
    assert min(gaps) >= WAIT_RECHECK_SECONDS * 0.8, gaps
    # Done within a re-check interval (and start-up jitter) of the target turning ready.
    assert target.request_times[-1] - flipped <= WAIT_RECHECK_SECONDS + 0.2
    assert ended - started < 10


async def test_wait_gives_up_when_the_duration_ends(sidecar_env: dict[str, str]) -> None:
    port = refused_port()
    started = time.monotonic()
    proc = await run_cli(sidecar_env, "--wait", "700ms", "--probe", f"db=tcp://127.0.0.1:{port}")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1].startswith("not_ready: 0 of 1 containers ready")
    assert proc.stderr == "readiness-sidecar check: still not ready after --wait 700ms\n"
    assert 0.7 <= elapsed < 5, elapsed


@pytest.mark.parametrize("value", ["soon", "-1s", "1e400s"])
async def test_a_bad_wait_is_one_line(value: str, sidecar_env: dict[str, str]) -> None:
    proc = await run_cli(sidecar_env, f"--wait={value}", "--probe", "db=tcp://127.0.0.1:1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("--wait: ") and proc.stderr.count("\n") == 1, proc.stderr


async def test_ctrl_c_ends_a_wait_with_130_and_no_traceback(sidecar_env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *sidecar_cmd("check", "--wait", "30s", "--probe", f"db=tcp://127.0.0.1:{refused_port()}"),
        env=sidecar_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)  # started, and waiting
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 130, stderr
    assert b"Traceback" not in stderr and stdout == b""
