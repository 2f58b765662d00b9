"""The examples say what the code does: the injected pods are inject's own output, byte for byte,
and the PodMonitor scrapes the port and path an injected sidecar serves metrics on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.contract import METRICS_PATH, METRICS_PORT, METRICS_PORT_NAME, SIDECAR_NAME, STATUS_ANNOTATION
from tests.conftest import REPO, run_cli

EXAMPLES = REPO / "examples"
# Each example that shows an injected pod, and the manifest as its author wrote it.
INJECTED_FROM = {
    "k8s/pod.yaml": "k8s/pod.input.yaml",
    "k8s/deployment.yaml": "k8s/deployment.input.yaml",
}
PODMONITOR = EXAMPLES / "prometheus" / "podmonitor.yaml"


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def _pod_metadata(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]


@pytest.mark.parametrize("example", list(INJECTED_FROM))
def test_an_injected_example_is_what_inject_makes_of_its_input(example: str, sidecar_env: dict[str, str]) -> None:
    source = INJECTED_FROM[example]
    done = run_cli("inject", "-f", f"examples/{source}", env=sidecar_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (EXAMPLES / example).read_text(), (
        f"examples/{example} is not what inject makes of examples/{source}; regenerate it with\n"
        f"  readiness-sidecar inject -f examples/{source} > examples/{example}"
    )


def test_every_example_of_an_injected_pod_is_checked_against_inject() -> None:
    """An example that shows an injected pod (inject's status annotation, or a container named as
    inject names the sidecar) must be in INJECTED_FROM."""
    claims = set()
    for path in sorted(EXAMPLES.rglob("*.y*ml")):
        for doc in _documents(path):
            if doc.get("kind") in _POD_KINDS and _looks_injected(doc):
                claims.add(path.relative_to(EXAMPLES).as_posix())
    assert claims == set(INJECTED_FROM)


_POD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def _looks_injected(doc: dict[str, Any]) -> bool:
    annotations = _pod_metadata(doc).get("annotations") or {}
    containers = [*_pod_spec(doc).get("containers", []), *_pod_spec(doc).get("initContainers", [])]
    return STATUS_ANNOTATION in annotations or any(c.get("name") == SIDECAR_NAME for c in containers)


def test_the_podmonitor_scrapes_the_port_and_path_inject_gives_the_sidecar() -> None:
    [monitor] = _documents(PODMONITOR)
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == (METRICS_PORT_NAME, METRICS_PATH)
    selector = monitor["spec"]["selector"]["matchLabels"]
    for example in INJECTED_FROM:
        [doc] = _documents(EXAMPLES / example)
        labels = _pod_metadata(doc)["labels"]
        assert selector.items() <= labels.items(), f"the PodMonitor selects the pods of examples/{example}"
        [sidecar] = [c for c in _pod_spec(doc)["containers"] if c["name"] == SIDECAR_NAME]
        ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
        assert ports.get(endpoint["port"]) == METRICS_PORT, f"examples/{example}'s sidecar serves metrics there"
