"""The argument parser of every command, and the typed values built from its flags.

    args = build_parser().parse_args(["inject", "-f", "deploy.yaml"])
    inject_options(args)  # InjectOptions(image=None, ...): None is DEFAULT_IMAGE, unless READINESS_SIDECAR_IMAGE
"""

from __future__ import annotations

import argparse
import os
import sys

from sidecar import __version__
from sidecar.contract import (
    CONFIG_FILE_ENV,
    DEFAULT_DRAIN_SECONDS,
    IMAGE_ANNOTATION,
    IMAGE_ENV,
    WEBHOOK_ENV_PREFIX,
    WEBHOOK_METRICS_PORT,
    WEBHOOK_PORT,
)
from sidecar.k8s.lint_rules import ERROR, SEVERITIES
from sidecar.k8s.options import DEFAULT_IMAGE, EXEC_PROBE_MODES, InjectOptions

EXIT_CONFIG_ERROR = 2
DESCRIPTION = (
    "One aggregated readiness answer for every container in a pod: runs every container's "
    "readiness probe in parallel and serves the result to the kubelet, load balancers and meshes."
)

# The `run` settings `check` takes as well: the ones that change what a probe reaches.
CHECK_RUN_SETTINGS = ("probe_host",)
# One line of --help per `run` setting; the flag and env var names come from RunSettings.
RUN_SETTING_HELP = {
    "health_port": "HTTP health port: /ready, /status, /healthz, /wait-for-drain (default 8550; 0 = free port)",
    "grpc_port": "gRPC health port (default 8551; 'off' disables it)",
    "metrics_port": "Prometheus /metrics port (default 8552; 'off' disables it)",
    "bind": "address to listen on; default * is every interface, IPv6 and IPv4 on one socket "
    "(0.0.0.0 without IPv6); 0.0.0.0 is IPv4 only, :: IPv6 only",
    "probe_host": "where probes that name no host go: localhost (default, 127.0.0.1) or pod-ip "
    "(env POD_IP, from the downward API's status.podIP), as the kubelet's probes go to the pod IP",
    "drain_seconds": f"after SIGTERM, answer not-ready for this long, then exit (default {DEFAULT_DRAIN_SECONDS:g}s)",
    "aggressive_interval": "probe interval while not ready in aggressive mode (default 3ms)",
    "aggressive_timeout": "cap on one attempt's timeout while not ready (default 100ms)",
    "aggressive_window": "how long to probe at the aggressive interval before widening (default 10s)",
    "aggressive_max_interval": "the widest interval a slow starter is probed at (default 100ms)",
    "steady_period": "probe period once ready, in aggressive mode (default 1s)",
    "log_format": "text or json (default text)",
    "log_level": "debug, info, warning or error: the least severe line written (default info)",
    "loop": "event loop: auto (uvloop if installed), uvloop or asyncio (default auto)",
}

# The webhook's own flags (beside inject's): metavar and help. Each also reads READINESS_SIDECAR_WEBHOOK_<FLAG>.
WEBHOOK_FLAGS = {
    "--bind": ("ADDRESS", "address to listen on (default 0.0.0.0)"),
    "--port": ("PORT", f"HTTPS port for POST /mutate and GET /healthz (default {WEBHOOK_PORT}; 0 = free port)"),
    "--cert": ("FILE", "TLS certificate file, reloaded when it changes (required)"),
    "--key": ("FILE", "TLS key file, reloaded when it changes (required)"),
    "--metrics-port": ("PORT|off", f"plain-HTTP Prometheus /metrics port (default {WEBHOOK_METRICS_PORT})"),
    "--log-format": ("text|json", "log lines as text or JSON (default text)"),
    "--log-level": ("debug|info|warning|error", "the least severe level logged (default info)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(EXIT_CONFIG_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="readiness-sidecar", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"readiness-sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = commands.add_parser("check", help="run every probe once, in parallel, and print a table")
    _add_config_sources(check)
    # check runs in the pod too (a Docker HEALTHCHECK, an exec probe): it probes where run would.
    _add_run_settings(check, only=CHECK_RUN_SETTINGS)
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument("--all-containers", action="store_true",
                       help="also report containers marked not required")

    run = commands.add_parser("run", help="run the sidecar: schedulers, health, gRPC and metrics servers")
    _add_config_sources(run)
    _add_run_settings(run)
    run.add_argument("--ports-file", metavar="PATH", default=None,
                     help='once listening, write the bound ports as one JSON line to PATH ("-" for stdout): '
                     '{"health": 8550, "grpc": 8551, "metrics": null}')
    run.add_argument("--demo", action="store_true",
                     help="start built-in demo targets of every probe type and watch them")

    inject = commands.add_parser("inject", help="add the sidecar to manifests (writes to stdout)")
    _add_manifest_input(inject)
    _add_injection_options(inject)
    inject.add_argument("--force", action="store_true", help="inject even if lint finds errors")
    inject.add_argument("--diff", action="store_true",
                        help="print a unified diff of the input and the injected manifest instead of the manifest; "
                        "exit 0 whether or not anything changed (1 for lint errors, 2 for bad input)")

    lint = commands.add_parser("lint", help="report probe problems in manifests; exit 1 on errors")
    _add_manifest_input(lint)
    lint.add_argument("--format", choices=("text", "json", "sarif"), default="text",
                      help="text lines (default), JSON, or SARIF 2.1.0 for code-scanning UIs")
    lint.add_argument("--fail-on", choices=SEVERITIES, default=ERROR,
                      help="exit 1 when a finding is this severe or more (default error)")
    _add_exec_probes(lint, "lint as if inject ran with this --exec-probes")

    webhook = commands.add_parser("webhook", help="serve the mutating admission webhook over TLS")
    _add_injection_options(webhook)
    # Every webhook flag also reads READINESS_SIDECAR_WEBHOOK_<FLAG>; None here means "not given", so the
    # env var or the default applies (cli/webhook.py resolves and validates them).
    webhook.set_defaults(exec_probes=None)
    webhook.epilog = (
        f"The inject flags read env too: {WEBHOOK_ENV_PREFIX}IMAGE (then {IMAGE_ENV}), "
        f"{WEBHOOK_ENV_PREFIX}EXEC_PROBES, {WEBHOOK_ENV_PREFIX}NATIVE_SIDECAR and "
        f"{WEBHOOK_ENV_PREFIX}REWRITE_LIVENESS (true or false). A flag beats its env var; "
        "a bad value is one line naming it, exit 2."
    )
    for flag, (metavar, help_text) in WEBHOOK_FLAGS.items():
        env = WEBHOOK_ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
        webhook.add_argument(flag, default=None, metavar=metavar, help=f"{help_text} [env {env}]")
    return parser


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


def _add_run_settings(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    from sidecar.runtime.settings import RunSettings, env_name, flag_name

    for setting in RunSettings.fields():
        if only is None or setting in only:
            parser.add_argument(
                flag_name(setting), dest=setting, default=None, metavar="VALUE",
                help=f"{RUN_SETTING_HELP[setting]} [env {env_name(setting)}]",
            )


def raw_run_settings(args: argparse.Namespace) -> tuple[dict[str, str | None], dict[str, str]]:
    """The run settings this command has flags for, as text: each flag, else its
    READINESS_SIDECAR_<FLAG> env var; and where each came from, for RunSettings.from_raw."""
    from sidecar.runtime.settings import RunSettings, env_name, flag_name

    raw: dict[str, str | None] = {}
    origin: dict[str, str] = {}
    for setting in RunSettings.fields():
        if not hasattr(args, setting):
            continue  # a flag this command does not take (check has only CHECK_RUN_SETTINGS)
        flag_value = getattr(args, setting)
        if flag_value is not None:
            raw[setting], origin[setting] = flag_value, flag_name(setting)
        elif (env_value := os.environ.get(env_name(setting))) is not None:
            raw[setting], origin[setting] = env_value, env_name(setting)
    return raw, origin


def _add_manifest_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", default="-", metavar="FILE", help="manifest file, or - for stdin")


def _add_exec_probes(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--exec-probes", choices=EXEC_PROBE_MODES, default="kubelet", help=help_text)


def _add_injection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=None,
                        help=f"the sidecar image to inject (env {IMAGE_ENV}; a pod's {IMAGE_ANNOTATION} annotation "
                        f"wins; default {DEFAULT_IMAGE}, the name of a local build)")
    _add_exec_probes(parser, "leave exec probes with the kubelet (default) or move them into the sidecar; "
                     "a pod's readiness-sidecar.io/exec-probes annotation wins")
    parser.add_argument("--native-sidecar", action="store_true",
                        help="inject as an init container with restartPolicy: Always (Kubernetes 1.29+)")
    parser.add_argument("--rewrite-liveness", action="store_true",
                        help="route httpGet/tcpSocket/grpc liveness and startup probes through the sidecar's"
                        " /live/<container> and /startup/<container>")


def inject_options(args: argparse.Namespace) -> InjectOptions:
    """The InjectOptions of `inject` and `webhook`, from their shared flags (and READINESS_SIDECAR_IMAGE)."""
    return InjectOptions(
        image=args.image or os.environ.get(IMAGE_ENV) or None,
        exec_probes=args.exec_probes,
        native_sidecar=args.native_sidecar,
        rewrite_liveness=args.rewrite_liveness,
    )
