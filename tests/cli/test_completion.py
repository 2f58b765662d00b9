"""`completion bash|zsh|fish`: scripts shtab generates from the parser, tried in a real bash.

A completion function is called by bash with COMP_WORDS/COMP_CWORD set and answers in
COMPREPLY (bash(1), "Programmable Completion"); the test calls the generated function so,
as bash itself would on <TAB>.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar.cli import COMMANDS
from tests.conftest import require_peer, sidecar_cmd

# The function shtab names after the program, and registers with `complete -F`.
BASH_FUNCTION = "_shtab_readiness_sidecar"


def script(env: dict[str, str], shell: str) -> str:
    done = subprocess.run(sidecar_cmd("completion", shell), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import REPO

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    path = tmp_path_factory.mktemp("completion") / "readiness-sidecar.bash"
    path.write_text(script(env, "bash"))
    return path


def complete(bash_script: Path, *words: str) -> list[str]:
    """What bash offers on <TAB> after `words` (the last one is the word being completed)."""
    program = (
        f'source "{bash_script}"\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        f'{BASH_FUNCTION} readiness-sidecar "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program, "bash", "readiness-sidecar", *words], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return sorted(line for line in done.stdout.splitlines() if line)


def test_the_bash_script_is_valid_bash_and_registers_the_program(bash_script: Path) -> None:
    subprocess.run(["bash", "-n", str(bash_script)], check=True, timeout=30)
    text = bash_script.read_text()
    assert f"complete -o bashdefault -F {BASH_FUNCTION} readiness-sidecar" in text


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("li",), ["lint"]),
        (("",), sorted(COMMANDS)),
        (("check", "--all"), ["--all-containers"]),
        (("check", "-o", ""), ["json", "text", "yaml"]),
        (("lint", "--format", "s"), ["sarif"]),
        (("run", "--log-format", ""), ["json", "text"]),  # a run setting's choices, from its metavar
        (("check", "--probe-host", "p"), ["pod-ip"]),
        (("completion", ""), ["bash", "fish", "zsh"]),
    ],
)
def test_tab_completes_commands_flags_and_choices(
    bash_script: Path, words: tuple[str, ...], offered: list[str]
) -> None:
    assert complete(bash_script, *words) == offered


def test_files_complete_as_paths(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text("")
    assert complete(bash_script, "check", "-f", f"{tmp_path}/po") == [f"{tmp_path}/pod.yaml"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str, sidecar_env: dict[str, str], tmp_path: Path) -> None:
    text = script(sidecar_env, shell)
    for command in COMMANDS:
        assert command in text
    if shutil.which(shell) is None:
        require_peer(f"{shell} is not installed (apt-get install {shell})")
    path = tmp_path / f"readiness-sidecar.{shell}"
    path.write_text(text)
    subprocess.run([shell, "-n", str(path)], check=True, timeout=30)


def test_fish_completes_commands_and_choices(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    # fish's `complete -C LINE` prints what <TAB> would offer after LINE, one "value<TAB>description" a line.
    if shutil.which("fish") is None:
        require_peer("fish is not installed (apt-get install fish)")
    path = tmp_path / "readiness-sidecar.fish"
    path.write_text(script(sidecar_env, "fish"))

    def offered(line: str) -> list[str]:
        done = subprocess.run(
            ["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return sorted(entry.split("\t")[0] for entry in done.stdout.splitlines())

    assert offered("readiness-sidecar li") == ["lint"]
    assert offered("readiness-sidecar check -o ") == ["json", "text", "yaml"]
    assert offered("readiness-sidecar check --all") == ["--all-containers"]
