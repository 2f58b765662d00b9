"""`readiness-sidecar inject`: real manifests in, manifests the API server's schema accepts out."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from probes.spec import ExecSpec, GrpcSpec, TcpSocketSpec
from sidecar.config.documents import dump_documents, load_documents, read_manifest
from sidecar.config.loader import load_config
from sidecar.config.names import USER_CONTAINER_NAME, knative_default_names
from sidecar.config.pod_template import find_pod_specs
from sidecar.contract import CONFIG_ENV
from sidecar.errors import ConfigError
from sidecar.k8s.inject import (
    KNATIVE_MULTI_CONTAINER_PROBING,
    MIN_GRACE_SECONDS,
    SIDECAR_NAME,
    STATUS_ANNOTATION,
    InjectOptions,
    inject_documents,
    inject_object,
)
from sidecar.k8s.options import DEFAULT_IMAGE, DEFAULT_IMAGE_WARNING
from sidecar.model import ContainerSpec
from tests.conftest import PEER_MANIFESTS, REPO, run_cli

DATA = REPO / "tests" / "data"
RICH = DATA / "inject" / "rich-deployment.yaml"
ROUTED = DATA / "inject" / "routed-probes.yaml"  # every probe --rewrite-liveness routes, and one it leaves
KUBERNETES_VERSION = "1.33.0"  # native sidecars are GA here; the package has schemas up to 1.37
INPUTS = sorted(PEER_MANIFESTS.glob("*.yaml")) + sorted(DATA.glob("knative-seed-service-*.yaml")) + [RICH, ROUTED]
OPTION_SETS = {
    "defaults": InjectOptions(),
    "native+liveness+exec-in-sidecar": InjectOptions(native_sidecar=True, rewrite_liveness=True, exec_probes="sidecar"),
}
DRAIN_HOOK = {"httpGet": {"path": "/wait-for-drain", "port": 8550}}


DEFAULTS = InjectOptions()


def inject_text(text: str, options: InjectOptions = DEFAULTS, source: str = "in.yaml") -> tuple[str, list[str]]:
    docs, warnings = inject_documents(load_documents(text, source), source, options)
    return dump_documents(docs, as_json=False), warnings


def inject_round_trip(text: str, options: InjectOptions = DEFAULTS) -> str:
    """What the CLI writes: read and dumped by the round-trip loader."""
    manifest = read_manifest("-", io.BytesIO(text.encode()), round_trip=True)
    docs, _ = inject_documents(manifest.docs, manifest.source, options)
    return dump_documents(docs, as_json=manifest.is_json, layout=manifest.layout)


def inject_one(manifest: str, options: InjectOptions = DEFAULTS) -> tuple[dict[str, Any], list[str]]:
    (doc,) = load_documents(manifest, "in.yaml")
    result, warnings = inject_object(doc, "in.yaml", options)
    assert isinstance(result, dict)
    return result, warnings


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    (ref,) = find_pod_specs(obj, "in.yaml")
    return ref.pod_spec


def sidecar_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        c for key in ("containers", "initContainers") for c in pod_spec.get(key, []) if c["name"] == SIDECAR_NAME
    ]
    assert len(found) == 1
    return found[0]


def sidecar_config(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (env,) = sidecar_of(pod_spec)["env"]
    assert env["name"] == CONFIG_ENV
    doc: dict[str, Any] = json.loads(env["value"])
    return doc


def as_validatable_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """A Knative template checked as what it becomes: a PodSpec, with Knative's default names filled in."""
    spec = copy.deepcopy(pod_spec_of(obj))
    given = [c.get("name") or None for c in spec["containers"]]
    names = knative_default_names(given, set(), USER_CONTAINER_NAME)
    for container, name in zip(spec["containers"], names, strict=True):
        container["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, "spec": spec}


def validate_strict(obj: dict[str, Any]) -> None:
    target = as_validatable_pod(obj) if obj["apiVersion"].startswith("serving.knative.dev/") else obj
    kubernetes_validate.validate(target, KUBERNETES_VERSION, strict=True)


# -- every real manifest -------------------------------------------------------------


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_real_manifests_inject_into_schema_valid_objects_and_a_second_pass_changes_no_byte(
    path: Path, options: InjectOptions
) -> None:
    once, first_warnings = inject_text(path.read_text(), options, path.name)
    for doc in yaml.safe_load_all(once):
        validate_strict(doc)
    twice, warnings = inject_text(once, options, path.name)
    assert twice == once
    injected = SIDECAR_NAME in once
    assert warnings == ([] if injected else first_warnings), "an injected template has nothing more to say"


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_the_original_manifests_validate_too_so_the_check_above_means_something(path: Path) -> None:
    for doc in load_documents(path.read_text(), path.name):
        validate_strict(doc)


def test_the_schema_check_catches_a_misspelt_container_field() -> None:
    pod, _ = inject_one((PEER_MANIFESTS / "k8s-tcp-liveness-readiness.yaml").read_text())
    sidecar_of(pod_spec_of(pod))["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(pod)


# -- round trip: the sidecar reads back the probes the containers had --------------------


def observed(specs: tuple[ContainerSpec, ...]) -> list[tuple[object, ...]]:
    return [(s.name, s.handler, s.timing, s.required) for s in specs if s.observed]


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_injected_config_loads_back_to_the_same_probes_as_the_original_manifest(path: Path) -> None:
    original = load_config(config_file=str(path), environ={})
    injected, _ = inject_text(path.read_text(), InjectOptions(exec_probes="sidecar"), path.name)
    pod_spec = pod_spec_of(next(yaml.safe_load_all(injected)))
    if not any(spec.observed for spec in original.containers):
        assert all(c["name"] != SIDECAR_NAME for c in pod_spec["containers"]), "nothing to watch: not injected"
        return
    (env,) = sidecar_of(pod_spec)["env"]
    reloaded = load_config(environ={CONFIG_ENV: env["value"]})
    assert observed(reloaded.containers) == observed(original.containers)
    assert reloaded.sources == (CONFIG_ENV,)


def test_rich_round_trip_covers_https_headers_host_timing_grpc_service_and_not_required() -> None:
    original = load_config(config_file=str(RICH), environ={})
    names = [spec.name for spec in original.containers if spec.observed]
    assert names == ["web", "grpc", "metrics", "worker", "proxy"]
    web = original.containers[0]
    assert web.handler is not None and web.handler.target == "https://localhost:8443/ready"
    assert web.timing.success_threshold == 2 and web.timing.period == 5.0
    assert [s.required for s in original.containers if s.name == "metrics"] == [False]


# -- what happens to each container --------------------------------------------------


def test_readiness_moves_into_the_sidecar_and_every_container_waits_for_the_drain() -> None:
    obj, warnings = inject_one(RICH.read_text())
    spec = pod_spec_of(obj)
    containers = {c["name"]: c for c in spec["containers"]}
    for name in ("web", "grpc", "metrics", "batch"):
        assert "readinessProbe" not in containers[name]
        assert containers[name]["lifecycle"] == {"preStop": DRAIN_HOOK}
    assert warnings == [
        'in.yaml: Deployment/shop: container "worker": readinessProbe: exec probe left to the kubelet,'
        " and no port for the sidecar to check instead: kubelet-managed",
        'in.yaml: Deployment/shop: container "batch": no readinessProbe and no ports; left to the kubelet',
    ]
    assert spec["containers"][-1]["name"] == SIDECAR_NAME
    assert spec["terminationGracePeriodSeconds"] == MIN_GRACE_SECONDS
    assert obj["spec"]["template"]["metadata"]["annotations"][STATUS_ANNOTATION] == "injected"


def test_exec_probes_stay_with_the_kubelet_and_the_sidecar_checks_the_port_instead() -> None:
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: cache}
spec:
  containers:
  - name: redis
    image: redis:7
    ports: [{containerPort: 6379}]
    readinessProbe: {exec: {command: [redis-cli, ping]}, periodSeconds: 5}
"""
    obj, warnings = inject_one(manifest)
    redis = pod_spec_of(obj)["containers"][0]
    assert redis["readinessProbe"] == {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5}
    assert sidecar_config(pod_spec_of(obj)) == {
        "containers": [{"name": "redis", "readinessProbe": {"tcpSocket": {"port": 6379}}}]
    }
    assert warnings == []
    moved, _ = inject_one(manifest, InjectOptions(exec_probes="sidecar"))
    assert "readinessProbe" not in pod_spec_of(moved)["containers"][0]
    entry = sidecar_config(pod_spec_of(moved))["containers"][0]
    # A core pod's probes are aggressive unless its annotations say kubelet (docs/behaviour.md#probe-modes).
    assert entry["readinessProbe"] == {"exec": {"command": ["redis-cli", "ping"]}}
    kept, _ = inject_one(manifest.replace("metadata: {name: cache}", "metadata: {name: cache, annotations:"
                                          " {readiness-sidecar.io/probe-mode: kubelet}}"),
                         InjectOptions(exec_probes="sidecar"))
    entry = sidecar_config(pod_spec_of(kept))["containers"][0]
    assert entry["readinessProbe"] == {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5}


def test_exec_in_sidecar_mounts_the_volume_that_holds_the_command_read_only() -> None:
    obj, _ = inject_one(RICH.read_text(), InjectOptions(exec_probes="sidecar"))
    sidecar = sidecar_of(pod_spec_of(obj))
    assert sidecar["volumeMounts"] == [{"name": "probes", "mountPath": "/probes", "readOnly": True}]
    without, _ = inject_one(RICH.read_text())
    assert "volumeMounts" not in sidecar_of(pod_spec_of(without))


def test_a_custom_prestop_and_a_long_grace_period_are_kept() -> None:
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 120
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 80}]
    lifecycle:
      postStart: {exec: {command: [touch, /tmp/started]}}
      preStop: {exec: {command: [nginx, -s, quit]}}
"""
    obj, _ = inject_one(manifest)
    spec = pod_spec_of(obj)
    assert spec["containers"][0]["lifecycle"]["preStop"] == {"exec": {"command": ["nginx", "-s", "quit"]}}
    assert spec["terminationGracePeriodSeconds"] == 120


def test_a_postStart_only_lifecycle_gains_the_drain_hook_beside_it() -> None:
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: web, image: nginx, ports: [{containerPort: 80}], lifecycle: {postStart: {exec: {command: [date]}}}}
"""
    obj, _ = inject_one(manifest)
    assert pod_spec_of(obj)["containers"][0]["lifecycle"] == {
        "postStart": {"exec": {"command": ["date"]}},
        "preStop": DRAIN_HOOK,
    }


def test_knative_gets_no_lifecycle_no_grace_period_and_no_sidecar_ports() -> None:
    obj, warnings = inject_one((DATA / "knative-seed-service-zh.yaml").read_text(), InjectOptions(native_sidecar=True))
    spec = pod_spec_of(obj)
    assert all("lifecycle" not in c for c in spec["containers"]), "Knative rejects lifecycle hooks"
    assert "terminationGracePeriodSeconds" not in spec, "Knative rejects it in a revision template"
    assert "initContainers" not in spec
    sidecar = sidecar_of(spec)
    assert "ports" not in sidecar, "Knative lets only the serving container declare ports"
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready?wait=900ms", "port": 8550}
    assert warnings == [
        "in.yaml: Service/runtime: --native-sidecar ignored: Knative takes no restartPolicy on containers",
        f"in.yaml: Service/runtime: {KNATIVE_MULTI_CONTAINER_PROBING}",
    ]


def test_knative_serving_container_without_probe_or_ports_gets_knatives_default_tcp_8080() -> None:
    manifest = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      containers:
      - image: ghcr.io/knative/helloworld-go
"""
    obj, _ = inject_one(manifest)
    assert sidecar_config(pod_spec_of(obj)) == {
        "containers": [{"name": "user-container", "readinessProbe": {"tcpSocket": {"port": 8080}}}]
    }
    # With a second container Knative would call it user-container-0; the name is fixed
    # so that the pod's container and the sidecar's /ready/<name> and metrics agree.
    assert pod_spec_of(obj)["containers"][0] == {"name": "user-container", "image": "ghcr.io/knative/helloworld-go"}


def test_native_sidecar_goes_first_in_init_containers_with_restart_policy_always() -> None:
    obj, _ = inject_one(RICH.read_text(), InjectOptions(native_sidecar=True))
    spec = pod_spec_of(obj)
    assert [c["name"] for c in spec["initContainers"]] == [SIDECAR_NAME, "migrate", "proxy"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert SIDECAR_NAME not in [c["name"] for c in spec["containers"]]


def test_a_job_without_native_sidecar_is_warned_that_its_pods_would_never_complete() -> None:
    manifest = """
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: busybox, ports: [{containerPort: 8080}]}]
"""
    _, warnings = inject_one(manifest)
    assert warnings == ["in.yaml: Job/once: a regular sidecar container keeps a Job's pods running;"
                        " use --native-sidecar (Kubernetes 1.29+)"]
    _, native_warnings = inject_one(manifest, InjectOptions(native_sidecar=True))
    assert native_warnings == []


def test_rewrite_liveness_routes_http_tcp_and_grpc_through_the_sidecar() -> None:
    obj, _ = inject_one(RICH.read_text(), InjectOptions(rewrite_liveness=True))
    spec = pod_spec_of(obj)
    web, grpc = spec["containers"][0], spec["containers"][1]
    assert web["livenessProbe"] == {
        "httpGet": {"path": "/live/web", "port": 8550},
        "periodSeconds": 10,
        "timeoutSeconds": 2,  # the sidecar's 1 s attempt, plus a second to answer with the reason
    }
    assert grpc["livenessProbe"] == {"httpGet": {"path": "/live/grpc", "port": 8550}, "timeoutSeconds": 2}
    entry = sidecar_config(spec)["containers"][0]
    assert entry["livenessProbe"] == {"tcpSocket": {"port": 9901}}, "named port resolved"
    reloaded = load_config(environ={CONFIG_ENV: sidecar_of(spec)["env"][0]["value"]})
    assert reloaded.containers[0].liveness == TcpSocketSpec(port=9901)
    assert reloaded.containers[1].liveness == GrpcSpec(port=9090)
    assert [c.liveness for c in reloaded.containers[2:]] == [None, None], "no livenessProbe, nothing routed"


def test_a_template_with_nothing_to_watch_is_left_alone_with_a_warning() -> None:
    text = (PEER_MANIFESTS / "k8s-exec-liveness.yaml").read_text()
    (doc,) = load_documents(text, "in.yaml")
    result, warnings = inject_object(doc, "in.yaml", InjectOptions())
    assert result == doc
    assert warnings[-1] == "in.yaml: Pod/liveness-exec: no container has a readinessProbe or a port to watch;" \
        " sidecar not injected"


def test_objects_without_pod_templates_pass_through_unchanged_and_in_order_inside_a_list() -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    pod = load_documents((PEER_MANIFESTS / "k8s-tcp-liveness-readiness.yaml").read_text(), "p")[0]
    listing = {"apiVersion": "v1", "kind": "List", "items": [config_map, pod, service]}
    result, _ = inject_object(listing, "in.json", InjectOptions())
    assert result["items"][0] == config_map and result["items"][2] == service
    assert sidecar_of(result["items"][1]["spec"])["image"] == DEFAULT_IMAGE == "localhost/readiness-sidecar:0.1.0"
    assert listing["items"][1] == pod and SIDECAR_NAME not in json.dumps(listing), "the input is not modified"


def test_an_already_injected_object_comes_back_equal() -> None:
    once, _ = inject_one(RICH.read_text(), InjectOptions(rewrite_liveness=True))
    again, warnings = inject_object(once, "in.yaml", InjectOptions(native_sidecar=True))
    assert again == once and again is not once
    assert warnings == []


def test_an_uninjectable_template_raises_one_config_error_line() -> None:
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: web, image: x, readinessProbe: {httpGet: {port: http}}}]
"""
    with pytest.raises(ConfigError) as caught:
        inject_one(manifest)
    assert str(caught.value) == (
        'in.yaml: Pod/web: container "web": readinessProbe.httpGet.port: named port "http" not found in ports'
    )


def test_loader_reads_exec_spec_from_the_config_inject_wrote() -> None:
    obj, _ = inject_one(RICH.read_text(), InjectOptions(exec_probes="sidecar"))
    reloaded = load_config(environ={CONFIG_ENV: sidecar_of(pod_spec_of(obj))["env"][0]["value"]})
    worker = [s for s in reloaded.containers if s.name == "worker"]
    assert worker[0].handler == ExecSpec(("/probes/ready", "--quick"))


# -- the command line -----------------------------------------------------------------



def test_cli_reads_stdin_writes_yaml_and_its_output_injects_to_the_same_bytes(sidecar_env: dict[str, str]) -> None:
    text = (DATA / "knative-seed-service-ja.yaml").read_text()
    first = run_cli("inject", stdin=text, env=sidecar_env)
    assert first.returncode == 0, first.stderr
    # The mode each readiness check got (docs/behaviour.md#probe-modes), then the warnings.
    assert first.stderr.splitlines() == [
        *(f'<stdin>: Service/runtime: container "{name}": readiness: aggressive mode: no periodSeconds (Knative)'
          for name in ("first-container", "second-container")),
        f"warning: {DEFAULT_IMAGE_WARNING}",
        f"warning: <stdin>: Service/runtime: {KNATIVE_MULTI_CONTAINER_PROBING}",
    ]
    assert first.stdout == inject_round_trip(text)
    second = run_cli("inject", "-f", "-", stdin=first.stdout, env=sidecar_env)
    assert (second.returncode, second.stdout) == (0, first.stdout)


def test_cli_multi_document_yaml_is_separated_by_dashes_and_json_stays_json(
    sidecar_env: dict[str, str], tmp_path: Path
) -> None:
    two = run_cli("inject", "-f", str(RICH), env=sidecar_env)
    both = (PEER_MANIFESTS / "k8s-tcp-liveness-readiness.yaml").read_text() + "\n---\n" + RICH.read_text()
    result = run_cli("inject", stdin=both, env=sidecar_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n---\n") == 1 and result.stdout.endswith(two.stdout)
    json_in = tmp_path / "pod.json"
    json_in.write_text(json.dumps(load_documents((PEER_MANIFESTS / "k8s-grpc-liveness.yaml").read_text(), "x")[0]))
    as_json = run_cli("inject", "-f", str(json_in), env=sidecar_env)
    assert as_json.returncode == 0, as_json.stderr
    pod = json.loads(as_json.stdout)
    assert sidecar_of(pod["spec"])["name"] == SIDECAR_NAME


def test_cli_missing_file_exits_2_with_one_line(sidecar_env: dict[str, str]) -> None:
    result = run_cli("inject", "-f", "missing.yaml", env=sidecar_env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "missing.yaml: cannot read: No such file or directory\n"


def test_cli_bad_yaml_exits_2_with_one_line(sidecar_env: dict[str, str]) -> None:
    result = run_cli("inject", stdin="kind: Pod\nspec: [unclosed\n", env=sidecar_env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("<stdin>: invalid YAML at line 3, column 1:")


def test_cli_refuses_lint_errors_unless_forced_and_never_writes_half_an_output(sidecar_env: dict[str, str]) -> None:
    grpc_named = (DATA / "lint" / "grpc-named-port.yaml").read_text()
    good = RICH.read_text()
    refused = run_cli("inject", stdin=good + "\n---\n" + grpc_named, env=sidecar_env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "grpc-named-port" in refused.stderr
    assert refused.stderr.splitlines()[-1] == "inject: refusing: 1 lint error(s) above; --force injects anyway"
    forced = run_cli("inject", "--force", stdin=good + "\n---\n" + grpc_named, env=sidecar_env)
    assert (forced.returncode, forced.stdout) == (2, ""), "the good document before it is not written either"
    assert forced.stderr.splitlines()[-1] == (
        '<stdin>: Pod/grpc-server: container "server": readinessProbe.grpc.port:'
        " must be a number, named ports are not allowed for grpc"
    )


def test_cli_image_flag_and_warnings_on_stderr(sidecar_env: dict[str, str]) -> None:
    result = run_cli("inject", "--image", "registry.example/rs:9", "-f", str(RICH), env=sidecar_env)
    assert result.returncode == 0
    spec = pod_spec_of(yaml.safe_load(result.stdout))
    assert sidecar_of(spec)["image"] == "registry.example/rs:9"
    assert 'warning: ' + str(RICH) + ': Deployment/shop: container "batch"' in result.stderr


def test_docs_before_and_after_is_the_real_output_of_inject() -> None:
    seed = DATA / "knative-seed-service-ja.yaml"
    docs = (REPO / "docs" / "inject.md").read_text()
    assert "```yaml\n" + seed.read_text().rstrip() + "\n```" in docs
    assert "```yaml\n" + inject_round_trip(seed.read_text()).rstrip() + "\n```" in docs
