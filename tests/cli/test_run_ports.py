"""A port `run` (or `webhook`) can't have is one line naming the flag or env var and the address, exit 2.

Real subprocesses of the CLI; the port is held by a real listening socket on 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import run_cli

# Nothing listens here: no other port of `run` gets in the way of the one under test.
_OTHER_PORTS = {"--health-port": "0", "--grpc-port": "0", "--metrics-port": "0"}
# TEST-NET-1 (RFC 5737): never an address of this host, so binding it is EADDRNOTAVAIL. Only
# bound, never sent to.
_NOT_OURS = "192.0.2.1"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--probe", "x=tcp://127.0.0.1:1", "--drain-seconds", "0", *args, env=env)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == "", "nothing on stdout"
    [line] = done.stderr.splitlines()
    return line


@pytest.mark.parametrize("flag", list(_OTHER_PORTS))
def test_a_port_in_use_is_one_line_naming_the_flag(flag: str, held_port: int, sidecar_env: dict[str, str]) -> None:
    ports = {**_OTHER_PORTS, flag: str(held_port)}
    done = _run(["--bind", "127.0.0.1", *(a for pair in ports.items() for a in pair)], sidecar_env)
    assert _one_line(done) == (
        f"--bind 127.0.0.1 {flag} {held_port}: cannot listen on 127.0.0.1:{held_port}: Address already in use"
    )


@pytest.mark.parametrize("setting", ["HEALTH_PORT", "GRPC_PORT", "METRICS_PORT"])
def test_a_port_from_the_env_names_the_env_var(setting: str, held_port: int, sidecar_env: dict[str, str]) -> None:
    env = {f"READINESS_SIDECAR_{name}": "0" for name in ("HEALTH_PORT", "GRPC_PORT", "METRICS_PORT")}
    env |= {f"READINESS_SIDECAR_{setting}": str(held_port), "READINESS_SIDECAR_BIND": "127.0.0.1"}
    line = _one_line(_run([], {**sidecar_env, **env}))
    assert line == (
        f"READINESS_SIDECAR_BIND=127.0.0.1 READINESS_SIDECAR_{setting}={held_port}: "
        f"cannot listen on 127.0.0.1:{held_port}: Address already in use"
    )


def test_a_default_port_in_use_names_its_flag(sidecar_env: dict[str, str]) -> None:
    # The flag alone when the port is the default one: 8550 may be free or not, so hold it ourselves
    # if we can; if something else holds it, the answer is the same.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", 8550))
            holder.listen()
        except OSError:
            pass
        line = _one_line(_run(["--bind", "127.0.0.1", "--grpc-port", "off", "--metrics-port", "off"], sidecar_env))
    assert line == "--bind 127.0.0.1 --health-port: cannot listen on 127.0.0.1:8550: Address already in use"


def test_an_address_not_of_this_host_is_one_line(sidecar_env: dict[str, str]) -> None:
    line = _one_line(_run(["--bind", _NOT_OURS, "--health-port", "0"], sidecar_env))
    expected = f"--bind {_NOT_OURS} --health-port 0: cannot listen on {_NOT_OURS}:0: Cannot assign requested address"
    assert line == expected


def test_the_webhook_says_it_the_same_way(held_port: int, sidecar_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf = trustme.CA().issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    done = run_cli(
        "webhook", "--bind", "127.0.0.1", "--port", str(held_port), "--cert", str(cert), "--key", str(key),
        env=sidecar_env,
    )
    [line] = [line for line in done.stderr.splitlines() if "listen" in line]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    address = f"127.0.0.1:{held_port}"
    assert line == f"--bind 127.0.0.1 --port {held_port}: cannot listen on {address}: Address already in use"
