"""`readiness-sidecar completion bash|zsh|fish`: a completion script, generated from the parser.

shtab writes it from the same parser `main` uses, so a new command or flag completes
without anyone editing a script. shtab is imported here only: no other command pays for it.

    source <(readiness-sidecar completion bash)
"""

from __future__ import annotations

import argparse
import re
import sys

from sidecar.cli.parser import FILE_METAVAR, actions_of, build_parser

# A metavar that lists a setting's choices: {text,json}.
_NAMED_CHOICES = re.compile(r"\{([\w.-]+(?:,[\w.-]+)+)\}")
# Paths whose metavar isn't FILE: the webhook's cert and key, and the file `run` writes its ports to.
_PATH_DESTS = frozenset({"cert", "key", "ports_file"})


def completion_command(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0


def completion_script(shell: str) -> str:
    """The script for `shell`, with every argument that names a file completing paths."""
    import shtab

    parser = build_parser()
    for command in parser.command_parsers.values():
        for action in actions_of(command):
            if action.metavar == FILE_METAVAR or action.dest in _PATH_DESTS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]  # shtab reads this attribute
            elif (
                action.choices is None
                and isinstance(action.metavar, str)
                and (named := _NAMED_CHOICES.fullmatch(action.metavar))
            ):
                # `run` settings validate their own choices (flag or env); offered, not enforced:
                # this parser only writes the script.
                action.choices = named[1].split(",")
    script: str = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"
