"""The command line: the only code that sees argparse, stdin, stdout or signals.

Each command turns flags and env vars into typed values (a SidecarConfig, RunSettings,
InjectOptions) and hands them to the library. Every user mistake is one line on stderr
and exit code 2, never a traceback.

    main(["check", "--probe", "web=http://127.0.0.1:8080/healthz"])  # 0 ready, 1 not, 2 bad input
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from sidecar.cli.help_text import EXIT_CONFIG_ERROR, EXIT_INTERRUPTED
from sidecar.cli.parser import build_parser
from sidecar.errors import ConfigError

# grpc reads this when it is first imported. Its fork handlers print warnings whenever an
# exec probe spawns a child, and exec probes exec() at once, so they buy nothing. Set here,
# at the entry point, so every command that can run exec and grpc probes together
# (`run`, `check`) gets it.
_GRPC_FORK_SUPPORT_ENV = "GRPC_ENABLE_FORK_SUPPORT"


def _cmd_check(args: argparse.Namespace) -> int:
    from sidecar.cli.check import check_command

    return check_command(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from sidecar.cli.run import run_command

    return run_command(args)


def _cmd_inject(args: argparse.Namespace) -> int:
    from sidecar.cli.manifests import inject_command

    return inject_command(args)


def _cmd_lint(args: argparse.Namespace) -> int:
    from sidecar.cli.manifests import lint_command

    return lint_command(args)


def _cmd_webhook(args: argparse.Namespace) -> int:
    from sidecar.cli.webhook import webhook_command

    return webhook_command(args)


def _cmd_completion(args: argparse.Namespace) -> int:
    from sidecar.cli.completion import completion_command

    return completion_command(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": _cmd_check,
    "run": _cmd_run,
    "inject": _cmd_inject,
    "lint": _cmd_lint,
    "webhook": _cmd_webhook,
    "completion": _cmd_completion,
}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(_GRPC_FORK_SUPPORT_ENV, "false")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
