"""`readiness-sidecar lint`: the seeds' warnings and what the kubelet rejects, one finding per line."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from probes.spec import GrpcSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.documents import load_documents, read_manifest
from sidecar.config.pod_template import find_pod_specs
from sidecar.k8s.inject import InjectOptions, inject_documents, sidecar_entry
from sidecar.k8s.lint import covers, lint_documents
from sidecar.k8s.lint_rules import ERROR, RULES, RULES_BY_ID, WARNING, Finding
from tests.conftest import DATA, PEER_MANIFESTS, REPO, sidecar_cmd

LINT_DATA = DATA / "lint"


def lint_file(path: Path, exec_probes: str = "kubelet") -> list[str]:
    """The text lines of `lint -f` on a fixture: read as the CLI reads it, with positions."""
    source = f"tests/data/lint/{path.name}"
    docs = read_manifest(str(path), io.BytesIO(), round_trip=True).docs
    return [str(f) for f in lint_documents(docs, source, exec_probes=exec_probes)]


def lint_text(text: str, exec_probes: str = "kubelet") -> list[Finding]:
    return lint_documents(load_documents(text, "in.yaml"), "in.yaml", exec_probes=exec_probes)


def rules_of(text: str, exec_probes: str = "kubelet") -> list[str]:
    return [finding.rule for finding in lint_text(text, exec_probes)]


def pod(container: str, *, kind: str = "Pod") -> str:
    """A Pod (or Knative Service) with one container given as a YAML flow mapping."""
    if kind == "Knative":
        return f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: svc}}
spec: {{template: {{spec: {{containers: [{container}]}}}}}}
"""
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{container}]}}\n"


# -- the four manifests the issue names, asserted exactly ----------------------------------


def test_startup_probe_at_100_x_10s_against_a_600s_deadline_is_an_error() -> None:
    assert lint_file(LINT_DATA / "startup-over-deadline.yaml") == [
        'tests/data/lint/startup-over-deadline.yaml:21: error: Service/slow-start: container "app":'
        " startup-exceeds-progress-deadline: startupProbe: worst case 1100 s (initialDelaySeconds 0"
        " + failureThreshold 100 x (periodSeconds 10 + timeoutSeconds 1)) >= progress deadline 600 s"
        " (serving.knative.dev/progress-deadline 600s); the rollout fails before startup can succeed"
    ]


def test_liveness_without_readiness_is_a_warning() -> None:
    assert lint_file(LINT_DATA / "liveness-without-readiness.yaml") == [
        # No container has a readinessProbe: that is a finding about the template too.
        "tests/data/lint/liveness-without-readiness.yaml:13: warning: Deployment/web: no-readiness-probe:"
        " spec.template.spec.containers: no container has a readinessProbe; the kubelet counts each one ready as"
        " soon as it starts, so the pod gets traffic before the app can serve it (inject gives a container with"
        " ports a TCP check in the sidecar)",
        'tests/data/lint/liveness-without-readiness.yaml:19: warning: Deployment/web: container "web":'
        " liveness-not-covered:"
        " livenessProbe (http://127.0.0.1:8080/healthz) is not covered by readiness: the pod stays ready while it"
        " fails, until the restart breaks connections; check it in readinessProbe too",
    ]


def test_grpc_with_a_named_port_is_an_error() -> None:
    assert lint_file(LINT_DATA / "grpc-named-port.yaml") == [
        'tests/data/lint/grpc-named-port.yaml:14: error: Pod/grpc-server: container "server": grpc-named-port:'
        ' readinessProbe.grpc.port: named port "grpc"; grpc takes a port number only'
    ]


def test_a_custom_prestop_is_a_warning() -> None:
    assert lint_file(LINT_DATA / "custom-prestop.yaml") == [
        'tests/data/lint/custom-prestop.yaml:23: warning: Deployment/api: container "api": custom-prestop:'
        " lifecycle.preStop: the sidecar's drain (/wait-for-drain) replaces it; inject keeps this hook,"
        " so the container will not wait for the drain"
    ]


# -- every rule fires on its own mistake, and only there -----------------------------


RULE_CASES = {
    # Only a probe on the kubelet's schedule has a period to overrun (docs/behaviour.md#probe-modes).
    "timeout-not-below-period": pod(
        "{name: a, image: x, ports: [{containerPort: 80}],"
        " readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 2, timeoutSeconds: 2}}"
    ).replace("metadata: {name: p}", "metadata: {name: p, annotations: {readiness-sidecar.io/probe-mode: kubelet}}"),
    "success-threshold-not-one": pod(
        "{name: a, image: x, ports: [{containerPort: 80}], readinessProbe: {tcpSocket: {port: 80}},"
        " livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}}"
    ),
    "named-port-not-found": pod("{name: a, image: x, readinessProbe: {httpGet: {port: web}}}"),
    "multiple-handlers": pod(
        "{name: a, image: x, readinessProbe: {httpGet: {port: 80}, exec: {command: [/bin/true]}}}"
    ),
    "unknown-probe-field": pod("{name: a, image: x, readinessProbe: {tcpSocket: {port: 80}, periodSecond: 5}}"),
    "invalid-probe": pod("{name: a, image: x, readinessProbe: {httpGet: {port: 80, scheme: FTP}}}"),
    "invalid-manifest": "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {a: b}}\n",
    "sidecar-probe-without-port": pod(
        "{name: app, image: x, ports: [{containerPort: 8080}]},"
        " {name: side, image: y, readinessProbe: {httpGet: {path: /ready}}}",
        kind="Knative",
    ),
}


@pytest.mark.parametrize(("rule", "manifest"), RULE_CASES.items(), ids=RULE_CASES.keys())
def test_each_rule_fires_on_its_own_mistake(rule: str, manifest: str) -> None:
    assert rules_of(manifest) == [rule]


def test_specific_messages_name_the_field() -> None:
    assert [f.message for f in lint_text(RULE_CASES["unknown-probe-field"])] == [
        "readinessProbe.periodSecond: unknown field; did you mean periodSeconds?"
    ]
    assert [f.message for f in lint_text(RULE_CASES["named-port-not-found"])] == [
        'readinessProbe.httpGet.port: named port "web" not found in ports'
    ]
    assert [f.message for f in lint_text(RULE_CASES["multiple-handlers"])] == [
        "readinessProbe: has 2 handlers (httpGet, exec); use exactly one"
    ]
    (manifest_finding,) = lint_text(RULE_CASES["invalid-manifest"])
    # The loader's own message: lint and the loader walk a pod template with one walker.
    assert (manifest_finding.container, manifest_finding.message) == (
        "", "spec.containers: expected a list, got a mapping"
    )
    (duplicate,) = lint_text(pod("{name: a, image: x}, {name: a, image: y}"))
    assert (duplicate.rule, duplicate.message) == (
        "invalid-manifest",
        'spec.containers[1].name: duplicate container name "a"',
    )


def test_liveness_and_startup_probes_are_checked_too_not_only_readiness() -> None:
    manifest = pod(
        "{name: a, image: x, ports: [{containerPort: 80}], readinessProbe: {tcpSocket: {port: 80}},"
        " livenessProbe: {grpc: {port: grpc}}, startupProbe: {tcpSocket: {port: 80}, timeoutSecond: 1}}"
    )
    assert [(f.rule, f.message.split(":")[0]) for f in lint_text(manifest)] == [
        ("grpc-named-port", "livenessProbe.grpc.port"),
        ("unknown-probe-field", "startupProbe.timeoutSecond"),
    ]


def test_exec_not_on_the_sidecar_image_warns_only_when_exec_probes_go_to_the_sidecar() -> None:
    redis = pod(
        "{name: r, image: redis, ports: [{containerPort: 6379}], readinessProbe: {exec: {command: [redis-cli, ping]}}}"
    )
    assert rules_of(redis) == []
    assert rules_of(redis, "sidecar") == ["exec-not-in-sidecar-image"]
    shipped = pod("{name: r, image: x, readinessProbe: {exec: {command: [cat, /tmp/ready]}}}")
    assert rules_of(shipped, "sidecar") == []
    on_volume = pod(
        "{name: r, image: x, volumeMounts: [{name: tools, mountPath: /tools}],"
        " readinessProbe: {exec: {command: [/tools/check]}}}"
    )
    assert rules_of(on_volume, "sidecar") == []
    elsewhere = pod("{name: r, image: x, readinessProbe: {exec: {command: [/opt/app/check]}}}")
    assert rules_of(elsewhere, "sidecar") == ["exec-not-in-sidecar-image"]


def test_progress_deadline_is_knatives_default_or_a_deployments_and_absent_for_a_pod() -> None:
    slow = (
        "readinessProbe: {tcpSocket: {port: 80}},"
        " startupProbe: {tcpSocket: {port: 80}, periodSeconds: 60, failureThreshold: 10}"  # 610 s
    )
    knative = pod("{image: x, ports: [{containerPort: 80}], " + slow + "}", kind="Knative")
    assert rules_of(knative) == ["startup-exceeds-progress-deadline"]
    (missed,) = lint_text(knative)
    assert "(Knative's default)" in missed.message
    # A revision that misses its progress deadline fails (Knative's revision reconciler).
    assert missed.severity == ERROR and missed.message.endswith("the rollout fails before startup can succeed")
    longer = knative.replace("metadata: {name: svc}",
                             "metadata: {name: svc, annotations: {serving.knative.dev/progress-deadline: 15m}}")
    assert rules_of(longer) == []
    plain_pod = pod("{name: a, image: x, ports: [{containerPort: 80}], " + slow + "}")
    assert rules_of(plain_pod) == [], "a bare Pod has no progress deadline"
    deployment = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d}}
spec:
  progressDeadlineSeconds: 900
  selector: {{matchLabels: {{a: b}}}}
  template:
    metadata: {{labels: {{a: b}}}}
    spec: {{containers: [{{name: a, image: x, ports: [{{containerPort: 80}}], {slow}}}]}}
"""
    assert rules_of(deployment) == []
    (late,) = lint_text(deployment.replace("900", "600"))
    assert late.rule == "startup-exceeds-progress-deadline"
    # A Deployment past progressDeadlineSeconds only gets Progressing=False (reason
    # ProgressDeadlineExceeded) and goes on rolling out: kubernetes
    # pkg/controller/deployment/progress.go. So a warning, not an error.
    assert late.severity == WARNING and "Progressing=False" in late.message


def test_bad_progress_deadline_annotation_is_reported_not_raised() -> None:
    manifest = pod("{image: x}", kind="Knative").replace(
        "metadata: {name: svc}", "metadata: {name: svc, annotations: {serving.knative.dev/progress-deadline: soon}}"
    )
    (finding,) = lint_text(manifest)
    assert finding.rule == "invalid-manifest"
    assert finding.message.startswith("annotations[serving.knative.dev/progress-deadline]: bad duration")


def test_knative_sidecar_readiness_must_name_a_port_but_the_serving_container_need_not() -> None:
    serving_no_port = pod("{image: x, ports: [{containerPort: 8080}], readinessProbe: {httpGet: {path: /ready}}}",
                          kind="Knative")
    assert rules_of(serving_no_port) == []
    plain = pod("{name: a, image: x, readinessProbe: {httpGet: {path: /ready}}}")
    assert rules_of(plain) == ["invalid-probe"], "outside Knative nobody fills the port in"


def test_covers_is_the_same_url_or_a_tcp_check_of_the_same_port() -> None:
    tcp = TcpSocketSpec(port=8080)
    assert covers(HttpGetSpec(port=8080, path="/health"), tcp)
    assert covers(GrpcSpec(port=8080), tcp)
    assert not covers(tcp, HttpGetSpec(port=8080, path="/health")), "a listening socket says nothing of HTTP"
    assert covers(HttpGetSpec(port=8080, path="/h", headers=(("X", "1"),)), HttpGetSpec(port=8080, path="/h"))
    assert not covers(HttpGetSpec(port=8080, path="/ready"), HttpGetSpec(port=8080, path="/live"))
    assert not covers(None, tcp)


def test_knatives_default_readiness_covers_a_tcp_liveness_on_the_serving_port() -> None:
    manifest = pod("{image: x, ports: [{containerPort: 8080}], livenessProbe: {tcpSocket: {port: 8080}}}",
                   kind="Knative")
    assert rules_of(manifest) == []


def annotated_pod(annotations: str, container: str) -> str:
    """A Pod with annotations (a YAML flow mapping) and one container."""
    metadata = f"{{name: p, annotations: {annotations}}}"
    return f"apiVersion: v1\nkind: Pod\nmetadata: {metadata}\nspec: {{containers: [{container}]}}\n"


@pytest.mark.parametrize("probe_host", ["pod-ip", "localhost"])
def test_under_pod_ip_a_check_without_a_host_and_one_of_127_0_0_1_are_two_checks(probe_host: str) -> None:
    # With pod-ip a probe without a host goes to the pod IP and an explicit host is kept, as
    # the kubelet's (kubernetes pkg/kubelet/prober/prober.go, runProbe): 127.0.0.1:8080 and the
    # pod IP's 8080 are two sockets, and an app may listen on one of them only.
    annotations = f"{{readiness-sidecar.io/probe-host: {probe_host}}}"
    readiness = "readinessProbe: {httpGet: {port: 8080, path: /ready}}"
    explicit = annotated_pod(
        annotations,
        f"{{name: app, image: x, {readiness}, livenessProbe: {{tcpSocket: {{port: 8080, host: 127.0.0.1}}}}}}",
    )
    assert rules_of(explicit) == (["liveness-not-covered"] if probe_host == "pod-ip" else [])
    neither = annotated_pod(
        annotations, f"{{name: app, image: x, {readiness}, livenessProbe: {{tcpSocket: {{port: 8080}}}}}}"
    )
    assert rules_of(neither) == []
    other_path = annotated_pod(
        annotations, f"{{name: app, image: x, {readiness}, livenessProbe: {{httpGet: {{port: 8080, path: /live}}}}}}"
    )
    (finding,) = lint_text(other_path)
    where = "<pod IP>" if probe_host == "pod-ip" else "127.0.0.1"
    assert f"livenessProbe (http://{where}:8080/live) is not covered by readiness" in finding.message


# -- real manifests, and what inject made of them ------------------------------------


REAL = sorted(PEER_MANIFESTS.glob("*.yaml")) + sorted(DATA.glob("knative-seed-service-*.yaml"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_injected_output_has_no_findings_the_input_did_not_have(path: Path) -> None:
    docs = load_documents(path.read_text(), path.name)
    before = [(f.container, f.rule) for f in lint_documents(docs, path.name)]
    for options in (InjectOptions(), InjectOptions(native_sidecar=True, rewrite_liveness=True)):
        injected, _ = inject_documents(docs, path.name, options)
        after = [(f.container, f.rule) for f in lint_documents(injected, path.name)]
        # The one finding inject takes away: a pod without a readinessProbe that it injected
        # (it had a port to watch) is ready only when the sidecar's own readinessProbe says so.
        sidecar_added = any(sidecar_entry(ref.pod_spec) for doc in injected for ref in find_pod_specs(doc, path.name))
        expected = [f for f in before if not (sidecar_added and f[1] == "no-readiness-probe")]
        assert after == expected, "the drain hook, the sidecar and /live/<c> are not findings"


def test_real_peer_manifests_draw_only_the_missing_readiness_warnings() -> None:
    findings = [f for path in REAL for f in lint_documents(load_documents(path.read_text(), path.name), path.name)]
    assert {f.rule for f in findings} == {"liveness-not-covered", "no-readiness-probe"}
    # The upstream liveness examples: each pod has a livenessProbe and no readinessProbe.
    for rule in ("liveness-not-covered", "no-readiness-probe"):
        assert {f.obj for f in findings if f.rule == rule} == {
            "Pod/liveness-exec", "Pod/etcd-with-grpc", "Pod/liveness-http", "Pod/pod-with-http-healthcheck",
        }, rule
    assert {f.severity for f in findings} == {WARNING}


# -- docs and the command line -------------------------------------------------------


def test_docs_lint_md_documents_every_rule_with_its_severity() -> None:
    text = (REPO / "docs" / "lint.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z-]+)` \| (error|warning) \|", text, re.M))
    assert documented == {rule.id: rule.severity for rule in RULES}
    assert set(RULES_BY_ID) == set(documented)
    assert {ERROR, WARNING} == set(documented.values())


def run_lint(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(sidecar_cmd("lint", *args), input=stdin, capture_output=True, text=True, env=env, timeout=30)


def test_cli_exit_codes_1_on_errors_0_on_warnings_2_when_unreadable(sidecar_env: dict[str, str]) -> None:
    errors = run_lint("-f", str(LINT_DATA / "grpc-named-port.yaml"), env=sidecar_env)
    assert errors.returncode == 1
    assert errors.stdout.count("\n") == 1 and "grpc-named-port" in errors.stdout
    assert errors.stderr == "1 error(s), 0 warning(s)\n"
    warnings = run_lint(stdin=(LINT_DATA / "custom-prestop.yaml").read_text(), env=sidecar_env)
    assert warnings.returncode == 0
    assert warnings.stdout.startswith('<stdin>:23: warning: Deployment/api: container "api": custom-prestop: ')
    unreadable = run_lint("-f", "/nonexistent/x.yaml", env=sidecar_env)
    assert (unreadable.returncode, unreadable.stdout) == (2, "")
    assert unreadable.stderr == "/nonexistent/x.yaml: cannot read: No such file or directory\n"


def test_cli_json_format(sidecar_env: dict[str, str]) -> None:
    result = run_lint("--format", "json", "-f", str(LINT_DATA / "startup-over-deadline.yaml"), env=sidecar_env)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert (doc["errors"], doc["warnings"]) == (1, 0)
    (finding,) = doc["findings"]
    assert {k: finding[k] for k in ("object", "container", "rule", "severity")} == {
        "object": "Service/slow-start",
        "container": "app",
        "rule": "startup-exceeds-progress-deadline",
        "severity": "error",
    }
