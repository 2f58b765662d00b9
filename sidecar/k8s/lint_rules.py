"""The lint rules (one ID, one severity, one doc line each) and the finding type.

docs/lint.md is the long form of RULES; a test keeps the two in step.

    finding = Finding("pod.yaml", "Pod/web", "app", "grpc-named-port", "readinessProbe.grpc.port: ...")
    str(finding)  # 'pod.yaml: Pod/web: container "app": grpc-named-port: readinessProbe.grpc.port: ...'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sidecar.errors import quote

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    summary: str


RULES: tuple[Rule, ...] = (
    Rule("liveness-not-covered", WARNING,
         "a livenessProbe check that the readinessProbe does not also cover"),
    Rule("startup-exceeds-progress-deadline", ERROR,
         "a startupProbe whose worst case reaches the progress deadline"),
    Rule("custom-prestop", WARNING,
         "a custom preStop hook, which the sidecar's drain replaces"),
    Rule("sidecar-probe-without-port", ERROR,
         "a Knative sidecar (non-serving) container's readinessProbe without a port"),
    Rule("grpc-named-port", ERROR,
         "a grpc probe with a named port"),
    Rule("timeout-not-below-period", WARNING,
         "a probe whose timeoutSeconds is at or over its periodSeconds"),
    Rule("success-threshold-not-one", ERROR,
         "successThreshold other than 1 on a livenessProbe or startupProbe"),
    Rule("named-port-not-found", ERROR,
         "a probe port name that the container's ports do not declare"),
    Rule("multiple-handlers", ERROR,
         "two or more handlers in one probe"),
    Rule("unknown-probe-field", ERROR,
         "a field corev1.Probe does not have (often a typo)"),
    Rule("invalid-probe", ERROR,
         "anything else in a probe the kubelet or the sidecar would reject"),
    Rule("invalid-manifest", ERROR,
         "a pod template lint cannot read (containers, ports, names, annotations)"),
    Rule("exec-not-in-sidecar-image", WARNING,
         "with --exec-probes sidecar: an exec command the sidecar image may not have"),
)  # fmt: skip
RULES_BY_ID: Mapping[str, Rule] = MappingProxyType({rule.id: rule for rule in RULES})


@dataclass(frozen=True, slots=True)
class Finding:
    source: str  # the file, or <stdin>
    obj: str  # "Deployment/web"
    container: str  # "" for a finding about the pod template
    rule: str  # a key of RULES_BY_ID
    message: str  # starts with the field it is about

    def __post_init__(self) -> None:
        if self.rule not in RULES_BY_ID:
            raise ValueError(f"unknown lint rule {self.rule!r}")

    @property
    def severity(self) -> str:
        return RULES_BY_ID[self.rule].severity

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def __str__(self) -> str:
        container = f"container {quote(self.container)}" if self.container else ""
        return ": ".join(part for part in (self.source, self.obj, container, self.rule, self.message) if part)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "object": self.obj,
            "container": self.container or None,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
        }
