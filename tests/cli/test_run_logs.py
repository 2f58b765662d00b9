"""`run`'s log as a real process writes it: --log-level, the start-up facts as JSON fields, the drain's countdown."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time

from tests.conftest import sidecar_cmd
from tests.sidecar_process import SidecarProcess

QUIET = ("--health-port", "0", "--grpc-port", "off", "--metrics-port", "off")


def refused_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_log_level_warning_from_env_leaves_out_info_and_keeps_failure_summaries() -> None:
    port = refused_port()
    car = await SidecarProcess.start(
        *QUIET,
        "--drain-seconds",
        "0",
        "--probe",
        f"db=tcp://127.0.0.1:{port}",
        env={"READINESS_SIDECAR_LOG_LEVEL": "warning"},
    )
    try:
        # The first summary comes 5 s into the failing (serve.logs.SUMMARY_BACKOFF).
        summary = await car.wait_for_log(lambda line: " WARNING db: " in line, timeout=15)
        assert f"failures in 5s, last: connect ECONNREFUSED 127.0.0.1:{port}" in summary
    finally:
        car.terminate()
        assert await car.wait() == 0
        await car.kill()
    assert not [line for line in car.log if " INFO " in line], list(car.log)


async def test_log_level_debug_shows_each_change_of_result() -> None:
    car = await SidecarProcess.start(
        *QUIET, "--drain-seconds", "0", "--log-level", "debug", "--probe", f"db=tcp://127.0.0.1:{refused_port()}"
    )
    try:
        line = await car.wait_for_log(lambda line: " DEBUG db: attempt failure: connect ECONNREFUSED" in line)
        await asyncio.sleep(0.5)  # ~150 attempts at the aggressive interval, one result
        assert [line for line in car.log if " DEBUG " in line] == [line]
    finally:
        car.terminate()
        await car.wait()
        await car.kill()


def test_a_bad_log_level_is_one_line_and_exit_2(sidecar_env: dict[str, str]) -> None:
    proc = subprocess.run(
        sidecar_cmd("run", "--probe", "x=tcp://127.0.0.1:1", "--log-level", "verbose"),
        capture_output=True,
        text=True,
        env=sidecar_env,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "--log-level: log level 'verbose' must be one of debug, info, warning, error"
    ], proc.stderr


async def test_json_start_up_line_carries_ports_containers_sources_drain_and_version() -> None:
    from sidecar import __version__

    car = await SidecarProcess.start(
        "--health-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "off",
        "--drain-seconds",
        "2s",
        "--log-format",
        "json",
        "--probe",
        f"web=http://127.0.0.1:{refused_port()}/ready",
        "--probe",
        "db=tcp://127.0.0.1:5432;required=false",
    )
    try:
        await car.wait_for_log(lambda line: '"probe": "tcpSocket"' in line or '"probe":"tcpSocket"' in line)
    finally:
        car.proc.send_signal(signal.SIGKILL)
        await car.kill()
    docs = [json.loads(line) for line in car.log]
    start = next(doc for doc in docs if "listening" in doc["msg"])
    assert start["ports"] == {"health": car.health_port, "grpc": car.grpc_port, "metrics": None}
    assert start["containers"] == ["web", "db"]
    assert start["sources"] and all(isinstance(source, str) for source in start["sources"])
    assert (start["drain_seconds"], start["version"], start["bind"], start["log_level"]) == (
        2.0,
        __version__,
        "127.0.0.1",
        "info",
    )
    probing = [doc for doc in docs if doc.get("target")]
    assert [(doc["container"], doc["probe"]) for doc in probing] == [("web", "httpGet"), ("db", "tcpSocket")]


async def test_the_drain_counts_down_and_a_second_signal_ends_it_now() -> None:
    car = await SidecarProcess.start(
        *QUIET, "--drain-seconds", "30s", "--probe", f"db=tcp://127.0.0.1:{refused_port()}"
    )
    try:
        car.terminate()
        first = await car.wait_for_log(lambda line: "drain: " in line)
        assert first.rstrip().endswith("drain: 30s left, then exit; a second SIGTERM or SIGINT ends it now"), first
        second_at = time.monotonic()
        car.proc.send_signal(signal.SIGINT)  # Ctrl-C counts as the second signal too
        assert await car.wait(5) == 0
        took = time.monotonic() - second_at
    finally:
        await car.kill()
    assert took < 3.0, f"exited {took:.2f}s after the second signal, not at once"
    ended = [line for line in car.log if "second stop signal" in line]
    assert len(ended) == 1 and " WARNING drain: second stop signal, ending the drain now, " in ended[0], list(car.log)
    assert car.log[-1].rstrip().endswith("drain complete, exiting")
