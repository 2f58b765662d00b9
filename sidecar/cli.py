"""The command line: it only turns flags and env vars into config, then hands over.

Every user mistake is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from sidecar import __version__
from sidecar.errors import ConfigError

EXIT_CONFIG_ERROR = 2
CONFIG_FILE_ENV = "READINESS_SIDECAR_CONFIG_FILE"  # READINESS_SIDECAR_CONFIG holds the config itself


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(EXIT_CONFIG_ERROR)


def _add_config_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe", action="append", default=[], metavar="NAME=SPEC",
        help="a probe: http://host:port/path, https://..., tcp://host:port, grpc://host:port[/service] "
        "or exec:COMMAND; options after ';' (timeout=2s;period=0;failure=3;success=1;delay=0). Repeatable.",
    )
    parser.add_argument(
        "-f", "--config", metavar="FILE", default=os.environ.get(CONFIG_FILE_ENV) or None,
        help=f"containers file or manifest with a pod template (env {CONFIG_FILE_ENV})",
    )


def _add_run_settings(parser: argparse.ArgumentParser) -> None:
    from sidecar.settings import RunSettings, env_name, flag_name

    helps = {
        "health_port": "HTTP health port: /ready, /status, /healthz, /wait-for-drain (default 8550; 0 = free port)",
        "grpc_port": "gRPC health port (default 8551; 'off' disables it)",
        "metrics_port": "Prometheus /metrics port (default 8552; 'off' disables it)",
        "bind": "address to listen on (default 0.0.0.0)",
        "drain_seconds": "after SIGTERM, answer not-ready for this long, then exit (default 30s)",
        "aggressive_interval": "probe interval while not ready in aggressive mode (default 5ms)",
        "aggressive_timeout": "cap on one attempt's timeout while not ready (default 100ms)",
        "aggressive_window": "how long to probe at the aggressive interval before widening (default 10s)",
        "aggressive_max_interval": "the widest interval a slow starter is probed at (default 100ms)",
        "steady_period": "probe period once ready, in aggressive mode (default 1s)",
        "log_format": "text or json (default text)",
    }
    for field in RunSettings.fields():
        parser.add_argument(
            flag_name(field), dest=field, default=None, metavar="VALUE",
            help=f"{helps[field]} [env {env_name(field)}]",
        )
    parser.add_argument("--demo", action="store_true",
                        help="start built-in demo targets of every probe type and watch them")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="readiness-sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"readiness-sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = commands.add_parser("check", help="run every probe once, in parallel, and print a table")
    _add_config_sources(check)
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument("--all-containers", action="store_true",
                       help="also report containers marked not required")

    run = commands.add_parser("run", help="run the sidecar: schedulers, health, gRPC and metrics servers")
    _add_config_sources(run)
    _add_run_settings(run)

    inject = commands.add_parser("inject", help="add the sidecar to manifests (writes to stdout)")
    _add_manifest_input(inject)
    _add_injection_options(inject)
    inject.add_argument("--force", action="store_true", help="inject even if lint finds errors")

    lint = commands.add_parser("lint", help="report probe problems in manifests; exit 1 on errors")
    _add_manifest_input(lint)
    lint.add_argument("--format", choices=("text", "json"), default="text")
    lint.add_argument("--exec-probes", choices=("kubelet", "sidecar"), default="kubelet",
                      help="lint as if inject ran with this --exec-probes")
    lint.add_argument("--image", default=None, help="the sidecar image, for the exec-on-PATH check")

    webhook = commands.add_parser("webhook", help="serve the mutating admission webhook over TLS")
    _add_injection_options(webhook)
    webhook.add_argument("--bind", default="0.0.0.0")
    webhook.add_argument("--port", type=int, default=8443)
    webhook.add_argument("--cert", required=True, help="TLS certificate file (reloaded when it changes)")
    webhook.add_argument("--key", required=True, help="TLS key file (reloaded when it changes)")
    return parser


def _add_manifest_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", default="-", metavar="FILE", help="manifest file, or - for stdin")


def _add_injection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=None, help="the sidecar image to inject")
    parser.add_argument("--exec-probes", choices=("kubelet", "sidecar"), default="kubelet",
                        help="leave exec probes with the kubelet (default) or move them into the sidecar")
    parser.add_argument("--native-sidecar", action="store_true",
                        help="inject as an init container with restartPolicy: Always (Kubernetes 1.29+)")
    parser.add_argument("--rewrite-liveness", action="store_true",
                        help="route httpGet/tcpSocket liveness probes through the sidecar's /live/<container>")


def _cmd_check(args: argparse.Namespace) -> int:
    from sidecar import check
    from sidecar.config import load_config

    config = load_config(probe_flags=args.probe, config_file=args.config)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows = asyncio.run(check.check_once(config, all_containers=args.all_containers))
    print(check.render_json(rows) if args.json else check.render_table(rows))
    return check.exit_code(rows)


def _run_settings(args: argparse.Namespace) -> object:
    from sidecar.settings import RunSettings, env_name, flag_name

    raw: dict[str, str | None] = {}
    origin: dict[str, str] = {}
    for field in RunSettings.fields():
        flag_value = getattr(args, field)
        if flag_value is not None:
            raw[field], origin[field] = flag_value, flag_name(field)
        elif (env_value := os.environ.get(env_name(field))) is not None:
            raw[field], origin[field] = env_value, env_name(field)
    if getattr(args, "demo", False) and "drain_seconds" not in raw:
        raw["drain_seconds"] = "1s"  # the demo is stopped with Ctrl-C, not by a kubelet
    return RunSettings.from_raw(raw, origin=origin)


def _cmd_run(args: argparse.Namespace) -> int:
    from sidecar.app import run_sidecar

    settings = _run_settings(args)
    return run_sidecar(args, settings)  # type: ignore[arg-type]


def _cmd_inject(args: argparse.Namespace) -> int:
    from sidecar.inject import run_inject_command

    return run_inject_command(args)


def _cmd_lint(args: argparse.Namespace) -> int:
    from sidecar.lint import run_lint_command

    return run_lint_command(args)


def _cmd_webhook(args: argparse.Namespace) -> int:
    from sidecar.webhook import run_webhook_command

    return run_webhook_command(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": _cmd_check,
    "run": _cmd_run,
    "inject": _cmd_inject,
    "lint": _cmd_lint,
    "webhook": _cmd_webhook,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130
