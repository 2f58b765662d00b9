"""The lint rules (one ID, one default severity, one doc line each) and the finding type.

docs/lint.md is the long form of RULES; a test keeps the two in step.

    finding = Finding("pod.yaml", "Pod/web", "app", "grpc-named-port", "readinessProbe.grpc.port: ...", line=9)
    str(finding)  # 'pod.yaml:9: error: Pod/web: container "app": grpc-named-port: readinessProbe.grpc.port: ...'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sidecar.errors import quote

ERROR = "error"
WARNING = "warning"
# Lowest first: `--fail-on warning` fails on both, `--fail-on error` on errors only.
SEVERITIES = (WARNING, ERROR)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    summary: str


RULES: tuple[Rule, ...] = (
    Rule("liveness-not-covered", WARNING,
         "a livenessProbe check that the readinessProbe does not also cover"),
    # An error for Knative kinds; a warning for a Deployment (see docs/lint.md).
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
    Rule("no-readiness-probe", WARNING,
         "a long-running pod template in which no container has a readinessProbe"),
    Rule("initial-delay-use-startup-probe", WARNING,
         "a long initialDelaySeconds on readiness or liveness where a startupProbe fits"),
    Rule("liveness-window-shorter-than-readiness", WARNING,
         "a liveness failure window shorter than the readiness one: restarts before the pod leaves endpoints"),
    Rule("unknown-lint-ignore", WARNING,
         "a rule ID in the readiness-sidecar.io/lint-ignore annotation that is not a lint rule"),
)  # fmt: skip
RULES_BY_ID: Mapping[str, Rule] = MappingProxyType({rule.id: rule for rule in RULES})


@dataclass(frozen=True, slots=True)
class Finding:
    source: str  # the file, or <stdin>
    obj: str  # "Deployment/web"
    container: str  # "" for a finding about the pod template
    rule: str  # a key of RULES_BY_ID
    message: str  # starts with the field it is about
    line: int | None = None  # 1-based line of that field; None for JSON input or a field not in the text
    severity: str = ""  # "" takes the rule's; a rule may be milder for some objects

    def __post_init__(self) -> None:
        rule = RULES_BY_ID.get(self.rule)
        if rule is None:
            raise ValueError(f"unknown lint rule {self.rule!r}")
        if not self.severity:
            object.__setattr__(self, "severity", rule.severity)
        elif self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def at_least(self, severity: str) -> bool:
        """Whether this finding is `severity` or worse (`--fail-on`)."""
        return SEVERITIES.index(self.severity) >= SEVERITIES.index(severity)

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        container = f"container {quote(self.container)}" if self.container else ""
        parts = (where, self.severity, self.obj, container, self.rule, self.message)
        return ": ".join(part for part in parts if part)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "line": self.line,
            "object": self.obj,
            "container": self.container or None,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
        }
