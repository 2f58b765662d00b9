"""Host names are checked at load time against DNS's limits, in every source.

A name the resolver can never take (a label over 63 characters, a name over 253, an empty
label, one the IDNA codec refuses) used to reach the probe, which raised UnicodeError on
every attempt; in `check` that was an ExceptionGroup traceback and exit 1. Now it is one
line naming the field, exit 2, in `check` and `run` alike.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from sidecar.config.loader import load_config
from sidecar.config.wire_text import MAX_HOST_CHARS, MAX_LABEL_CHARS, host_problem
from sidecar.contract import CONFIG_ENV
from sidecar.errors import ConfigError
from tests.conftest import sidecar_cmd

LONG_LABEL = "a" * (MAX_LABEL_CHARS + 1)
LONG_LABEL_HOST = f"{LONG_LABEL}.example"
# Five 60-character labels: every label fits, the whole name does not.
LONG_NAME = ".".join(["b" * 60] * 5)


@pytest.mark.parametrize(
    "host",
    [
        "a" * MAX_LABEL_CHARS,
        ".".join(["c" * 63] * 3) + "." + "d" * (MAX_HOST_CHARS - 3 * 64),  # exactly 253
        "db.local.",  # fully qualified
        "_grpc.svc",  # underscores are the resolver's business, not ours
        "bücher.example",  # IDNA: xn--bcher-kva
        "127.0.0.1",
        "fd00::17",
        "localhost",
    ],
)
def test_names_the_resolver_takes_pass(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        (LONG_LABEL_HOST, "has a label longer than 63 characters (64)"),
        (LONG_NAME, "is longer than 253 characters (304)"),
        ("a..b", "has an empty label (two dots in a row, or a dot first)"),
        (".a", "has an empty label (two dots in a row, or a dot first)"),
        ("ü" * 60, "is not a name IDNA can encode"),
    ],
)
def test_names_the_resolver_refuses_say_why(host: str, problem: str) -> None:
    assert host_problem(host) == problem


def test_every_source_refuses_a_long_label_with_one_line_naming_the_field(tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        f"  - {{name: app, image: x, readinessProbe: {{httpGet: {{port: 80, host: {LONG_LABEL_HOST}}}}}}}\n"
        f"  - {{name: db, image: x, readinessProbe: {{tcpSocket: {{port: 5432, host: {LONG_LABEL_HOST}}}}}}}\n"
    )
    containers = json.dumps(
        {"containers": [{"name": "db", "readinessProbe": {"tcpSocket": {"port": 5432, "host": LONG_LABEL_HOST}}}]}
    )
    cases = [
        (lambda: load_config(config_file=str(manifest), environ={}), 'container "app": readinessProbe.httpGet.host: '),
        (lambda: load_config(environ={CONFIG_ENV: containers}), 'container "db": readinessProbe.tcpSocket.host: '),
        (
            lambda: load_config(environ={}, probe_flags=[f"db=tcp://{LONG_LABEL_HOST}:5432"]),
            f'--probe "db=tcp://{LONG_LABEL}',
        ),
        (
            lambda: load_config(environ={}, probe_flags=[f"web=http://{LONG_LABEL_HOST}/"]),
            f'--probe "web=http://{LONG_LABEL}',
        ),
        (
            lambda: load_config(environ={}, probe_flags=[f"g=grpc://{LONG_LABEL_HOST}:9090"]),
            f'--probe "g=grpc://{LONG_LABEL}',
        ),
    ]
    for load, where in cases:
        with pytest.raises(ConfigError) as caught:
            load()
        message = str(caught.value)
        assert where in message and message.endswith("has a label longer than 63 characters (64)"), message
        assert "\n" not in message


@pytest.mark.parametrize("command", ["check", "run"])
async def test_a_long_label_is_one_line_and_exit_2_in_check_and_run(
    command: str, sidecar_env: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        f"  - {{name: db, image: x, readinessProbe: {{tcpSocket: {{port: 5432, host: {LONG_LABEL_HOST}}}}}}}\n"
    )
    for args in (("-f", str(manifest)), ("--probe", f"db=tcp://{LONG_LABEL_HOST}:5432")):
        argv = sidecar_cmd(command, *args, *(("--health-port", "0", "--grpc-port", "off") if command == "run" else ()))
        proc = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=sidecar_env, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.rstrip().endswith("has a label longer than 63 characters (64)"), proc.stderr
        assert proc.stdout == ""
