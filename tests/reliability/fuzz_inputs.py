"""Hypothesis strategies for bad input, shared by the fuzz tests.

    @given(source=st.sampled_from(CORPUS), edits=EDITS)
    def test_x(source, edits): text = mutate(source.read_text(), edits)

    @given(obj=WORKLOADS)   # a Pod, Deployment, CronJob, Knative Service, List, ... with odd parts
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import strategies as st

from tests.conftest import REPO

# Files people write, from this repository: manifests of every kind and a containers file.
CORPUS = sorted(
    path
    for pattern in ("tests/data/**/*.yaml", "examples/k8s/*.yaml", "examples/compose/containers.yaml",
                    "examples/webhook/deployment.yaml")
    for path in REPO.glob(pattern)
)
# What YAML and the loader care about, so edits change structure, not only words.
EDIT_TEXT = st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@,?\n\t 0123456789abcHhPp/.~\\\x00é")),
                    max_size=6)
# (where, as a fraction of the text; how many characters to delete; what to insert)
EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8), EDIT_TEXT), min_size=1, max_size=5)


def fuzz_examples_per_test(default: int) -> int:
    """READINESS_SIDECAR_FUZZ_SCALE multiplies every fuzz test's examples (e.g. 10 for a long local run)."""
    return max(1, int(default * float(os.environ.get("READINESS_SIDECAR_FUZZ_SCALE", "1"))))


def mutate(text: str, edits: list[tuple[float, int, str]]) -> str:
    for where, delete, insert in edits:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + delete :]
    return text


# -- workloads with odd parts -------------------------------------------------------------------

ODD_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 70000), st.sampled_from([2**31, 2**64, 1.5, float("inf"), "", "x"]),
    st.text(max_size=5),
)
ODD = st.recursive(ODD_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                   max_leaves=6)
PORT_VALUES = st.one_of(st.sampled_from([8080, "8080", "http", "grpc", "nope", 0, 65536, -1, "", None]), ODD_SCALARS)
_HANDLERS = st.one_of(
    st.builds(lambda port, path: {"httpGet": {"port": port, "path": path}}, PORT_VALUES,
              st.sampled_from(["/", "/ready", "", "a b", "/\x00"])),
    st.builds(lambda port: {"tcpSocket": {"port": port}}, PORT_VALUES),
    st.builds(lambda port, service: {"grpc": {"port": port, "service": service}}, PORT_VALUES,
              st.sampled_from([None, "", "svc"])),
    st.sampled_from([{"exec": {"command": ["cat", "/tmp/ready"]}}, {"exec": {"command": []}},
                     {"exec": {"command": "cat"}}, {}, {"httpGet": {"port": 1}, "tcpSocket": {"port": 1}}]),
)
_TIMING_KEYS = st.sampled_from(["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                                "failureThreshold", "terminationGracePeriodSeconds"])
PROBES = st.one_of(
    st.builds(lambda handler, timing: {**handler, **timing}, _HANDLERS,
              st.dictionaries(_TIMING_KEYS, st.one_of(st.integers(-1, 1000), ODD_SCALARS), max_size=3)),
    ODD,
)
_LIFECYCLE = st.sampled_from([
    None, {"preStop": {"exec": {"command": ["sleep", "5"]}}},
    {"preStop": {"httpGet": {"path": "/wait-for-drain", "port": 8550}}}, {"preStop": None}, "x",
])  # fmt: skip
CONTAINERS = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["app", "db", "readiness-sidecar", "", "App"]), ODD_SCALARS)},
    optional={
        "image": st.sampled_from(["app:1", "", None]),
        "ports": st.one_of(
            st.lists(st.fixed_dictionaries({"containerPort": PORT_VALUES},
                                            optional={"name": st.sampled_from(["http", "grpc", "", "HTTP"])}),
                     max_size=2),
            ODD,
        ),
        "readinessProbe": PROBES, "livenessProbe": PROBES, "startupProbe": PROBES,
        "lifecycle": _LIFECYCLE, "restartPolicy": st.sampled_from(["Always", "Never", None]),
        "volumeMounts": st.sampled_from([[{"name": "probes", "mountPath": "/tmp"}], [], "x"]),
    },
)
POD_SPECS = st.one_of(
    st.fixed_dictionaries(
        {"containers": st.one_of(st.lists(CONTAINERS, max_size=3), ODD)},
        optional={"initContainers": st.lists(CONTAINERS, max_size=2),
                  "terminationGracePeriodSeconds": st.one_of(st.integers(-1, 100), ODD_SCALARS)},
    ),
    ODD,
)
_METADATA = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["web", "", None])}, optional={
        "annotations": st.one_of(st.dictionaries(
            st.sampled_from(["readiness-sidecar.io/inject", "readiness-sidecar.io/status",
                             "readiness-sidecar.io/not-required", "serving.knative.dev/progress-deadline", "a/b",
                             "readiness-sidecar.io/health-port", "readiness-sidecar.io/drain-seconds",
                             "readiness-sidecar.io/lint-ignore", "sidecar.istio.io/status"]),
            st.one_of(st.sampled_from(["true", "false", "injected", "app", "30s", "1h", "x", "9550", "{}"]),
                      ODD_SCALARS),
            max_size=3), ODD)}),
    ODD,
)
_KINDS = st.sampled_from([
    ("v1", "Pod"), ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"), ("batch/v1", "CronJob"), ("serving.knative.dev/v1", "Service"),
    ("serving.knative.dev/v1", "Revision"), ("v1", "ConfigMap"), ("v1", "List"), ("v2", "Pod"),
])  # fmt: skip


def _workload(kind: tuple[str, str], metadata: Any, pod_spec: Any, items: list[Any]) -> dict[str, Any]:
    api_version, name = kind
    template = {"metadata": metadata, "spec": pod_spec}
    spec: Any = {
        "Pod": pod_spec,
        "Revision": pod_spec,
        "CronJob": {"jobTemplate": {"spec": {"template": template}}},
        "ConfigMap": None,
    }.get(name, {"template": template})
    doc: dict[str, Any] = {"apiVersion": api_version, "kind": name, "metadata": metadata}
    if name == "List":
        doc["items"] = items
    elif spec is not None:
        doc["spec"] = spec
    return doc


WORKLOADS = st.builds(
    _workload, _KINDS, _METADATA, POD_SPECS,
    st.lists(st.builds(_workload, _KINDS, _METADATA, POD_SPECS, st.just([])), max_size=2),
)
