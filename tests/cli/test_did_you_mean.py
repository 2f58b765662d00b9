"""A typo gets "did you mean": commands, options, choices, --probe options and manifest fields.
Each is one line on stderr, nothing on stdout, exit 2, through the real CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import sidecar_cmd

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: app
    image: app:1
    ports: [{{containerPort: 8080}}]
{container}
"""


def mistake(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(sidecar_cmd(*args), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.rstrip("\n")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("li",),
            "readiness-sidecar: argument COMMAND: invalid choice: 'li' (choose from 'check', 'run', 'inject',"
            " 'lint', 'webhook', 'completion'); did you mean lint?",
        ),
        (("chek", "--probe", "x=tcp://:1"), "did you mean check?"),
        (
            ("check", "--all-contaners"),
            "readiness-sidecar check: unrecognized arguments: --all-contaners; did you mean --all-containers?",
        ),
        (("check", "--proeb", "web=tcp://:1"), "unrecognized arguments: --proeb web=tcp://:1; did you mean --probe?"),
        (("check", "--filenme=pod.yaml"), "did you mean --filename?"),
        (("--verison", "check"), "readiness-sidecar check: unrecognized arguments: --verison; did you mean --version?"),
        (
            ("lint", "--formt", "json"),
            "readiness-sidecar lint: unrecognized arguments: --formt json; did you mean --format?",
        ),
        (("check", "-o", "jsn"), "invalid choice: 'jsn' (choose from 'text', 'json', 'yaml'); did you mean json?"),
        (("lint", "--fail-on", "warn"), "did you mean warning?"),
        (("completion", "fsh"), "did you mean fish?"),
    ],
)
def test_a_misspelt_command_option_or_choice_gets_a_suggestion(
    args: tuple[str, ...], line: str, sidecar_env: dict[str, str]
) -> None:
    assert mistake(sidecar_env, *args).endswith(line)


def test_nothing_close_gets_no_suggestion(sidecar_env: dict[str, str]) -> None:
    assert mistake(sidecar_env, "check", "--xyzzy") == "readiness-sidecar check: unrecognized arguments: --xyzzy"
    assert "did you mean" not in mistake(sidecar_env, "zzz")


def test_a_misspelt_probe_option(sidecar_env: dict[str, str]) -> None:
    line = mistake(sidecar_env, "check", "--probe", "web=http://127.0.0.1:8080/ready;timout=2s")
    assert line == (
        '--probe "web=http://127.0.0.1:8080/ready;timout=2s": unknown option "timout" '
        "(options: timeout, period, failure, success, delay, required, header); did you mean timeout?"
    )


@pytest.mark.parametrize(
    ("container", "field", "meant"),
    [
        (
            "    readinessProbe: {tcpSocket: {port: 8080}, periodSecond: 5}",
            "readinessProbe.periodSecond",
            "periodSeconds",
        ),
        ("    readinessProbe: {httpGet: {prot: 8080}}", "readinessProbe.httpGet.prot", "port"),
        (
            "    readinessProbe: {httpGet: {port: 8080, httpHeaders: [{nme: Host, value: a}]}}",
            "readinessProbe.httpGet.httpHeaders[0].nme",
            "name",
        ),
        ("    readinesProbe: {tcpSocket: {port: 8080}}", "readinesProbe", "readinessProbe"),
    ],
)
def test_a_misspelt_manifest_field(
    container: str, field: str, meant: str, tmp_path: Path, sidecar_env: dict[str, str]
) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(POD.format(container=container))
    line = mistake(sidecar_env, "check", "-f", str(path))
    assert line == f'{path}: Pod/web: container "app": {field}: unknown field; did you mean {meant}?'


def test_a_misspelt_containers_file_field(tmp_path: Path, sidecar_env: dict[str, str]) -> None:
    path = tmp_path / "containers.yaml"
    path.write_text("containers:\n- name: db\n  requird: false\n  readinessProbe: {tcpSocket: {port: 5432}}\n")
    line = mistake(sidecar_env, "check", "-f", str(path))
    assert line == f'{path}: container "db": requird: unknown field; did you mean required?'
