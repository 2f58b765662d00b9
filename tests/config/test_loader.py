"""load_config: real manifests, Knative's env format, precedence, and one-line errors."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.spec import ExecSpec, GrpcSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.documents import load_documents
from sidecar.config.loader import load_config
from sidecar.config.pod_template import find_pod_specs, is_knative
from sidecar.contract import NOT_REQUIRED_ANNOTATION
from sidecar.errors import ConfigError
from sidecar.model import ContainerSpec, ProbeTiming, SidecarConfig
from tests.conftest import DATA, PEER_MANIFESTS, SHARED

SEEDS = SHARED / "seeds"

# Knative's own encodings of SERVING_READINESS_PROBE (peer-manifests/SOURCES.md).
KNATIVE_SINGLE = '{"tcpSocket":{"port":"8080","host":"127.0.0.1"},"successThreshold":1}'
KNATIVE_MULTI = (
    '[{"tcpSocket":{"port":"8080","host":"127.0.0.1"},"successThreshold":1},'
    '{"tcpSocket":{"port":"8090","host":"127.0.0.1"},"successThreshold":1}]'
)


def load_in(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: Mapping[str, str] = {},
    *,
    config_file: str | None = None,
    probe_flags: Sequence[str] = (),
    environ: Mapping[str, str] = {},
) -> SidecarConfig:
    """load_config with `files` written to `directory` and the cwd there, so messages say "pod.yaml"."""
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    monkeypatch.chdir(directory)
    return load_config(probe_flags=probe_flags, config_file=config_file, environ=environ)


def by_name(config: SidecarConfig) -> dict[str, ContainerSpec]:
    return {spec.name: spec for spec in config.containers}


# -- the peer manifests, as their projects wrote them -----------------------------------

PEER_EXPECTATIONS = {
    # Its own readinessProbe, timing and all; its periodSeconds 10 gives way to aggressive
    # mode, a core pod's default (docs/behaviour.md#probe-modes).
    "k8s-tcp-liveness-readiness.yaml": {
        "goproxy": (TcpSocketSpec(port=8080), ProbeTiming(initial_delay=15, period=0)),
    },
    # Liveness only, with a port: Knative's default TCP check on the first port.
    "k8s-grpc-liveness.yaml": {"etcd": (TcpSocketSpec(port=2379), ProbeTiming())},
    "k8s-pod-with-http-healthcheck.yaml": {"nginx": (TcpSocketSpec(port=80), ProbeTiming())},
    # Liveness only, no ports: nothing to observe, left to the kubelet.
    "k8s-exec-liveness.yaml": {"liveness": (None, ProbeTiming())},
    "k8s-http-liveness.yaml": {"liveness": (None, ProbeTiming())},
    # One unnamed container with a named (h2c) port: Knative's name and default probe.
    "knative-grpc-ping-service.yaml": {"user-container": (TcpSocketSpec(port=8080), ProbeTiming())},
}


def test_every_peer_manifest_has_an_expectation() -> None:
    assert sorted(p.name for p in PEER_MANIFESTS.glob("*.yaml")) == sorted(PEER_EXPECTATIONS)


@pytest.mark.parametrize("filename", sorted(PEER_EXPECTATIONS))
def test_peer_manifest_loads_with_expected_handlers(filename: str) -> None:
    config = load_config(config_file=str(PEER_MANIFESTS / filename), environ={})
    got = {spec.name: (spec.handler, spec.timing) for spec in config.containers}
    assert got == PEER_EXPECTATIONS[filename]
    assert all(spec.required for spec in config.containers)
    assert config.sources == (str(PEER_MANIFESTS / filename),)


@pytest.mark.parametrize("filename", ["k8s-exec-liveness.yaml", "k8s-http-liveness.yaml"])
def test_container_without_probe_or_ports_is_unobserved_with_one_warning(
    filename: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_in(PEER_MANIFESTS, monkeypatch, config_file=filename)
    (spec,) = config.containers
    assert not spec.observed and not spec.gates
    pod = "liveness-exec" if "exec" in filename else "liveness-http"
    assert config.warnings == (
        f'{filename}: Pod/{pod}: container "liveness": no readinessProbe and no ports; left to the kubelet',
    )


# -- the Knative Service of the seed documents -------------------------------------------


@pytest.mark.parametrize("filename", ["knative-seed-service-ja.yaml", "knative-seed-service-zh.yaml"])
def test_seed_knative_service_loads_both_http_probes(filename: str) -> None:
    config = load_config(config_file=str(DATA / filename), environ={})
    assert [(spec.name, spec.handler) for spec in config.containers] == [
        ("first-container", HttpGetSpec(port=8080, path="/health")),
        ("second-container", HttpGetSpec(port=8089, path="/health")),
    ]
    assert config.warnings == ()


def _yaml_lines(text: str) -> list[str]:
    """Significant YAML lines, ignoring indentation and comments (the ja seed lost both)."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize(
    ("seed", "filename"),
    [
        ("knative-probes-ja.txt", "knative-seed-service-ja.yaml"),
        ("knative-probes-zh.txt", "knative-seed-service-zh.yaml"),
    ],
)
def test_seed_fixture_reproduces_the_seed_text_line_for_line(seed: str, filename: str) -> None:
    seed_lines = (SEEDS / seed).read_text().splitlines()
    start = next(i for i, line in enumerate(seed_lines) if line.strip().startswith("apiVersion:"))
    block = []
    for line in seed_lines[start:]:
        if ":" not in line and not line.strip().startswith("-"):
            break
        block.append(line)
    assert _yaml_lines("\n".join(block)) == _yaml_lines((DATA / filename).read_text())


# -- Knative's SERVING_READINESS_PROBE ----------------------------------------------------


def test_knative_single_probe_string_is_container_0() -> None:
    config = load_config(environ={"SERVING_READINESS_PROBE": KNATIVE_SINGLE})
    assert config.containers == (
        ContainerSpec("container-0", TcpSocketSpec(port=8080)),
    )
    assert config.sources == ("SERVING_READINESS_PROBE",)


def test_knative_multi_probe_string_names_containers_in_order() -> None:
    config = load_config(environ={"SERVING_READINESS_PROBE": KNATIVE_MULTI})
    assert [(spec.name, spec.handler) for spec in config.containers] == [
        ("container-0", TcpSocketSpec(port=8080, host="127.0.0.1")),
        ("container-1", TcpSocketSpec(port=8090, host="127.0.0.1")),
    ]


@pytest.mark.parametrize("value", ["", "  \n"])
def test_empty_knative_probe_means_always_ready(value: str) -> None:
    config = load_config(environ={"SERVING_READINESS_PROBE": value})
    assert config.containers == ()
    assert config.sources == ("SERVING_READINESS_PROBE",)


def test_knative_probe_keeps_timing_and_http_fields() -> None:
    probe = {
        "httpGet": {"port": 8012, "path": "/healthz", "scheme": "HTTPS", "httpHeaders": [
            {"name": "K-Network-Probe", "value": "queue"}, {"name": "Accept", "value": ""}
        ]},
        "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 4, "successThreshold": 2,
        "initialDelaySeconds": 3,
    }  # fmt: skip
    (spec,) = load_config(environ={"SERVING_READINESS_PROBE": json.dumps(probe)}).containers
    assert spec.handler == HttpGetSpec(
        port=8012,
        path="/healthz",
        scheme="https",
        headers=(("K-Network-Probe", "queue"), ("Accept", "")),
    )
    assert spec.timing == ProbeTiming(initial_delay=3, timeout=2, period=5, success_threshold=2, failure_threshold=4)


# -- sources, precedence and merging --------------------------------------------------------

CONTAINERS_FILE = """\
    containers:
      - name: web
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {port: http, path: /ready}}
      - name: db
        readinessProbe: {tcpSocket: {port: "5432"}}
"""


def test_no_source_at_all_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={})
    assert str(caught.value) == (
        "no containers configured: use --probe, -f, READINESS_SIDECAR_CONFIG or SERVING_READINESS_PROBE"
    )


def test_sources_merge_by_name_and_higher_precedence_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_in(
        tmp_path,
        monkeypatch,
        {"c.yaml": CONTAINERS_FILE},
        config_file="c.yaml",
        probe_flags=["db=tcp://:5433", "extra=tcp://:9000"],
        environ={
            "SERVING_READINESS_PROBE": KNATIVE_SINGLE,
            "READINESS_SIDECAR_CONFIG": json.dumps({"containers": [{"name": "web", "ports": [{"containerPort": 1}]}]}),
        },
    )
    assert config.sources == (
        "--probe x2",
        "c.yaml",
        "READINESS_SIDECAR_CONFIG",
        "SERVING_READINESS_PROBE",
    )
    # Lowest precedence sets the order; an override keeps its slot; new names go last.
    # Each source probes a different target, so the handler says which source won.
    assert [(spec.name, spec.handler) for spec in config.containers] == [
        ("container-0", TcpSocketSpec(port=8080)),  # SERVING_READINESS_PROBE
        ("web", HttpGetSpec(port=8080, path="/ready")),  # c.yaml over READINESS_SIDECAR_CONFIG's port 1
        ("db", TcpSocketSpec(port=5433)),  # --probe over c.yaml
        ("extra", TcpSocketSpec(port=9000)),  # --probe
    ]


def test_single_probe_flag_source_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_in(tmp_path, monkeypatch, probe_flags=["web=tcp://:80"])
    assert config.sources == ("--probe",)


def test_overriding_an_unobserved_container_drops_its_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_in(
        PEER_MANIFESTS,
        monkeypatch,
        config_file="k8s-exec-liveness.yaml",
        probe_flags=["liveness=exec:cat /tmp/healthy"],
    )
    assert config.warnings == ()
    assert config.containers[0].handler == ExecSpec(("cat", "/tmp/healthy"))


def test_blank_readiness_sidecar_config_counts_as_unset() -> None:
    with pytest.raises(ConfigError, match=r"^no containers configured"):
        load_config(environ={"READINESS_SIDECAR_CONFIG": " "})


def test_containers_file_required_false_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {
        "containers": [
            {"name": "worker", "required": False, "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "api", "readinessProbe": {"grpc": {"port": 9090}}, "image": "ignored:1"},
        ]
    }
    config = load_in(tmp_path, monkeypatch, {"c.json": json.dumps(doc)}, config_file="c.json")
    worker, api = config.containers
    assert (worker.required, worker.handler) == (False, ExecSpec(("true",)))
    assert (api.required, api.handler) == (True, GrpcSpec(port=9090, service=""))


def test_containers_file_liveness_and_startup_checks_load_and_a_file_without_them_too() -> None:
    # What inject --rewrite-liveness writes (the checks behind /live/<c> and /startup/<c>), and
    # what it wrote before startupProbe was routed: an entry without them loads as before.
    doc = {"containers": [
        {"name": "web", "readinessProbe": {"tcpSocket": {"port": 80}},
         "livenessProbe": {"httpGet": {"path": "/healthz", "port": 80}, "timeoutSeconds": 3},
         "startupProbe": {"grpc": {"port": 9090, "service": "boot"}, "timeoutSeconds": 2}},
        {"name": "old", "readinessProbe": {"tcpSocket": {"port": 81}},
         "livenessProbe": {"tcpSocket": {"port": 81}}},
    ]}  # fmt: skip
    web, old = load_config(environ={"READINESS_SIDECAR_CONFIG": json.dumps(doc)}).containers
    assert (web.liveness, web.liveness_timeout) == (HttpGetSpec(port=80, path="/healthz"), 3)
    assert (web.startup, web.startup_timeout) == (GrpcSpec(port=9090, service="boot"), 2)
    assert (old.liveness, old.startup, old.startup_timeout) == (TcpSocketSpec(port=81), None, 1)
    assert web.timing == ProbeTiming(), "neither changes the readiness check's timing"


# -- manifests: kinds, names, defaults ------------------------------------------------------


def test_timing_zeros_take_kubelet_defaults_and_period_zero_is_aggressive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = """\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
            - name: app
              readinessProbe:
                tcpSocket: {port: 80}
                timeoutSeconds: 0
                successThreshold: 0
                failureThreshold: 0
                periodSeconds: 0
    """
    (spec,) = load_in(tmp_path, monkeypatch, {"pod.yaml": pod}, config_file="pod.yaml").containers
    assert spec.timing == ProbeTiming(timeout=1, success_threshold=1, failure_threshold=3, period=0)
    assert spec.timing.aggressive


def test_named_and_digit_string_ports_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          template:
            spec:
              containers:
                - name: app
                  ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9901}]
                  readinessProbe: {httpGet: {port: admin, path: ready, scheme: https, host: "::1"}}
                - name: db
                  readinessProbe: {tcpSocket: {port: "5432"}}
    """
    config = load_in(tmp_path, monkeypatch, {"d.yaml": deployment}, config_file="d.yaml")
    assert by_name(config)["app"].handler == HttpGetSpec(port=9901, path="ready", host="::1", scheme="https")
    assert by_name(config)["db"].handler == TcpSocketSpec(port=5432)
    assert config.sources == ("d.yaml",)


def test_native_sidecars_count_and_plain_init_containers_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = """\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          initContainers:
            - {name: migrate, image: m, ports: [{containerPort: 1}]}
            - {name: proxy, image: p, restartPolicy: Always, ports: [{containerPort: 15001}]}
          containers:
            - {name: app, image: a, ports: [{containerPort: 8080}]}
    """
    config = load_in(tmp_path, monkeypatch, {"pod.yaml": pod}, config_file="pod.yaml")
    assert [(s.name, s.handler) for s in config.containers] == [
        ("app", TcpSocketSpec(port=8080)),
        ("proxy", TcpSocketSpec(port=15001)),
    ]


def test_unnamed_containers_get_knatives_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Knative counts generated names only and skips names a user took
    # (applyDefaultContainerNames), so the unnamed second container is user-container-0.
    service = """\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata: {name: s}
        spec:
          template:
            spec:
              containers:
                - {image: a, ports: [{containerPort: 8080}]}
                - {name: user-container-1, image: b, readinessProbe: {tcpSocket: {port: 9}}}
                - {image: c, readinessProbe: {tcpSocket: {port: 10}}}
    """
    config = load_in(tmp_path, monkeypatch, {"s.yaml": service}, config_file="s.yaml")
    assert [s.name for s in config.containers] == [
        "user-container-0",
        "user-container-1",
        "user-container-2",
    ]


def test_knative_pod_without_ports_serves_8080_from_its_first_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = """\
        apiVersion: serving.knative.dev/v1
        kind: Configuration
        metadata: {name: c}
        spec:
          template:
            spec:
              containers:
                - {name: app, image: a}
                - {name: side, image: b}
                - {name: probed, image: c, readinessProbe: {httpGet: {path: /x, port: 9}}}
    """
    config = load_in(tmp_path, monkeypatch, {"c.yaml": service}, config_file="c.yaml")
    assert by_name(config)["app"].handler == TcpSocketSpec(port=8080)
    assert by_name(config)["side"].handler is None
    assert config.warnings == (
        'c.yaml: Configuration/c: container "side": no readinessProbe and no ports; left to the kubelet',
    )
    assert by_name(config)["probed"].handler == HttpGetSpec(port=9, path="/x")


def test_knative_probe_without_port_or_handler_uses_the_serving_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = """\
        apiVersion: serving.knative.dev/v1
        kind: Revision
        metadata: {name: r}
        spec:
          containers:
            - name: app
              ports: [{containerPort: 8081}]
              readinessProbe: {periodSeconds: 3}
            - name: side
              ports: [{containerPort: 9000}]
              readinessProbe: {httpGet: {path: /ready}}
    """
    config = load_in(tmp_path, monkeypatch, {"r.yaml": revision}, config_file="r.yaml")
    assert by_name(config)["app"].handler == TcpSocketSpec(port=8081)
    assert by_name(config)["app"].timing.period == 3
    assert by_name(config)["side"].handler == HttpGetSpec(port=9000, path="/ready")


def test_not_required_annotation_marks_containers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = f"""\
        apiVersion: batch/v1
        kind: CronJob
        metadata: {{name: nightly}}
        spec:
          jobTemplate:
            spec:
              template:
                metadata:
                  annotations: {{"{NOT_REQUIRED_ANNOTATION}": "metrics, logs"}}
                spec:
                  containers:
                    - {{name: main, ports: [{{containerPort: 80}}]}}
                    - {{name: metrics, ports: [{{containerPort: 9090}}]}}
                    - {{name: logs, ports: [{{containerPort: 24224}}]}}
    """
    config = load_in(tmp_path, monkeypatch, {"j.yaml": job}, config_file="j.yaml")
    assert [(s.name, s.required) for s in config.containers] == [
        ("main", True),
        ("metrics", False),
        ("logs", False),
    ]


def test_one_pod_template_among_other_objects_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = """\
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: List
        items:
          - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {a: b}}
          - apiVersion: apps/v1
            kind: StatefulSet
            metadata: {name: db}
            spec: {template: {spec: {containers: [{name: pg, ports: [{containerPort: 5432}]}]}}}
    """
    config = load_in(tmp_path, monkeypatch, {"all.yaml": text}, config_file="all.yaml")
    assert [(s.name, s.handler) for s in config.containers] == [("pg", TcpSocketSpec(port=5432))]
    assert config.sources == ("all.yaml",)


# -- manifests module -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "api_version", "path"),
    [
        ("Pod", "v1", ("spec",)),
        ("Deployment", "apps/v1", ("spec", "template", "spec")),
        ("StatefulSet", "apps/v1", ("spec", "template", "spec")),
        ("DaemonSet", "apps/v1", ("spec", "template", "spec")),
        ("ReplicaSet", "apps/v1", ("spec", "template", "spec")),
        ("ReplicationController", "v1", ("spec", "template", "spec")),
        ("Job", "batch/v1", ("spec", "template", "spec")),
        ("CronJob", "batch/v1", ("spec", "jobTemplate", "spec", "template", "spec")),
        ("PodTemplate", "v1", ("template", "spec")),
        ("Service", "serving.knative.dev/v1", ("spec", "template", "spec")),
        ("Configuration", "serving.knative.dev/v1", ("spec", "template", "spec")),
        ("Revision", "serving.knative.dev/v1", ("spec",)),
    ],
)
def test_find_pod_specs_returns_the_pod_spec_object_itself(kind: str, api_version: str, path: tuple[str, ...]) -> None:
    pod_spec: dict[str, object] = {"containers": [{"name": "a"}]}
    doc: dict[str, object] = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})  # type: ignore[assignment]
    node[path[-1]] = pod_spec
    (ref,) = find_pod_specs(doc, "m.yaml")
    assert ref.pod_spec is pod_spec
    assert (ref.kind, ref.name, ref.path, ref.label, ref.obj) == (kind, "x", path, f"{kind}/x", doc)
    assert ref.knative == is_knative(kind, api_version) == api_version.startswith("serving.")


@pytest.mark.parametrize(
    "doc",
    [
        {"apiVersion": "v1", "kind": "Service", "spec": {"template": {"spec": {}}}},
        {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "spec": {"template": {"spec": {}}}},
        {"apiVersion": "v1", "kind": "ConfigMap"},
        ["not", "an", "object"],
        "text",
    ],
)
def test_objects_without_a_pod_template_are_not_ours(doc: object) -> None:
    assert find_pod_specs(doc, "m.yaml") == []


def test_template_annotations_win_over_the_objects() -> None:
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"k": "outer", "only-outer": "o"}},
        "spec": {"template": {"metadata": {"annotations": {"k": "inner"}}, "spec": {}}},
    }
    (ref,) = find_pod_specs(doc, "d.yaml")
    assert (ref.annotation("k"), ref.annotation("only-outer"), ref.annotation("no")) == (
        "inner",
        "o",
        None,
    )


def test_load_documents_reads_flow_style_json_and_skips_empty_documents() -> None:
    docs = load_documents("---\n{a: 1, b: [x]}\n---\n---\n# nothing\n", "m.yaml")
    assert docs == [{"a": 1, "b": ["x"]}]
    # Real JSON is read as JSON: YAML 1.1 would reject the surrogate pair and read 1e5 as text.
    assert load_documents('{"s": "\\ud83d\\ude00", "n": 1e5}', "m.json") == [{"s": "😀", "n": 1e5}]


def test_deeply_nested_yaml_is_an_error_not_a_crash() -> None:
    with pytest.raises(ConfigError, match=r"^m\.yaml: invalid YAML: nested too deeply$"):
        load_documents("[" * 50_000 + "]" * 50_000, "m.yaml")
    with pytest.raises(ConfigError, match=r"^m\.yaml: invalid YAML: nested too deeply$"):
        load_documents("- " * 50_000 + "x", "m.yaml")


# -- every user mistake is one line -----------------------------------------------------------


def _containers(probe: str, extra: str = "") -> str:
    return f"containers: [{{name: web, {extra}readinessProbe: {probe}}}]"


def _deployment(container: str) -> str:
    return (
        "{apiVersion: apps/v1, kind: Deployment, metadata: {name: web},"
        f" spec: {{template: {{spec: {{containers: [{container}]}}}}}}}}"
    )


C = "containers.yaml"
P = "pod.yaml"
BAD_INPUTS = [
    pytest.param(
        {C: _containers("{tcpSocket: {port: 80}, periodSecond: 1}")},
        'containers.yaml: container "web": readinessProbe.periodSecond: unknown field; did you mean periodSeconds?',
        id="unknown-probe-field",
    ),
    pytest.param(
        {C: "containers: [{name: web, readinesProbe: {tcpSocket: {port: 80}}}]"},
        'containers.yaml: container "web": readinesProbe: unknown field; did you mean readinessProbe?',
        id="unknown-container-field",
    ),
    pytest.param(
        {C: _containers("{tcpSocket: {port: 80}, periodSeconds: '1'}")},
        'containers.yaml: container "web": readinessProbe.periodSeconds: expected an integer, got a string',
        id="wrong-type-string",
    ),
    pytest.param(
        {C: _containers("{tcpSocket: {port: 80}, timeoutSeconds: 1.5}")},
        'containers.yaml: container "web": readinessProbe.timeoutSeconds: expected an integer, got a number',
        id="wrong-type-float",
    ),
    pytest.param(
        {C: _containers("{tcpSocket: {port: 80}, httpGet: {port: 80}}")},
        'containers.yaml: container "web": readinessProbe: has 2 handlers (httpGet, tcpSocket); use exactly one',
        id="two-handlers",
    ),
    pytest.param(
        {C: _containers("{periodSeconds: 1}")},
        'containers.yaml: container "web": readinessProbe: no handler; set one of httpGet, tcpSocket, grpc or exec',
        id="no-handler",
    ),
    pytest.param(
        {C: _containers("{tcpSocket: {port: 70000}}")},
        'containers.yaml: container "web": readinessProbe.tcpSocket.port: must be between 1 and 65535, got 70000',
        id="port-70000",
    ),
    pytest.param(
        {C: _containers("{httpGet: {port: 0}}")},
        'containers.yaml: container "web": readinessProbe.httpGet.port: must be between 1 and 65535, got 0',
        id="port-0",
    ),
    pytest.param(
        {C: _containers("{grpc: {port: grpc}}", "ports: [{name: grpc, containerPort: 9090}], ")},
        'containers.yaml: container "web": readinessProbe.grpc.port:'
        " must be a number, named ports are not allowed for grpc",
        id="named-grpc-port",
    ),
    pytest.param(
        {C: _containers("{tcpSocket: {port: 80}, failureThreshold: -1}")},
        'containers.yaml: container "web": readinessProbe.failureThreshold: must be >= 0',
        id="negative-failure-threshold",
    ),
    pytest.param(
        {C: _containers("{exec: {command: []}}")},
        'containers.yaml: container "web": readinessProbe.exec.command: must be a non-empty list of strings',
        id="empty-exec",
    ),
    pytest.param(
        {C: _containers("{httpGet: {port: 80, scheme: FTP}}")},
        'containers.yaml: container "web": readinessProbe.httpGet.scheme: must be HTTP or HTTPS, got "FTP"',
        id="bad-scheme",
    ),
    pytest.param(
        {C: _containers("{httpGet: {port: 80, httpHeaders: [{name: 'a b', value: c}]}}")},
        'containers.yaml: container "web": readinessProbe.httpGet.httpHeaders[0].name: invalid header name "a b"',
        id="bad-header-name",
    ),
    pytest.param(
        {C: "containers: [{name: web, image: x}]"},
        'containers.yaml: container "web": no readinessProbe and no ports: nothing to probe',
        id="nothing-to-probe",
    ),
    pytest.param(
        {C: "containers: [{readinessProbe: {tcpSocket: {port: 1}}}]"},
        "containers.yaml: containers[0].name: required",
        id="unnamed-in-containers-file",
    ),
    pytest.param(
        {C: "containers: [{name: Web_1, ports: [{containerPort: 1}]}]"},
        'containers.yaml: containers[0].name: invalid container name "Web_1":'
        " use lower-case letters, digits and '-' (at most 63)",
        id="invalid-name",
    ),
    pytest.param(
        {C: "containers:\n- {name: web, ports: [{containerPort: 1}]}\n- {name: web, ports: [{containerPort: 2}]}"},
        'containers.yaml: container "web": duplicate container name',
        id="duplicate-names",
    ),
    pytest.param(
        {C: "containers: [{name: web, required: 'no', ports: [{containerPort: 1}]}]"},
        'containers.yaml: container "web": required: expected true or false, got a string',
        id="required-not-bool",
    ),
    pytest.param(
        {C: "container: []"},
        "containers.yaml: container: unknown field (a containers file has only `containers:`)",
        id="containers-file-typo",
    ),
    pytest.param(
        {C: "containers: [{name: web, ports: [{containerPort: 99999}]}]"},
        'containers.yaml: container "web": ports[0].containerPort: must be <= 65535',
        id="container-port-range",
    ),
    pytest.param(
        {P: _deployment("{name: app, readinessProbe: {httpGet: {port: http}}}")},
        'pod.yaml: Deployment/web: container "app": readinessProbe.httpGet.port: named port "http" not found in ports',
        id="unknown-named-port",
    ),
    pytest.param(
        {
            P: "{apiVersion: serving.knative.dev/v1, kind: Service, metadata: {name: s}, spec: {template:"
            " {spec: {containers: [{image: a, ports: [{containerPort: 1}]},"
            " {name: side, readinessProbe: {tcpSocket: {}}}]}}}}"
        },
        'pod.yaml: Service/s: container "side": readinessProbe.tcpSocket.port: required',
        id="knative-sidecar-probe-without-port",
    ),
    pytest.param(
        {P: _deployment("{name: app, ports: [{containerPort: 1}]}, {name: app, image: b}")},
        'pod.yaml: Deployment/web: spec.template.spec.containers[1].name: duplicate container name "app"',
        id="duplicate-names-in-pod",
    ),
    pytest.param(
        {P: _deployment("{name: app, required: false, ports: [{containerPort: 1}]}")},
        'pod.yaml: Deployment/web: container "app": required: unknown field',
        id="required-field-in-manifest",
    ),
    pytest.param(
        {
            P: "{apiVersion: v1, kind: Pod, metadata: {name: p, annotations:"
            f' {{"{NOT_REQUIRED_ANNOTATION}": "app,ghost"}}}},'
            " spec: {containers: [{name: app, ports: [{containerPort: 1}]}]}}"
        },
        f'pod.yaml: Pod/p: annotations[{NOT_REQUIRED_ANNOTATION}]: unknown container "ghost" (containers: app)',
        id="not-required-unknown-name",
    ),
    pytest.param(
        {P: "{apiVersion: apps/v1, kind: Deployment, metadata: {name: web}, spec: {template: []}}"},
        "pod.yaml: Deployment/web: spec.template: must be a mapping",
        id="template-not-a-mapping",
    ),
    pytest.param(
        {P: "{apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: {a: 1}}}"},
        "pod.yaml: Pod/p: spec.containers: expected a list, got a mapping",
        id="containers-not-a-list",
    ),
    pytest.param(
        {
            P: _deployment("{name: a, image: x}").replace("name: web", "name: a")
            + "\n---\n{apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: []}}"
        },
        "pod.yaml: holds 2 pod templates (Deployment/a, Pod/b); the sidecar watches one pod",
        id="two-pod-templates",
    ),
    pytest.param(
        {P: "{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}"},
        "pod.yaml: holds no pod template (Pod, Deployment, Knative Service, ...)"
        " and is not a containers file (a mapping with `containers:`)",
        id="no-pod-template",
    ),
    pytest.param(
        {P: "kind: Pod\nspec:\n  bad: x: y\n"},
        "pod.yaml: invalid YAML at line 3, column 9: mapping values are not allowed in this context",
        id="bad-yaml",
    ),
    pytest.param(
        {P: "a: 2020-13-45"},
        "pod.yaml: invalid YAML: month must be in 1..12",
        id="bad-yaml-timestamp",
    ),
    pytest.param(
        {P: ""},
        "pod.yaml: is empty: expected a containers file or a manifest with a pod template",
        id="empty-file",
    ),
]


@pytest.mark.parametrize(("files", "expected"), BAD_INPUTS)
def test_bad_file_is_one_line_error(
    files: dict[str, str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (filename,) = files
    with pytest.raises(ConfigError) as caught:
        load_in(tmp_path, monkeypatch, files, config_file=filename)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"config_file": "x.yaml"}, "x.yaml: cannot read: No such file or directory", id="missing"),
        pytest.param({"config_file": "."}, ".: cannot read: Is a directory", id="directory"),
        pytest.param(
            {"probe_flags": ["web=htp://x:1"]},
            '--probe "web=htp://x:1": unknown scheme "htp" (use http, https, tcp, grpc or exec:)',
            id="bad-probe-scheme",
        ),
        pytest.param(
            {"probe_flags": ["web=tcp://:80;timeout=2x"]},
            "--probe \"web=tcp://:80;timeout=2x\": timeout: bad duration '2x' (use e.g. 500ms, 2s, 1m)",
            id="bad-duration",
        ),
        pytest.param(
            {"probe_flags": ["web=tcp://:80", "web=tcp://:81"]},
            '--probe "web=tcp://:81": duplicate container name "web"',
            id="duplicate-flags",
        ),
        pytest.param(
            {"environ": {"SERVING_READINESS_PROBE": "nope"}},
            "SERVING_READINESS_PROBE: invalid JSON: Expecting value: line 1 column 1 (char 0)",
            id="knative-invalid-json",
        ),
        pytest.param(
            {"environ": {"SERVING_READINESS_PROBE": '"tcp"'}},
            "SERVING_READINESS_PROBE: expected a probe object or an array of them, got a string",
            id="knative-not-an-object",
        ),
        pytest.param(
            {"environ": {"SERVING_READINESS_PROBE": '[{"tcpSocket": {"port": 1}}, {"exec": {}}]'}},
            'SERVING_READINESS_PROBE: container "container-1": exec.command: must be a non-empty list of strings',
            id="knative-second-probe",
        ),
        pytest.param(
            {"environ": {"SERVING_READINESS_PROBE": '{"httpGet": {"port": "http"}}'}},
            'SERVING_READINESS_PROBE: container "container-0": httpGet.port: named port "http" not found in ports',
            id="knative-named-port",
        ),
        pytest.param(
            {"environ": {"READINESS_SIDECAR_CONFIG": "containers: [{name: a}]\n---\n{}"}},
            "READINESS_SIDECAR_CONFIG: expected one YAML or JSON document with `containers:`, got 2",
            id="config-env-two-documents",
        ),
        pytest.param(
            {"environ": {"READINESS_SIDECAR_CONFIG": '{"containers": [{"name": "a"}]}'}},
            'READINESS_SIDECAR_CONFIG: container "a": no readinessProbe and no ports: nothing to probe',
            id="config-env-nothing-to-probe",
        ),
        pytest.param(
            {"environ": {"READINESS_SIDECAR_CONFIG": json.dumps({"containers": [
                {"name": "a", "readinessProbe": {"tcpSocket": {"port": 1}}, "startupProbe": {"exec": {}}}]})}},
            'READINESS_SIDECAR_CONFIG: container "a": startupProbe.exec.command: must be a non-empty list of strings',
            id="config-env-bad-startup-probe",
        ),
    ],
)
def test_bad_source_is_one_line_error(
    kwargs: dict[str, object], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(**{"environ": {}, **kwargs})  # type: ignore[arg-type]
    assert str(caught.value) == expected


def test_binary_file_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff\xfe garbage")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file="blob.bin", environ={})
    assert str(caught.value) == "blob.bin: cannot read: not UTF-8 text (byte 1)"


# -- nothing but ConfigError comes out, for any input --------------------------------------

_KEYS = st.sampled_from([
    "containers", "initContainers", "name", "image", "ports", "containerPort", "hostIP",
    "readinessProbe", "httpGet", "tcpSocket", "grpc", "exec", "command", "port", "path", "host",
    "scheme", "httpHeaders", "value", "service", "periodSeconds", "timeoutSeconds",
    "failureThreshold", "successThreshold", "initialDelaySeconds", "required", "restartPolicy",
    "kind", "apiVersion", "metadata", "annotations", "spec", "template", "jobTemplate", "items",
    NOT_REQUIRED_ANNOTATION,
])  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 8080, 65535, 65536, 2**31, 2**70, "8080", "http", "Always", "HTTPS"]),
    st.floats(),
    st.text(max_size=12),
    _KEYS,
)
_YAMLISH = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_KEYS, st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=10,
)
_PROBE = st.dictionaries(_KEYS, _YAMLISH, max_size=4).map(
    lambda d: {**d, "tcpSocket": {"port": d.get("port", 80)}} if len(d) % 2 else d
)
_CONTAINER = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["app", "db", "", "App"]), _SCALARS)},
    optional={
        "ports": st.one_of(
            st.lists(st.fixed_dictionaries({"containerPort": _SCALARS}, optional={"name": _SCALARS})),
            _YAMLISH,
        ),
        "readinessProbe": st.one_of(_PROBE, _YAMLISH),
        "restartPolicy": _SCALARS,
        "required": _SCALARS,
    },
)
_POD_SPEC = st.fixed_dictionaries(
    {"containers": st.one_of(st.lists(_CONTAINER, max_size=3), _YAMLISH)},
    optional={"initContainers": st.lists(_CONTAINER, max_size=2)},
)
_MANIFEST = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(["v1", "apps/v1", "batch/v1", "serving.knative.dev/v1"]),
    "kind": st.sampled_from(["Pod", "Deployment", "CronJob", "Service", "Revision", "List"]),
    "metadata": st.one_of(
        st.fixed_dictionaries({"name": _SCALARS, "annotations": st.one_of(
            st.fixed_dictionaries({NOT_REQUIRED_ANNOTATION: _SCALARS}), _YAMLISH)}),
        _YAMLISH,
    ),
    "spec": st.one_of(
        _POD_SPEC,
        st.fixed_dictionaries({"template": st.fixed_dictionaries({"spec": _POD_SPEC})}),
        _YAMLISH,
    ),
    "items": st.lists(_YAMLISH, max_size=2),
})  # fmt: skip
_DOCUMENT = st.one_of(
    _MANIFEST,
    st.fixed_dictionaries({"containers": st.one_of(st.lists(_CONTAINER, max_size=3), _YAMLISH)}),
    _YAMLISH,
)


def _assert_one_line_or_config(call: Callable[[], SidecarConfig]) -> None:
    try:
        config = call()
    except ConfigError as err:
        assert str(err) and "\n" not in str(err) and "\r" not in str(err)
    else:
        assert all(isinstance(spec, ContainerSpec) for spec in config.containers)
        assert all("\n" not in warning for warning in config.warnings)


def _serialise(doc: object, form: str) -> str:
    if form == "json":
        return json.dumps(doc)
    return yaml.dump(doc, Dumper=yaml.CSafeDumper, default_flow_style=form == "flow")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=200, deadline=None)
@given(doc=_DOCUMENT, form=st.sampled_from(["json", "yaml", "flow"]))
def test_any_structure_in_a_file_gives_config_or_one_config_error(fuzz_dir: Path, doc: object, form: str) -> None:
    path = fuzz_dir / "doc.yaml"
    path.write_text(_serialise(doc, form))
    _assert_one_line_or_config(lambda: load_config(config_file=str(path), environ={}))


@settings(max_examples=150, deadline=None)
@given(doc=_DOCUMENT, text=st.text(), raw=st.binary())
def test_any_env_value_or_bytes_give_config_or_one_config_error(
    fuzz_dir: Path, doc: object, text: str, raw: bytes
) -> None:
    for environ in (
        {"SERVING_READINESS_PROBE": json.dumps(doc)},
        {"SERVING_READINESS_PROBE": text},
        {"READINESS_SIDECAR_CONFIG": _serialise(doc, "flow")},
        {"READINESS_SIDECAR_CONFIG": text},
    ):
        _assert_one_line_or_config(lambda: load_config(environ=environ))  # noqa: B023
    path = fuzz_dir / "blob"
    path.write_bytes(raw)
    _assert_one_line_or_config(lambda: load_config(config_file=str(path), environ={}))
