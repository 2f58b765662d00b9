"""`readiness-sidecar run` as a real process: ports, signals, draining, exit."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import sidecar_cmd
from tests.sidecar_process import SidecarProcess
from tests.target_apps import FlipTarget


def _descendants(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid or int(fields[2]) == pid:  # ppid or process group
            found.append(int(entry))
    return found


async def test_sigterm_drains_while_serving_then_exits_zero_leaving_no_children() -> None:
    target = await FlipTarget.start(200)
    car = await SidecarProcess.start(
        "--health-port", "0", "--grpc-port", "0", "--metrics-port", "off", "--drain-seconds", "1",
        "--probe", f"app=http://127.0.0.1:{target.port}/health",
        # an exec probe that is always mid-flight, so a child exists at SIGTERM time
        "--probe", "slow=exec:sleep 30;timeout=20s;required=false",
    )
    statuses: list[int] = []
    errors: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(car.base + "/ready?wait=5s") as resp:
                assert resp.status == 200
            assert _descendants(car.proc.pid), "the exec probe's child should be running"

            async def hammer() -> None:
                while car.proc.returncode is None:
                    try:
                        async with session.get(car.base + "/ready") as resp:
                            statuses.append(resp.status)
                    except aiohttp.ClientError as exc:
                        if car.proc.returncode is None:
                            errors.append(f"{time.monotonic() - sent:.3f}s {exc!r}")
                        return

            sent = time.monotonic()
            car.terminate()
            hammers = [asyncio.create_task(hammer()) for _ in range(4)]
            code = await car.wait(10)
            elapsed = time.monotonic() - sent
            await asyncio.gather(*hammers)
    finally:
        await car.kill()
        await target.stop()
    assert code == 0
    assert 0.9 <= elapsed < 4.0, f"exit {elapsed:.2f}s after SIGTERM with --drain-seconds 1"
    assert set(statuses) <= {200, 503} and 503 in statuses
    # Not-ready must come first thing after SIGTERM: once a 503 was seen, no 200 follows.
    first_503 = statuses.index(503)
    assert 200 not in statuses[first_503:]
    # Connection errors are only allowed once the drain is over (the process is exiting).
    late_errors = [e for e in errors if float(e.split("s", 1)[0]) < 0.95]
    assert not late_errors, late_errors
    assert not _descendants(car.proc.pid), "no probe child may outlive the sidecar"
    assert any("drain complete" in line for line in car.log)


async def test_port_zero_picks_free_ports_and_reports_them() -> None:
    car = await SidecarProcess.start(
        "--health-port", "0", "--grpc-port", "0", "--metrics-port", "off", "--drain-seconds", "0",
        env={"SERVING_READINESS_PROBE": ""},
    )
    try:
        assert car.health_port > 0 and car.grpc_port and car.grpc_port != car.health_port
        async with aiohttp.ClientSession() as session, session.get(car.base + "/ready") as resp:
            assert resp.status == 200, "an empty SERVING_READINESS_PROBE means always ready"
        car.terminate()
        assert await car.wait() == 0
    finally:
        await car.kill()


async def test_every_flag_has_an_env_var() -> None:
    car = await SidecarProcess.start(
        "--probe", "x=tcp://127.0.0.1:1",
        env={"READINESS_SIDECAR_HEALTH_PORT": "0", "READINESS_SIDECAR_GRPC_PORT": "off",
             "READINESS_SIDECAR_METRICS_PORT": "off", "READINESS_SIDECAR_DRAIN_SECONDS": "0",
             "READINESS_SIDECAR_LOG_FORMAT": "json"},
    )
    try:
        assert car.grpc_port is None and car.metrics_port is None
        line = await car.wait_for_log(lambda line: "listening" in line)
        assert json.loads(line)["level"] == "info", "json log format from the env var"
    finally:
        car.terminate()
        await car.wait()
        await car.kill()


def test_bad_settings_are_one_line_and_exit_2(sidecar_env: dict[str, str]) -> None:
    cases = {
        ("--health-port", "70000"): "--health-port: port 70000 out of range",
        ("--aggressive-interval", "fast"): "--aggressive-interval: bad duration 'fast'",
        ("--log-format", "xml"): "--log-format: log format 'xml' must be one of text, json",
    }
    for args, expected in cases.items():
        proc = subprocess.run(
            sidecar_cmd("run", "--probe", "x=tcp://127.0.0.1:1", *args),
            capture_output=True, text=True, env=sidecar_env, timeout=30,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), (args, proc.stderr)


def test_python_dash_m_sidecar_works(sidecar_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "sidecar", "--version"], capture_output=True,
                          text=True, env=sidecar_env, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("readiness-sidecar ")


def test_ports_file_holds_the_bound_ports_as_one_json_line(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    ports_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        sidecar_cmd("run", "--bind", "127.0.0.1", "--health-port", "0", "--grpc-port", "off", "--metrics-port", "0",
                    "--drain-seconds", "0", "--ports-file", str(ports_file)),
        env={**sidecar_env, "SERVING_READINESS_PROBE": ""}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ports_file.exists():  # it appears whole, by rename
            assert time.monotonic() < deadline and proc.poll() is None, "no ports file"
            time.sleep(0.02)
        text = ports_file.read_text()
        assert text.count("\n") == 1 and text.endswith("\n")
        ports = json.loads(text)
        assert ports["grpc"] is None and ports["health"] > 0 and ports["metrics"] > 0
        for port, path in ((ports["health"], "/healthz"), (ports["metrics"], "/metrics")):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path)
            assert connection.getresponse().status == 200, "the ports in the file are the ones that answer"
            connection.close()
        assert not list(tmp_path.glob(".*.tmp")), "written aside, then renamed: no partial file left"
        proc.terminate()
        stdout, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and stdout == b"", "a ports file, not stdout"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unwritable_ports_file_is_one_line_and_exit_2(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "ports.json"
    done = subprocess.run(
        sidecar_cmd("run", "--bind", "127.0.0.1", "--health-port", "0", "--grpc-port", "off", "--metrics-port", "off",
                    "--drain-seconds", "0", "--ports-file", str(missing)),
        env={**sidecar_env, "SERVING_READINESS_PROBE": ""}, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"--ports-file {missing}: cannot write: No such file or directory"
    assert "Traceback" not in done.stderr
