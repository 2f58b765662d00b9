"""kubectl's flag conventions: -f/--filename wherever a file is read, -o/--output wherever output
has a format; the older spellings (--config, --json, lint's --format) stay and behave identically."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DATA, sidecar_cmd

# A lint case with an error and a warning, so every output format has findings to show.
LINT_MANIFEST = DATA / "lint" / "positions.yaml"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sidecar_cmd(*args), capture_output=True, text=True, env=env, timeout=60)


def without_latency(doc: dict[str, Any]) -> dict[str, Any]:
    """check's document with the one field that differs run to run left out."""
    return {**doc, "containers": [{k: v for k, v in c.items() if k != "latency_ms"} for c in doc["containers"]]}


@pytest.fixture
def containers_file(tmp_path: Path) -> Path:
    # exec probes: no server to start, and both outcomes in one file.
    path = tmp_path / "containers.yaml"
    path.write_text(
        "containers:\n"
        "- {name: up, readinessProbe: {exec: {command: ['true']}}}\n"
        "- {name: down, readinessProbe: {exec: {command: ['false']}}}\n"
    )
    return path


@pytest.mark.parametrize("flag", ["-f", "--filename", "--config"])
def test_check_reads_the_file_by_every_spelling(flag: str, containers_file: Path, sidecar_env: dict[str, str]) -> None:
    done = cli(sidecar_env, "check", flag, str(containers_file), "-o", "json")
    assert done.returncode == 1, done.stderr
    by_name = {c["container"]: c["result"] for c in json.loads(done.stdout)["containers"]}
    assert by_name == {"up": "success", "down": "failure"}


def test_check_json_spellings_and_yaml_are_one_document(containers_file: Path, sidecar_env: dict[str, str]) -> None:
    docs = {}
    for spelling in (("--json",), ("-o", "json"), ("--output", "json"), ("--output=json",), ("-o", "yaml")):
        done = cli(sidecar_env, "check", "-f", str(containers_file), *spelling)
        assert done.returncode == 1 and done.stderr == "", done.stderr
        parsed = yaml.safe_load(done.stdout) if "yaml" in spelling else json.loads(done.stdout)
        docs[spelling] = without_latency(parsed)
    first = docs[("--json",)]
    assert first["ready"] is False and len(first["containers"]) == 2
    assert all(doc == first for doc in docs.values()), docs


def test_run_takes_the_file_as_f_filename_or_config_alike(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    answers = {
        (cli(sidecar_env, "run", flag, missing).returncode, cli(sidecar_env, "run", flag, missing).stderr)
        for flag in ("-f", "--filename", "--config")
    }
    assert answers == {(2, f"{missing}: cannot read: No such file or directory\n")}


@pytest.mark.parametrize("output", ["text", "json", "sarif", "yaml"])
def test_lint_output_and_format_are_the_same_flag(output: str, sidecar_env: dict[str, str]) -> None:
    runs = [
        cli(sidecar_env, "lint", "-f", str(LINT_MANIFEST), *flag)
        for flag in (("-o", output), ("--output", output), ("--format", output))
    ]
    assert {run.returncode for run in runs} == {1}
    assert runs[0].stdout and all(run.stdout == runs[0].stdout and run.stderr == runs[0].stderr for run in runs)


def test_lint_yaml_is_its_json_document(sidecar_env: dict[str, str]) -> None:
    as_json = json.loads(cli(sidecar_env, "lint", "-f", str(LINT_MANIFEST), "-o", "json").stdout)
    as_yaml = yaml.safe_load(cli(sidecar_env, "lint", "-f", str(LINT_MANIFEST), "-o", "yaml").stdout)
    assert as_yaml == as_json and as_json["errors"] >= 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # -q is one line of text: not JSON, not YAML.
        (("-q", "-o", "json"), "readiness-sidecar check: argument -o/--output: not allowed with argument -q/--quiet"),
        (("-q", "--json"), "readiness-sidecar check: argument --json: not allowed with argument -q/--quiet"),
        (("-o", "sarif"), "readiness-sidecar check: argument -o/--output: invalid choice: 'sarif'"),
    ],
)
def test_check_refuses_outputs_that_dont_go_together(
    args: tuple[str, ...], expected: str, containers_file: Path, sidecar_env: dict[str, str]
) -> None:
    done = cli(sidecar_env, "check", "-f", str(containers_file), *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(expected) and done.stderr.count("\n") == 1, done.stderr
