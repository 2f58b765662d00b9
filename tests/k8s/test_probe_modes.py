"""One mode policy for core pods, whether inject reads the manifest or the webhook the pod.

The API server defaults every probe field before mutating admission (kubernetes
pkg/apis/core/v1/defaults.go, SetDefaults_Probe: periodSeconds 10, timeoutSeconds 1,
successThreshold 1, failureThreshold 3), so a webhook can never see that periodSeconds was
absent. In a core pod the mode therefore comes from the pod's annotations alone, and both
paths give a workload the same sidecar config (docs/behaviour.md#probe-modes).
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from sidecar.config.documents import load_documents
from sidecar.config.loader import load_config
from sidecar.contract import CONFIG_ENV
from sidecar.errors import ConfigError
from sidecar.k8s.admission import review_reply
from sidecar.k8s.inject import InjectOptions, inject_object, sidecar_entry
from tests.conftest import sidecar_cmd


def deployment(probe: str, annotations: str = "") -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{{annotations}}}
    spec:
      containers:
        - name: app
          image: example.com/app:1
          ports: [{{containerPort: 8080}}]
          readinessProbe: {probe}
        - name: db
          image: example.com/db:1
          ports: [{{containerPort: 5432}}]
"""


def as_the_api_server_sends_it(manifest: str) -> dict[str, Any]:
    """The Pod a ReplicaSet creates from the template, with the defaults the API server fills in."""
    (doc,) = load_documents(manifest, "deploy.yaml")
    template = copy.deepcopy(doc["spec"]["template"])
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {**template["metadata"], "generateName": "web-5d4f8b-", "namespace": "shop"},
                           "spec": template["spec"]}
    spec = pod["spec"]
    spec.update(restartPolicy="Always", terminationGracePeriodSeconds=30, dnsPolicy="ClusterFirst",
                schedulerName="default-scheduler", securityContext={})
    for container in spec["containers"]:
        container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log",
                         terminationMessagePolicy="File", resources={})
        for port in container.get("ports", []):
            port.setdefault("protocol", "TCP")
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            for field, default in (("periodSeconds", 10), ("timeoutSeconds", 1), ("successThreshold", 1),
                                   ("failureThreshold", 3)):
                if not probe.get(field):
                    probe[field] = default
            if "httpGet" in probe:
                probe["httpGet"].setdefault("path", "/")
                probe["httpGet"].setdefault("scheme", "HTTP")
    return pod


def sidecar_config(pod_spec: dict[str, Any]) -> Any:
    entry = sidecar_entry(pod_spec)
    assert entry is not None
    (env,) = entry["env"]
    assert env["name"] == CONFIG_ENV
    return json.loads(env["value"])


def through_inject(manifest: str) -> Any:
    (doc,) = load_documents(manifest, "deploy.yaml")
    injected, _ = inject_object(doc, "deploy.yaml", InjectOptions())
    return sidecar_config(injected["spec"]["template"]["spec"])


def through_the_webhook(manifest: str) -> Any:
    pod = as_the_api_server_sends_it(manifest)
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "operation": "CREATE", "namespace": "shop", "object": pod}}
    response = review_reply(json.dumps(review).encode(), InjectOptions()).review["response"]
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    return sidecar_config(patched["spec"])


CASES = {
    "no periodSeconds": deployment("{httpGet: {path: /ready, port: 8080}}"),
    "periodSeconds 5": deployment("{httpGet: {path: /ready, port: 8080}, periodSeconds: 5, failureThreshold: 2}"),
    "opted out, pod": deployment("{httpGet: {path: /ready, port: 8080}}", "readiness-sidecar.io/probe-mode: kubelet"),
    "opted out, one container": deployment("{tcpSocket: {port: 8080}, periodSeconds: 5}",
                                           "readiness-sidecar.io/kubelet-probes: app"),
    "kubelet pod, one aggressive": deployment(
        "{tcpSocket: {port: 8080}, periodSeconds: 3}",
        "readiness-sidecar.io/probe-mode: kubelet, readiness-sidecar.io/aggressive-probes: db",
    ),
}


@pytest.mark.parametrize("manifest", CASES.values(), ids=CASES.keys())
def test_the_webhook_and_inject_give_the_same_sidecar_config(manifest: str) -> None:
    assert through_the_webhook(manifest) == through_inject(manifest)


def modes_of(manifest: str) -> dict[str, float]:
    """Each container's period as the injected sidecar will run it."""
    config = load_config(environ={CONFIG_ENV: json.dumps(through_inject(manifest))})
    return {spec.name: spec.timing.period for spec in config.containers}


def test_what_each_annotation_gives() -> None:
    # period 0 is aggressive mode; a kubelet-mode probe keeps its own period, or the API server's 10.
    assert modes_of(CASES["no periodSeconds"]) == {"app": 0, "db": 0}
    assert modes_of(CASES["periodSeconds 5"]) == {"app": 0, "db": 0}
    assert modes_of(CASES["opted out, pod"]) == {"app": 10, "db": 10}
    assert modes_of(CASES["opted out, one container"]) == {"app": 5, "db": 0}
    assert modes_of(CASES["kubelet pod, one aggressive"]) == {"app": 3, "db": 0}


def test_a_kubelet_mode_probe_keeps_its_thresholds_and_timeout_exactly() -> None:
    manifest = deployment("{tcpSocket: {port: 8080}, periodSeconds: 7, timeoutSeconds: 2, successThreshold: 2,"
                          " failureThreshold: 4, initialDelaySeconds: 3}", "readiness-sidecar.io/probe-mode: kubelet")
    (app, _) = load_config(environ={CONFIG_ENV: json.dumps(through_inject(manifest))}).containers
    timing = app.timing
    assert (timing.period, timing.timeout, timing.success_threshold, timing.failure_threshold,
            timing.initial_delay) == (7, 2, 2, 4, 3)


def test_knative_keeps_absent_means_aggressive() -> None:
    service = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: s}
spec:
  template:
    spec:
      containers:
        - {image: a, ports: [{containerPort: 8080}], readinessProbe: {tcpSocket: {}}}
        - {name: side, image: b, readinessProbe: {tcpSocket: {port: 9000}, periodSeconds: 5}}
"""
    (doc,) = load_documents(service, "svc.yaml")
    injected, _ = inject_object(doc, "svc.yaml", InjectOptions())
    entries = {e["name"]: e for e in sidecar_config(injected["spec"]["template"]["spec"])["containers"]}
    assert "periodSeconds" not in entries["user-container-0"]["readinessProbe"], "aggressive"
    assert entries["side"]["readinessProbe"]["periodSeconds"] == 5


def test_inject_says_which_mode_each_probe_got_and_why(tmp_path: Path, sidecar_env: dict[str, str]) -> None:
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(deployment("{tcpSocket: {port: 8080}, periodSeconds: 5}",
                                   "readiness-sidecar.io/aggressive-probes: app"))
    done = subprocess.run(sidecar_cmd("inject", "--image", "registry.example/rs:1", "-f", str(manifest)),
                          env=sidecar_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["kind"] == "Deployment"
    assert done.stderr.splitlines() == [
        f'{manifest}: Deployment/web: container "app": readiness: aggressive mode (periodSeconds 5 not used):'
        " named in readiness-sidecar.io/aggressive-probes",
        f'{manifest}: Deployment/web: container "db": readiness: aggressive mode: the default for a pod;'
        " readiness-sidecar.io/probe-mode: kubelet keeps the kubelet's schedule",
    ]


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ("readiness-sidecar.io/probe-mode: fast",
         'annotations[readiness-sidecar.io/probe-mode]: must be aggressive or kubelet, got "fast"'),
        ("readiness-sidecar.io/kubelet-probes: ghost",
         'annotations[readiness-sidecar.io/kubelet-probes]: unknown container "ghost" (containers: app, db)'),
        ("readiness-sidecar.io/kubelet-probes: app, readiness-sidecar.io/aggressive-probes: app",
         'annotations[readiness-sidecar.io/kubelet-probes]: container "app" is also in'
         " readiness-sidecar.io/aggressive-probes; name it in one"),
    ],
    ids=["bad-mode", "unknown-container", "in-both-lists"],
)
def test_a_bad_mode_annotation_is_one_line(annotations: str, problem: str, tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(deployment("{tcpSocket: {port: 8080}}", annotations))
    with pytest.raises(ConfigError) as caught:
        load_config(config_file=str(tmp_path / "deploy.yaml"), environ={})
    assert str(caught.value) == f"{tmp_path / 'deploy.yaml'}: Deployment/web: {problem}"
