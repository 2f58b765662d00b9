"""The argument parser of every command, and the typed values built from its flags.

    args = build_parser().parse_args(["inject", "-f", "deploy.yaml"])
    inject_options(args)  # InjectOptions(image=None, ...): None is DEFAULT_IMAGE, unless READINESS_SIDECAR_IMAGE
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from sidecar import __version__
from sidecar.cli.help_text import COMMAND_HELP, DESCRIPTION, EXIT_CONFIG_ERROR, PROG, TOP_EPILOG, epilog
from sidecar.contract import (
    CONFIG_FILE_ENV,
    DEFAULT_DRAIN_SECONDS,
    IMAGE_ANNOTATION,
    IMAGE_ENV,
    PROBE_HOST_CHOICES,
    WEBHOOK_ENV_PREFIX,
    WEBHOOK_METRICS_PORT,
    WEBHOOK_PORT,
)
from sidecar.errors import did_you_mean
from sidecar.k8s.lint_rules import ERROR, SEVERITIES
from sidecar.k8s.options import DEFAULT_IMAGE, EXEC_PROBE_MODES, InjectOptions

# Output formats: -o/--output of every command whose output has a format.
OUTPUT_FORMATS = ("text", "json", "yaml")
LINT_OUTPUT_FORMATS = (*OUTPUT_FORMATS, "sarif")  # SARIF is for code-scanning UIs: lint only
COMPLETION_SHELLS = ("bash", "zsh", "fish")
# The metavar of every argument that names a file to read: what `completion` completes as paths.
FILE_METAVAR = "FILE"
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


# The inject flags of `webhook` read env too (cli/webhook.py); said once in its --help.
WEBHOOK_INJECT_ENV = (
    f"The inject flags read env too: {WEBHOOK_ENV_PREFIX}IMAGE (then {IMAGE_ENV}), "
    f"{WEBHOOK_ENV_PREFIX}EXEC_PROBES, {WEBHOOK_ENV_PREFIX}NATIVE_SIDECAR and "
    f"{WEBHOOK_ENV_PREFIX}REWRITE_LIVENESS (true or false). A flag beats its env var; "
    "a bad value is one line naming it, exit 2."
)

# The metavar of each `run` setting: what its value looks like (one line of help says the rest).
RUN_SETTING_METAVAR = {
    "health_port": "PORT",
    "grpc_port": "PORT|off",
    "metrics_port": "PORT|off",
    "bind": "ADDRESS",
    "drain_seconds": "DURATION",
    "aggressive_interval": "DURATION",
    "aggressive_timeout": "DURATION",
    "aggressive_window": "DURATION",
    "aggressive_max_interval": "DURATION",
    "steady_period": "DURATION",
}
_INVALID_CHOICE = re.compile(r"invalid choice: (?P<value>'.*?'|\S+) \(choose from (?P<choices>.*)\)$")
_UNRECOGNIZED = "unrecognized arguments: "

class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line, end with a "did you mean" when a choice or
    option is close to what was typed, and exit 2. Descriptions and epilogs keep their lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.command_parsers: dict[str, _Parser] = {}

    def error(self, message: str) -> NoReturn:
        if found := _INVALID_CHOICE.search(message):
            choices = [choice.strip().strip("'") for choice in found["choices"].split(",")]
            message += did_you_mean(found["value"].strip("'"), choices)
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(EXIT_CONFIG_ERROR)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse's, but an unknown option is reported by its command's parser, which
        knows the options it might have meant."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            parser = self.command_parsers.get(getattr(parsed, "command", None) or "", self)
            # An unknown option may stand before the command too (--verison check): both parsers' options.
            known = {*_long_options(self), *_long_options(parser)}
            parser.error(_UNRECOGNIZED + " ".join(unknown) + _option_hint(unknown, sorted(known)))
        return parsed


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in actions_of(parser) for option in action.option_strings if option.startswith("--")]


def _option_hint(unknown: Sequence[str], known: Sequence[str]) -> str:
    """The "; did you mean --probe?" for the first unknown `--option[=value]` close to a known one."""
    for word in unknown:
        if word.startswith("--") and (hint := did_you_mean(word.partition("=")[0], known)):
            return hint
    return ""


def actions_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of `parser`: the list argparse's own help formatter (and shtab) reads."""
    return list(parser._actions)


def build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=TOP_EPILOG)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True,
                                     parser_class=_Parser)

    def command(name: str) -> _Parser:
        summary, description = COMMAND_HELP[name]
        sub: _Parser = commands.add_parser(name, help=summary, description=description)
        parser.command_parsers[name] = sub
        return sub

    check = command("check")
    _add_config_sources(check)
    # check runs in the pod too (a Docker HEALTHCHECK, an exec probe): it probes where run would.
    _add_run_settings(check, only=CHECK_RUN_SETTINGS)
    output = check.add_mutually_exclusive_group()
    output.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text",
                        help="text: the table and a summary line (default); json or yaml: every container's result")
    output.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")
    output.add_argument("-q", "--quiet", action="store_true",
                        help="print only the summary line (for a Docker HEALTHCHECK's log)")
    check.add_argument("--wait", metavar="DURATION", default=None,
                       help="re-check until every required container is ready or DURATION (e.g. 30s, 2m) has passed")
    check.add_argument("--all-containers", action="store_true",
                       help="also show containers marked not required (they never decide the exit code)")

    run = command("run")
    _add_config_sources(run)
    _add_run_settings(run)
    run.add_argument("--ports-file", metavar="PATH", default=None,
                     help='once listening, write the bound ports as one JSON line to PATH ("-" for stdout): '
                     '{"health": 8550, "grpc": 8551, "metrics": null}')
    run.add_argument("--demo", action="store_true",
                     help="start built-in demo targets of every probe type and watch them")

    inject = command("inject")
    _add_manifest_input(inject)
    _add_injection_options(inject)
    inject.add_argument("--force", action="store_true", help="inject even if lint finds errors")
    inject.add_argument("--diff", action="store_true",
                        help="print a unified diff of the input and the injected manifest instead of the manifest; "
                        "exit 0 whether or not anything changed (1 for lint errors, 2 for bad input)")

    lint = command("lint")
    _add_manifest_input(lint)
    lint.add_argument("-o", "--output", "--format", choices=LINT_OUTPUT_FORMATS, default="text",
                      help="text lines (default), json, yaml, or sarif (SARIF 2.1.0, for code-scanning UIs)")
    lint.add_argument("--fail-on", choices=SEVERITIES, default=ERROR,
                      help="exit 1 when a finding is this severe or more (default error)")
    _add_exec_probes(lint, "lint as if inject ran with this --exec-probes")

    webhook = command("webhook")
    _add_injection_options(webhook)
    # Every webhook flag also reads READINESS_SIDECAR_WEBHOOK_<FLAG>; None here means "not given", so the
    # env var or the default applies (cli/webhook.py resolves and validates them).
    webhook.set_defaults(exec_probes=None)
    for flag, (metavar, help_text) in WEBHOOK_FLAGS.items():
        env = WEBHOOK_ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
        webhook.add_argument(flag, default=None, metavar=metavar, help=f"{help_text} [env {env}]")

    completion = command("completion")
    completion.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell to complete in")

    for name, sub in parser.command_parsers.items():
        sub.epilog = epilog(name, actions_of(sub))
    webhook.epilog = f"{webhook.epilog}\n\n{WEBHOOK_INJECT_ENV}"
    return parser


def _add_config_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe", action="append", default=[], metavar="NAME=SPEC",
        help="a probe: http://host:port/path, https://..., tcp://host:port, grpc://host:port[/service] "
        "or exec:COMMAND; options after ';', as in tcp://:5432;timeout=2s;period=0 (timeout, period, failure, "
        "success, delay, required, header). Repeatable.",
    )
    parser.add_argument(
        "-f", "--filename", "--config", dest="config", metavar=FILE_METAVAR,
        default=os.environ.get(CONFIG_FILE_ENV) or None,
        help=f"containers file or manifest with a pod template, - for stdin; --config is the same flag "
        f"(env {CONFIG_FILE_ENV})",
    )


def _add_run_settings(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    from sidecar.runtime.settings import RunSettings, env_name, flag_name

    for setting in RunSettings.fields():
        if only is None or setting in only:
            parser.add_argument(
                flag_name(setting), dest=setting, default=None, metavar=_run_setting_metavar(setting),
                help=f"{RUN_SETTING_HELP[setting]} [env {env_name(setting)}]",
            )


def _run_setting_metavar(setting: str) -> str:
    from sidecar.runtime.settings import LOG_FORMATS, LOOP_CHOICES

    choices = {"probe_host": PROBE_HOST_CHOICES, "log_format": LOG_FORMATS, "loop": LOOP_CHOICES}.get(setting)
    if choices:
        return "{" + ",".join(choices) + "}"
    # A setting not listed: the last word of its name (log_level: LEVEL).
    return RUN_SETTING_METAVAR.get(setting, setting.split("_")[-1].upper())


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
    parser.add_argument("-f", "--filename", default="-", metavar=FILE_METAVAR,
                        help="manifest file, YAML or JSON, or - for stdin (default)")


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
