"""`readiness-sidecar lint` in CI, through the real command: lines, SARIF, --fail-on,
the lint-ignore annotation, the kubelet-aware rules, JSON input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sidecar import __version__
from sidecar.contract import LINT_IGNORE_ANNOTATION
from sidecar.k8s.lint_rules import RULES
from tests.conftest import DATA, REPO, run_cli

LINT_DATA = DATA / "lint"
POSITIONS = LINT_DATA / "positions.yaml"
KUBELET_RULES = LINT_DATA / "kubelet-rules.yaml"



def lint_json(path: Path, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    done = run_cli("lint", "--format", "json", "-f", str(path), *args, env=env)
    assert done.returncode in (0, 1), done.stderr
    findings: list[dict[str, Any]] = json.loads(done.stdout)["findings"]
    return findings


def keyed(findings: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    return {(f["object"], f["container"], f["rule"]) for f in findings}


# -- positions ---------------------------------------------------------------------------


def test_text_lines_carry_the_line_and_severity_across_documents_and_comments(sidecar_env: dict[str, str]) -> None:
    done = run_cli("lint", "-f", str(POSITIONS), env=sidecar_env)
    assert done.returncode == 1
    source = str(POSITIONS)
    assert done.stdout.splitlines() == [
        # The `port: grpc` line of the first document.
        f'{source}:22: error: Deployment/web: container "web": grpc-named-port: readinessProbe.grpc.port:'
        ' named port "grpc"; grpc takes a port number only',
        # After `---`, a comment and a blank line: the typo's own line.
        f'{source}:42: error: Pod/two: container "second": unknown-probe-field: livenessProbe.periodSecond:'
        " unknown field; did you mean periodSeconds?",
        # Inside a List: the template's `containers` key.
        f"{source}:56: warning: Deployment/bare: no-readiness-probe: spec.template.spec.containers: no container"
        " has a readinessProbe; the kubelet counts each one ready as soon as it starts, so the pod gets traffic"
        " before the app can serve it (inject gives a container with ports a TCP check in the sidecar)",
    ]
    assert done.stderr == "2 error(s), 1 warning(s)\n"
    lines = POSITIONS.read_text().splitlines()
    assert lines[22 - 1].strip() == "port: grpc"
    assert lines[42 - 1].strip() == "periodSecond: 5"
    assert lines[56 - 1].strip() == "containers:"


def test_json_output_has_the_line_too(sidecar_env: dict[str, str]) -> None:
    findings = lint_json(POSITIONS, sidecar_env)
    assert [(f["line"], f["rule"], f["severity"]) for f in findings] == [
        (22, "grpc-named-port", "error"),
        (42, "unknown-probe-field", "error"),
        (56, "no-readiness-probe", "warning"),
    ]


def test_json_input_has_no_positions(sidecar_env: dict[str, str]) -> None:
    pod = list(yaml.safe_load_all(POSITIONS.read_text()))[1]
    text = run_cli("lint", env=sidecar_env, stdin=json.dumps(pod, indent=2))
    assert text.returncode == 1
    assert text.stdout == (
        '<stdin>: error: Pod/two: container "second": unknown-probe-field: livenessProbe.periodSecond: unknown field;'
        " did you mean periodSeconds?\n"
    )
    as_json = run_cli("lint", "--format", "json", env=sidecar_env, stdin=json.dumps(pod))
    (finding,) = json.loads(as_json.stdout)["findings"]
    assert finding["line"] is None and finding["rule"] == "unknown-probe-field"
    sarif = run_cli("lint", "--format", "sarif", env=sidecar_env, stdin=json.dumps(pod))
    (result,) = json.loads(sarif.stdout)["runs"][0]["results"]
    assert "region" not in result["locations"][0]["physicalLocation"]


# -- SARIF -------------------------------------------------------------------------------

# The parts of the SARIF 2.1.0 schema a code-scanning upload needs from us, written out by
# hand (the OASIS schema is not vendored): required fields, their types, the levels.
SARIF_SUBSET = {
    "type": "object",
    "required": ["version", "$schema", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "pattern": "^https://"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["tool", "results"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name", "version", "rules"],
                                "properties": {
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "shortDescription", "help", "defaultConfiguration"],
                                            "properties": {
                                                "shortDescription": {
                                                    "type": "object",
                                                    "required": ["text"],
                                                    "properties": {"text": {"type": "string", "minLength": 1}},
                                                },
                                                "help": {
                                                    "type": "object",
                                                    "required": ["text"],
                                                    "properties": {"text": {"type": "string", "minLength": 1}},
                                                },
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {"level": {"enum": ["error", "warning"]}},
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ruleId", "ruleIndex", "level", "message", "locations"],
                            "properties": {
                                "ruleIndex": {"type": "integer", "minimum": 0},
                                "level": {"enum": ["error", "warning"]},
                                "message": {"type": "object", "required": ["text"]},
                                "locations": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["physicalLocation"],
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "required": ["artifactLocation"],
                                                "properties": {
                                                    "artifactLocation": {"type": "object", "required": ["uri"]},
                                                    "region": {
                                                        "type": "object",
                                                        "required": ["startLine"],
                                                        "properties": {"startLine": {"type": "integer", "minimum": 1}},
                                                    },
                                                },
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_sarif_log_field_by_field(sidecar_env: dict[str, str]) -> None:
    done = run_cli("lint", "--format", "sarif", "-f", str(POSITIONS), env=sidecar_env)
    assert done.returncode == 1, "the format does not change the exit code"
    log = json.loads(done.stdout)
    jsonschema.validate(log, SARIF_SUBSET)
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("readiness-sidecar", __version__)
    assert "informationUri" not in driver, "no invented web address"
    rules = driver["rules"]
    assert [rule["id"] for rule in rules] == [rule.id for rule in RULES]
    for rule, expected in zip(rules, RULES, strict=True):
        assert rule["shortDescription"] == {"text": expected.summary}
        assert rule["defaultConfiguration"] == {"level": expected.severity}
        assert rule["help"]["text"].endswith(f"docs/lint.md#{expected.id}") and "helpUri" not in rule
    # Each help text's anchor is a section of docs/lint.md (GitHub's anchor of "### `rule-id`").
    sections = {
        line[len("### `") : -1]
        for line in (REPO / "docs" / "lint.md").read_text().splitlines()
        if line.startswith("### `")
    }
    assert {rule["id"] for rule in rules} <= sections

    results = run["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("grpc-named-port", "error"),
        ("unknown-probe-field", "error"),
        ("no-readiness-probe", "warning"),
    ]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        (location,) = result["locations"]
        assert location["physicalLocation"]["artifactLocation"] == {"uri": str(POSITIONS)}
    assert [r["locations"][0]["physicalLocation"]["region"] for r in results] == [
        {"startLine": 22},
        {"startLine": 42},
        {"startLine": 56},
    ]
    assert results[0]["message"]["text"] == (
        'Deployment/web: container "web": readinessProbe.grpc.port: named port "grpc"; grpc takes a port number only'
    )
    assert results[2]["message"]["text"].startswith("Deployment/bare: spec.template.spec.containers: no container")


def test_sarif_with_no_findings_still_lists_the_rules(sidecar_env: dict[str, str]) -> None:
    empty = run_cli("lint", "--format", "sarif", env=sidecar_env, stdin="apiVersion: v1\nkind: ConfigMap\n")
    assert empty.returncode == 0
    run = json.loads(empty.stdout)["runs"][0]
    assert run["results"] == [] and len(run["tool"]["driver"]["rules"]) == len(RULES)


# -- --fail-on ---------------------------------------------------------------------------


def test_fail_on_decides_which_severity_fails(sidecar_env: dict[str, str]) -> None:
    warnings_only = str(LINT_DATA / "custom-prestop.yaml")
    with_errors = str(LINT_DATA / "grpc-named-port.yaml")
    assert run_cli("lint", "-f", warnings_only, env=sidecar_env).returncode == 0, "default: errors only"
    assert run_cli("lint", "-f", warnings_only, "--fail-on", "error", env=sidecar_env).returncode == 0
    assert run_cli("lint", "-f", warnings_only, "--fail-on", "warning", env=sidecar_env).returncode == 1
    assert run_cli("lint", "-f", with_errors, "--fail-on", "warning", env=sidecar_env).returncode == 1
    assert run_cli("lint", "-f", with_errors, "--fail-on", "error", env=sidecar_env).returncode == 1
    clean = run_cli("lint", "--fail-on", "warning", env=sidecar_env, stdin="apiVersion: v1\nkind: ConfigMap\n")
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")
    bad = run_cli("lint", "--fail-on", "info", "-f", warnings_only, env=sidecar_env)
    assert bad.returncode == 2 and "--fail-on" in bad.stderr and bad.stdout == ""
    unreadable = run_cli(
        "lint", "--fail-on", "warning", "--format", "sarif", "-f", "/nonexistent.yaml", env=sidecar_env
    )
    assert (unreadable.returncode, unreadable.stdout) == (2, "")
    assert unreadable.stderr == "/nonexistent.yaml: cannot read: No such file or directory\n"


# -- readiness-sidecar.io/lint-ignore ------------------------------------------------------

IGNORED = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    {LINT_IGNORE_ANNOTATION}: "custom-prestop, grpc-named-port"
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations:
        {LINT_IGNORE_ANNOTATION}: no-readiness-probes
    spec:
      containers:
        - name: web
          image: x
          ports: [{{name: grpc, containerPort: 9090}}]
          readinessProbe: {{grpc: {{port: grpc}}}}
          lifecycle: {{preStop: {{exec: {{command: [sleep, "5"]}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: other}}
spec:
  containers:
    - name: web
      image: x
      ports: [{{name: grpc, containerPort: 9090}}]
      readinessProbe: {{grpc: {{port: grpc}}}}
"""


def test_lint_ignore_drops_the_listed_rules_for_that_template_only(sidecar_env: dict[str, str]) -> None:
    done = run_cli("lint", env=sidecar_env, stdin=IGNORED)
    assert done.stdout.splitlines() == [
        # A typo is reported where it is, and ignores nothing.
        f"<stdin>:13: warning: Deployment/web: unknown-lint-ignore: spec.template.metadata.annotations"
        f'[{LINT_IGNORE_ANNOTATION}]: "no-readiness-probes" is not a lint rule (docs/lint.md lists them);'
        " it ignores nothing",
        # The other object has no annotation: its grpc-named-port stays.
        '<stdin>:30: error: Pod/other: container "web": grpc-named-port: readinessProbe.grpc.port:'
        ' named port "grpc"; grpc takes a port number only',
    ]
    assert done.returncode == 1
    alone = run_cli("lint", env=sidecar_env, stdin=IGNORED.split("---")[0])
    assert alone.returncode == 0, "the ignored error no longer fails lint"
    assert [line.split(": ")[3] for line in alone.stdout.splitlines()] == ["unknown-lint-ignore"]


def test_inject_honours_lint_ignore(sidecar_env: dict[str, str]) -> None:
    slow = (LINT_DATA / "startup-over-deadline.yaml").read_text()  # a Knative error: inject refuses it
    refused = run_cli("inject", env=sidecar_env, stdin=slow)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "startup-exceeds-progress-deadline" in refused.stderr and "refusing" in refused.stderr
    annotation = "serving.knative.dev/progress-deadline"
    ignored = slow.replace(
        f"{annotation}:", f"{LINT_IGNORE_ANNOTATION}: startup-exceeds-progress-deadline\n        {annotation}:"
    )
    assert ignored != slow
    done = run_cli("inject", env=sidecar_env, stdin=ignored)
    assert done.returncode == 0, done.stderr
    assert "startup-exceeds-progress-deadline" not in done.stderr
    assert "name: readiness-sidecar" in done.stdout


# -- the kubelet-aware rules ---------------------------------------------------------------


def test_kubelet_rules_fire_where_they_should_and_nowhere_else(sidecar_env: dict[str, str]) -> None:
    findings = lint_json(KUBELET_RULES, sidecar_env)
    assert keyed(findings) == {
        # No container has a readinessProbe. Not: one-probe (one has), Job/CronJob and a Pod
        # with restartPolicy Never (they complete), Knative (TCP by default).
        ("Deployment/no-probe", None, "no-readiness-probe"),
        # 60 and 120 s without a startupProbe. Not: exactly 30 s (edge), or with a startupProbe (started).
        ("Deployment/long-delays", "app", "initial-delay-use-startup-probe"),
        # Kubelet mode: 15 s < 60 s. Not: even (30 s = 30 s), nor in aggressive mode (2 s) the same probes.
        ("Deployment/kubelet-windows", "hasty", "liveness-window-shorter-than-readiness"),
        # Aggressive mode: 1 x 1 s < 2 s; a 1 s period is also at its 1 s timeout.
        ("Deployment/aggressive-windows", "twitchy", "liveness-window-shorter-than-readiness"),
        ("Deployment/aggressive-windows", "twitchy", "timeout-not-below-period"),
    }
    assert {f["severity"] for f in findings} == {"warning"}
    delays = [f["message"] for f in findings if f["rule"] == "initial-delay-use-startup-probe"]
    assert [message.split(":")[0] for message in delays] == [
        "readinessProbe.initialDelaySeconds",
        "livenessProbe.initialDelaySeconds",
    ]
    (hasty,) = [f for f in findings if f["container"] == "hasty"]
    assert hasty["message"].startswith(
        "livenessProbe: fails after 15 s (failureThreshold 3 x periodSeconds 5),"
        " readiness after 60 s (failureThreshold 6 x periodSeconds 10)"
    )
    (twitchy,) = [
        f for f in findings if f["rule"] == "liveness-window-shorter-than-readiness" and f["container"] == "twitchy"
    ]
    assert "readiness after 2 s (aggressive mode in the sidecar)" in twitchy["message"]


def test_kubelet_rules_hold_after_inject(sidecar_env: dict[str, str]) -> None:
    """inject's output: the sidecar has a readinessProbe and watches the app's port (no more
    no-readiness-probe), and the readiness it took over keeps its delay and window."""
    injected = run_cli("inject", "-f", str(KUBELET_RULES), env=sidecar_env)
    assert injected.returncode == 0, injected.stderr
    done = run_cli("lint", "--format", "json", env=sidecar_env, stdin=injected.stdout)
    assert keyed(json.loads(done.stdout)["findings"]) == {
        ("Deployment/long-delays", "app", "initial-delay-use-startup-probe"),
        ("Deployment/kubelet-windows", "hasty", "liveness-window-shorter-than-readiness"),
        ("Deployment/aggressive-windows", "twitchy", "liveness-window-shorter-than-readiness"),
        ("Deployment/aggressive-windows", "twitchy", "timeout-not-below-period"),
    }


@pytest.mark.parametrize(
    "rule", ["no-readiness-probe", "initial-delay-use-startup-probe", "liveness-window-shorter-than-readiness"]
)
def test_each_kubelet_rule_can_be_ignored(rule: str, sidecar_env: dict[str, str]) -> None:
    text = KUBELET_RULES.read_text().replace(
        "    metadata: {labels: {app: a}}\n",
        f"    metadata: {{labels: {{app: a}}, annotations: {{{LINT_IGNORE_ANNOTATION}: {rule}}}}}\n",
    )
    text = text.replace(
        "      annotations: {readiness-sidecar.io/probe-mode: kubelet}\n",
        f"      annotations: {{readiness-sidecar.io/probe-mode: kubelet, {LINT_IGNORE_ANNOTATION}: {rule}}}\n",
    )
    done = run_cli("lint", "--format", "json", env=sidecar_env, stdin=text)
    rules = {f["rule"] for f in json.loads(done.stdout)["findings"]}
    assert rule not in rules
    assert rules, "the other rules still fire"


def test_an_injected_config_in_double_quotes_is_read_like_any_other(sidecar_env: dict[str, str]) -> None:
    """Found by the manifest fuzzing: the round-trip reader gives a double-quoted value as a
    ScalarString, which libyaml refused with a TypeError."""
    injected = run_cli("inject", "-f", str(LINT_DATA / "custom-prestop.yaml"), env=sidecar_env).stdout
    lines = injected.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.strip() == "- name: READINESS_SIDECAR_CONFIG"]
    key, _, value = lines[at + 1].partition("value: ")
    # The same config as YAML (not JSON, which is read without libyaml), double-quoted.
    config = yaml.safe_dump(json.loads(yaml.safe_load(value)), default_flow_style=True, width=1000).strip()
    lines[at + 1] = f"{key}value: {json.dumps(config)}"
    done = run_cli("lint", "--format", "json", env=sidecar_env, stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert keyed(json.loads(done.stdout)["findings"]) == {("Deployment/api", "api", "custom-prestop")}


SLOW_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow}
spec:
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      containers:
        - name: app
          image: x
          readinessProbe: {httpGet: {path: /ready, port: 8080}}
          # A long start on purpose (Istio gives its proxy 600 tries): 300 x (2 s + 1 s) >= the 600 s default.
          startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 2, failureThreshold: 300}
"""


def test_a_deployment_past_its_progress_deadline_is_warned_about_not_refused(sidecar_env: dict[str, str]) -> None:
    # Past progressDeadlineSeconds a Deployment only gets Progressing=False and keeps
    # rolling out (kubernetes pkg/controller/deployment/progress.go): a warning.
    lint = run_cli("lint", env=sidecar_env, stdin=SLOW_DEPLOYMENT)
    assert lint.returncode == 0
    (line,) = lint.stdout.splitlines()
    assert line.startswith('<stdin>:14: warning: Deployment/slow: container "app": startup-exceeds-progress-deadline:')
    assert run_cli("lint", "--fail-on", "warning", env=sidecar_env, stdin=SLOW_DEPLOYMENT).returncode == 1
    inject = run_cli("inject", env=sidecar_env, stdin=SLOW_DEPLOYMENT)
    assert inject.returncode == 0, inject.stderr
    assert "startup-exceeds-progress-deadline" in inject.stderr and "refusing" not in inject.stderr
    # The same probe on a Knative Service: its revision fails at the deadline, an error.
    knative = run_cli("lint", env=sidecar_env, stdin=(LINT_DATA / "startup-over-deadline.yaml").read_text())
    assert knative.returncode == 1 and ": error: Service/slow-start:" in knative.stdout


# -- the pod's own settings ----------------------------------------------------------------------

ANNOTATED = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {readiness-sidecar.io/health-port: "9550", readiness-sidecar.io/exec-probes: sidecar}
    spec:
      containers:
      - name: app
        image: x
        ports: [{containerPort: 8080}]
        readinessProbe: {exec: {command: [redis-cli, ping]}}
        livenessProbe: {httpGet: {path: /r, port: 8080}}
"""


def test_lint_reads_the_pods_own_health_port_and_exec_mode(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "web.yaml"
    source.write_text(ANNOTATED)
    done = run_cli("inject", "--rewrite-liveness", "-f", str(source), env=sidecar_env)
    assert done.returncode == 0, done.stderr
    injected = tmp_path / "web.injected.yaml"
    injected.write_text(done.stdout)

    def rules(path: Path) -> list[tuple[str, str]]:
        result = run_cli("lint", "--format", "json", "-f", str(path), env=sidecar_env)
        return [(f["container"], f["rule"]) for f in json.loads(result.stdout)["findings"]]

    # exec-probes: sidecar from the annotation, not the flag: the command is checked against the image.
    before = rules(source)
    assert before == [("app", "liveness-not-covered"), ("app", "exec-not-in-sidecar-image")], before
    # The drain hook and the /live route on 9550 are inject's own: no custom-prestop, and the liveness
    # check behind /live/app is judged as before (exec readiness still does not cover it).
    assert rules(injected) == [("app", "liveness-not-covered")]


def test_lint_reports_a_bad_settings_annotation_and_refuses_a_file_without_objects(
    sidecar_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "web.yaml"
    source.write_text(ANNOTATED.replace('"9550"', '"http"'))
    done = run_cli("lint", "-f", str(source), env=sidecar_env)
    assert done.returncode == 1
    assert "error: Deployment/web: invalid-manifest: annotations[readiness-sidecar.io/health-port]:" in done.stdout
    # inject takes it as bad input, as for any unreadable file: one line, exit 2, --force or not.
    forced = run_cli("inject", "--force", "-f", str(source), env=sidecar_env)
    assert forced.returncode == 2 and forced.stdout == "" and len(forced.stderr.splitlines()) == 1
    text = tmp_path / "notes.txt"
    text.write_text("just some words\n")
    plain = run_cli("lint", "-f", str(text), env=sidecar_env)
    assert plain.returncode == 2 and plain.stdout == "" and len(plain.stderr.splitlines()) == 1, plain.stderr
