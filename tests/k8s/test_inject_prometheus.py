"""inject announces the metrics port with the prometheus.io annotations, unless the pod announces
its own exporter (docs/behaviour.md#being-found). Through the CLI, as a subprocess, and the webhook."""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import pytest

from sidecar.contract import METRICS_PORT_ANNOTATION, STATUS_ANNOTATION
from tests.k8s import test_webhook
from tests.k8s.test_inject_annotations import inject_cli
from tests.k8s.test_webhook import admission_review, patched

ANNOUNCED = {"prometheus.io/scrape": "true", "prometheus.io/port": "8552", "prometheus.io/path": "/metrics"}


def deployment(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {"app": "web"}}
    if annotations is not None:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"owner": "shop"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.com/app:1",
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                        }
                    ]
                },
            },
        },
    }


def inject(obj: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    done = inject_cli(obj, env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def template_annotations(obj: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = obj["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_inject_announces_the_metrics_port_on_the_pod_template_and_nowhere_else(sidecar_env: dict[str, str]) -> None:
    injected = inject(deployment(), sidecar_env)
    annotations = template_annotations(injected)
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == ANNOUNCED
    assert annotations[STATUS_ANNOTATION] == "injected"
    assert injected["metadata"]["annotations"] == {"owner": "shop"}, "the Deployment's own are not the pod's"
    sidecar = injected["spec"]["template"]["spec"]["containers"][-1]
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["rs-metrics"] == int(ANNOUNCED["prometheus.io/port"]), "the annotation names the port it serves"
    assert inject(injected, sidecar_env) == injected, "injecting again changes nothing"


def test_the_pods_metrics_port_annotation_moves_the_announced_port_and_off_announces_none(
    sidecar_env: dict[str, str],
) -> None:
    moved = template_annotations(inject(deployment({METRICS_PORT_ANNOTATION: "9464"}), sidecar_env))
    assert moved["prometheus.io/port"] == "9464"
    off = template_annotations(inject(deployment({METRICS_PORT_ANNOTATION: "off"}), sidecar_env))
    assert not any(key.startswith("prometheus.io/") for key in off), "no metrics port, nothing to scrape"


@pytest.mark.parametrize(
    "own",
    [
        # The app's own exporter: the pod can announce one endpoint, and it is the app's.
        {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        # Only a path, or scraping turned off on purpose: still the pod's decision.
        {"prometheus.io/path": "/custom"},
        {"prometheus.io/scrape": "false"},
        # Already through Istio's metrics merge: pilot-agent's port 15020, the app's originals in
        # ISTIO_PROMETHEUS_ANNOTATIONS (istio pkg/kube/inject/webhook.go, applyPrometheusMerge).
        {"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"},
    ],
    ids=["app-exporter", "path-only", "scrape-false", "istio-merged"],
)
def test_a_pod_that_announces_its_own_metrics_keeps_them(own: dict[str, str], sidecar_env: dict[str, str]) -> None:
    annotations = template_annotations(inject(deployment(dict(own)), sidecar_env))
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == own


# The webhook's fixtures: a trustme CA, its cert files, a client trusting it, a server and a session.
ca, tls_files, client_tls = test_webhook.ca, test_webhook.tls_files, test_webhook.client_tls
port, session = test_webhook.port, test_webhook.session


async def test_the_webhook_announces_the_same_annotations_on_a_pod(port: int, session: aiohttp.ClientSession) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": deployment()["spec"]["template"]["spec"],
    }
    async with session.post(f"https://127.0.0.1:{port}/mutate", json=admission_review(copy.deepcopy(pod))) as resp:
        assert resp.status == 200, await resp.text()
        response = (await resp.json())["response"]
    by_webhook = patched(copy.deepcopy(pod), response)
    announced = {k: v for k, v in by_webhook["metadata"]["annotations"].items() if k.startswith("prometheus.io/")}
    assert announced == ANNOUNCED
    own = {**pod, "metadata": {"name": "web", "annotations": {"prometheus.io/port": "9090"}}}
    async with session.post(f"https://127.0.0.1:{port}/mutate", json=admission_review(copy.deepcopy(own))) as resp:
        kept = patched(copy.deepcopy(own), (await resp.json())["response"])
    assert kept["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert "prometheus.io/scrape" not in kept["metadata"]["annotations"]
