"""What `--help` tells a person beyond the flags: what each command is for, its examples,
its exit codes and the env vars it reads (found in its flags' help, so never behind them).

    sub.epilog = epilog("check", actions_of(sub))
    # examples: ...  exit codes: 0 every required container is ready ...  environment: ...
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable

from sidecar.contract import CONFIG_ENV, KNATIVE_PROBE_ENV, POD_IP_ENV

EXIT_CONFIG_ERROR = 2  # bad input, as argparse's own usage errors
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
PROG = "readiness-sidecar"
DESCRIPTION = """\
One readiness answer for a whole pod.

readiness-sidecar takes over every container's readiness probe (httpGet, tcpSocket,
exec, grpc), runs them in parallel and serves one aggregated answer: /ready over HTTP,
gRPC Health and Prometheus metrics, for the kubelet, load balancers, docker-compose and
meshes. `check` runs the probes once and exits; `inject`, `lint` and `webhook` put the
sidecar into Kubernetes manifests."""
TOP_EPILOG = f"""\
examples:
  # watch four demo apps, one of each probe type, at http://127.0.0.1:8550/status
  {PROG} run --demo

  # is everything ready? (exit 0 yes, 1 no)
  {PROG} check --probe web=http://127.0.0.1:8080/healthz --probe db=tcp://127.0.0.1:5432

  # add the sidecar to a Deployment
  {PROG} inject -f deploy.yaml | kubectl apply -f -

exit codes (every command):
  0    done: ready, injected, no findings
  1    the answer is no: not ready (check), lint findings (lint, inject)
  2    bad input: a flag, file, manifest or env var; one line on stderr, nothing on stdout
  130  interrupted (Ctrl-C)

`{PROG} COMMAND --help` gives each command's examples, exit codes and env vars.
Shell completion: `{PROG} completion bash|zsh|fish`."""

# Env vars a command reads that belong to no flag, with what they hold.
_CONFIG_ENV_HELP = {
    CONFIG_ENV: "the containers file's text, JSON or YAML (what inject writes), below -f",
    KNATIVE_PROBE_ENV: "Knative queue-proxy's probe JSON, read unchanged, below everything else",
    POD_IP_ENV: "the pod's IP, for --probe-host pod-ip (downward API fieldRef status.podIP)",
}
# `env NAME` in a flag's help: the env var that flag's default comes from.
_FLAG_ENV = re.compile(r"\benv ([A-Z][A-Z0-9_]*)")

# Each command: its line in the top-level list, and the description atop its own --help.
COMMAND_HELP = {
    "check": (
        "probe every container once, in parallel; exit 0 if ready",
        """\
Probe every container once, in parallel, and say whether the pod is ready.

Prints a table and a one-line summary, and exits 0 if every required container is
ready, 1 if not. Light enough for a Docker HEALTHCHECK or a kubelet exec probe; with
--wait, it re-checks until ready, as `kubectl wait` does, for init containers and compose.""",
    ),
    "run": (
        "run the sidecar: probes, /ready, gRPC health, /metrics",
        """\
Run the sidecar: probe every container and serve one aggregated answer.

Probes aggressively until ready, and serves the aggregate on the health port (/ready,
/status, /healthz), gRPC Health and /metrics. On SIGTERM it answers not-ready for
--drain-seconds, then exits.""",
    ),
    "inject": (
        "add the sidecar to manifests (writes to stdout)",
        """\
Add the sidecar to manifests, as `istioctl kube-inject` does.

Every pod template (Pod, Deployment, ..., Knative Service) gets the sidecar, and each
container's readiness probe moves into it. Lints first and refuses on errors. Comments
and key order survive; the result goes to stdout only once the whole input is done.""",
    ),
    "lint": (
        "report probe problems in manifests; exit 1 on errors",
        """\
Report probe problems in manifests.

Misspelt fields, named ports that aren't declared, liveness checks readiness doesn't
cover, startup probes past the progress deadline, timeouts at or over the period, and
more. Each finding names file, line, object, container and rule; docs/lint.md
describes every rule.""",
    ),
    "webhook": (
        "serve the mutating admission webhook over TLS",
        """\
Serve the mutating admission webhook over TLS.

Every pod Kubernetes admits gets the sidecar, exactly as `inject` would add it. The
cert and key are reloaded when they change.""",
    ),
    "completion": (
        "print a bash, zsh or fish completion script",
        """\
Print a bash, zsh or fish completion script.

Generated from these commands and flags, so it completes every one of them. Load it as
the examples show.""",
    ),
}
EXAMPLES = {
    "check": f"""\
  # every probe once, in parallel: a table, then one summary line
  {PROG} check --probe web=http://127.0.0.1:8080/healthz --probe db=tcp://127.0.0.1:5432

  # the containers of a manifest, as JSON
  {PROG} check -f pod.yaml -o json

  # a Docker HEALTHCHECK (one line of output), and an init container that waits for a database
  HEALTHCHECK CMD ["{PROG}", "check", "-q", "--probe", "self=http://127.0.0.1:8550/healthz"]
  {PROG} check --wait 2m --probe db=tcp://db:5432""",
    "run": f"""\
  # watch the containers of a pod: /ready on 8550, gRPC health on 8551, /metrics on 8552
  {PROG} run -f pod.yaml

  # Knative's probe env var, unchanged; a free health port, written to stdout once bound
  SERVING_READINESS_PROBE='{{"tcpSocket":{{"port":8080}}}}' {PROG} run --health-port 0 --ports-file -

  # the built-in demo: four apps, one of each probe type
  {PROG} run --demo""",
    "inject": f"""\
  # add the sidecar to a Deployment and apply it
  {PROG} inject -f deploy.yaml | kubectl apply -f -

  # what would change, as a diff
  {PROG} inject -f deploy.yaml --diff

  # from stdin, as a native sidecar, with your own image
  kubectl get deploy web -o yaml | {PROG} inject --native-sidecar --image registry.example/rs:0.1.0""",
    "lint": f"""\
  # findings as lines: file:line: severity: object: rule: message
  {PROG} lint -f deploy.yaml

  # for code scanning in CI, failing on warnings too
  {PROG} lint -f deploy.yaml -o sarif --fail-on warning > lint.sarif

  # a rendered chart, as JSON
  helm template . | {PROG} lint -o json""",
    "webhook": f"""\
  # serve the mutating webhook on 8443 with a cert-manager certificate
  {PROG} webhook --cert /certs/tls.crt --key /certs/tls.key

  # inject a pinned image, as native sidecars
  {PROG} webhook --cert tls.crt --key tls.key --image registry.example/rs:0.1.0 --native-sidecar""",
    "completion": f"""\
  # bash, for this shell, and for every new one
  source <({PROG} completion bash)
  {PROG} completion bash > ~/.local/share/bash-completion/completions/{PROG}

  # zsh and fish
  {PROG} completion zsh > "${{fpath[1]}}/_{PROG}"
  {PROG} completion fish > ~/.config/fish/completions/{PROG}.fish""",
}
EXIT_CODES = {
    "check": {
        0: "every required container is ready",
        1: "a required container is not ready (with --wait: still not ready when DURATION ends)",
        2: "bad input: a flag, --probe, file or env var (one line on stderr)",
        EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    },
    "run": {
        0: "stopped by SIGTERM or SIGINT, after the drain",
        2: "bad input, or a port that can't be had (one line on stderr)",
    },
    "inject": {
        0: "injected (or, with --diff, the diff printed)",
        1: "lint found errors, so nothing was injected (--force injects anyway)",
        2: "bad input: a flag, an unreadable file or manifest, a bad annotation (one line on stderr)",
    },
    "lint": {
        0: "no finding at or above --fail-on",
        1: "a finding at or above --fail-on",
        2: "bad input: an unreadable file or manifest, no objects in it (one line on stderr)",
    },
    "webhook": {
        0: "stopped by SIGTERM or SIGINT",
        2: "bad input: cert or key files that don't load, a port that can't be had (one line on stderr)",
    },
    "completion": {
        0: "the script is on stdout",
        2: "a shell other than bash, zsh or fish",
    },
}


def epilog(command: str, actions: Iterable[argparse.Action]) -> str:
    """`command`'s examples, exit codes and env vars, for the end of its --help."""
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES[command].items())
    env = environment(actions)
    width = max((len(name) for name in env), default=0)
    env_lines = "\n".join(f"  {name:<{width}}  {what}" for name, what in env.items()) or "  none"
    return (
        f"examples:\n{EXAMPLES[command]}\n\nexit codes:\n{codes}\n\n"
        f"environment (a flag wins over its env var):\n{env_lines}"
    )


def environment(actions: Iterable[argparse.Action]) -> dict[str, str]:
    """The env vars a command reads: each flag's (named `env X` in its help) and, if it takes
    a config file (dest `config`), the config sources'."""
    env: dict[str, str] = {}
    takes_config = False
    for action in actions:
        takes_config |= action.dest == "config"
        for name in _FLAG_ENV.findall(action.help or ""):
            if name not in _CONFIG_ENV_HELP:
                env[name] = "/".join(action.option_strings)
    if takes_config:
        env.update(_CONFIG_ENV_HELP)
    return env
