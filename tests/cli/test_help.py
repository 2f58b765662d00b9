"""`--help` a person can use: every command says what it does, shows examples, its exit codes
and the env vars it reads; metavars name what a value looks like. Each help is a real subprocess."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from sidecar.cli import COMMANDS
from sidecar.cli.parser import build_parser
from sidecar.runtime.settings import RunSettings, env_name
from tests.conftest import sidecar_cmd

SECTIONS = ("examples:", "exit codes:", "environment (a flag wins over its env var):")


def help_text(env: dict[str, str], *command: str) -> str:
    done = subprocess.run(sidecar_cmd(*command, "--help"), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def section(text: str, title: str) -> list[str]:
    """The indented lines under `title`, up to the next title or the end."""
    lines = text.split(f"\n{title}\n", 1)[1].splitlines()
    body = []
    for line in lines:
        if line and not line.startswith(" "):
            break
        body.append(line)
    return [line for line in body if line.strip()]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_describes_itself_with_examples_exit_codes_and_env(
    command: str, sidecar_env: dict[str, str]
) -> None:
    text = help_text(sidecar_env, command)
    usage, rest = text.split("\n\n", 1)
    description = rest.split("\noptions:\n")[0]
    assert usage.startswith(f"usage: readiness-sidecar {command}")
    assert len(description.split()) >= 15, f"{command} has no description: {description!r}"
    # Its first line is one sentence: what zsh and fish completion show beside the command.
    first = description.splitlines()[0]
    assert first.endswith(".") and first.count(". ") == 0, first
    for title in SECTIONS:
        assert f"\n{title}\n" in text, f"{command} --help has no {title!r}"
    # The sections are in this order, after the flags.
    assert text.index("options:") < text.index(SECTIONS[0]) < text.index(SECTIONS[1]) < text.index(SECTIONS[2])
    examples = [line for line in section(text, "examples:") if "readiness-sidecar" in line and "#" not in line[:4]]
    assert len(examples) >= 2, section(text, "examples:")
    codes = {int(line.split()[0]): line for line in section(text, "exit codes:")}
    assert 0 in codes and 2 in codes, codes
    env = section(text, SECTIONS[2])
    assert env, f"{command}: the environment section is empty (it says 'none' when nothing is read)"


def test_run_lists_every_setting_env_var_and_check_its_own(sidecar_env: dict[str, str]) -> None:
    run_env = {line.split()[0] for line in section(help_text(sidecar_env, "run"), SECTIONS[2])}
    expected = {env_name(setting) for setting in RunSettings.fields()}
    expected |= {"READINESS_SIDECAR_CONFIG_FILE", "READINESS_SIDECAR_CONFIG", "SERVING_READINESS_PROBE", "POD_IP"}
    assert run_env == expected
    check_env = {line.split()[0] for line in section(help_text(sidecar_env, "check"), SECTIONS[2])}
    assert check_env == {
        "READINESS_SIDECAR_CONFIG_FILE",
        "READINESS_SIDECAR_PROBE_HOST",
        "READINESS_SIDECAR_CONFIG",
        "SERVING_READINESS_PROBE",
        "POD_IP",
    }
    lint = section(help_text(sidecar_env, "lint"), SECTIONS[2])
    assert lint == ["  none"]


def test_the_top_level_help_is_for_users(sidecar_env: dict[str, str]) -> None:
    text = help_text(sidecar_env)
    assert "One readiness answer for a whole pod." in text
    # Every command is listed with its one-line summary.
    listed = text.split("\ncommands:\n", 1)[1]
    for command in COMMANDS:
        assert re.search(rf"^    {command}\b", listed, re.M), command
    for title in ("examples:", "exit codes (every command):"):
        assert f"\n{title}\n" in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_metavars_name_what_a_value_looks_like(command: str, sidecar_env: dict[str, str]) -> None:
    usage = help_text(sidecar_env, command).split("\n\n")[0]
    assert "VALUE" not in usage
    if command == "check":
        assert (
            "-o {text,json,yaml}" in usage and "--wait DURATION" in usage and "--probe-host {localhost,pod-ip}" in usage
        )
    if command == "lint":
        assert "-o {text,json,yaml,sarif}" in usage
    if command == "run":
        for metavar in (
            "--health-port PORT",
            "--grpc-port PORT|off",
            "--drain-seconds DURATION",
            "--log-format {text,json}",
            "--loop {auto,uvloop,asyncio}",
            "--bind ADDRESS",
        ):
            assert metavar in usage, metavar


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_example_is_a_command_line_the_parser_takes(command: str, sidecar_env: dict[str, str]) -> None:
    # The parser itself, in-process: an example that names a flag that isn't there fails here.
    examples = [
        line for line in section(help_text(sidecar_env, command), "examples:") if not line.strip().startswith("#")
    ]
    taken = 0
    for line in examples:
        # The command itself: after a pipe or `<(`, before a pipe, a redirect or `)`.
        for found in re.finditer(r"readiness-sidecar\s+([^|>)#]*)", line):
            argv = shlex.split(found[1])
            try:
                build_parser().parse_args(argv)
            except SystemExit as exit_:
                pytest.fail(f"{command} example {found[0]!r} does not parse (exit {exit_.code})")
            taken += 1
    assert taken >= 2
