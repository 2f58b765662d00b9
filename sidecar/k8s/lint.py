"""`readiness-sidecar lint`: probe problems in manifests, one finding per line.

The loader validates only readiness probes, and stops at the first mistake; lint
reads every probe (readiness, liveness, startup) of every container with the same
schema structs and reports everything it finds. Rules: sidecar.k8s.lint_rules.

    findings = lint_documents(load_documents(text, "svc.yaml"), "svc.yaml")
    for finding in findings: print(finding)
    # svc.yaml: Service/runtime: container "app": liveness-not-covered: livenessProbe (...) ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.config.containers import containers_from_document, probe_modes
from sidecar.config.documents import load_documents
from sidecar.config.pod_template import PodSpecRef, find_pod_specs, watched_containers, with_original_probes
from sidecar.contract import CONFIG_ENV, SIDECAR_NAME
from sidecar.durations import parse_duration
from sidecar.errors import ConfigError, ErrorContext, quote
from sidecar.k8s.inject import sidecar_entry
from sidecar.k8s.lint_container import ContainerLint, Deadline, covers, field_problem
from sidecar.k8s.lint_rules import Finding
from sidecar.model import ContainerSpec

PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0  # Knative's config-deployment and a Deployment's default

__all__ = ["covers", "lint_documents", "lint_template"]


def lint_documents(docs: list[Any], source: str, *, exec_probes: str = "kubelet") -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        try:
            refs = find_pod_specs(doc, source)
        except ConfigError as err:
            findings.append(Finding(source, err.where, "", "invalid-manifest", field_problem(err)))
            continue
        for ref in refs:
            findings.extend(lint_template(ref, source, exec_probes=exec_probes))
    return findings


def lint_template(ref: PodSpecRef, source: str, *, exec_probes: str = "kubelet") -> list[Finding]:
    ctx = ErrorContext(source, ref.label)
    try:
        ref = with_original_probes(ref, ctx)  # lint what the author wrote, not Istio's rewrites
        watched = watched_containers(ref, ctx)
        deadline = _progress_deadline(ref, ctx)
        modes = None if ref.knative else probe_modes(ref, ctx, [container.name for container in watched])
    except ConfigError as err:
        return [Finding(source, ref.label, "", "invalid-manifest", field_problem(err))]
    injected = _injected_config(ref)
    findings: list[Finding] = []
    for container in watched:
        if injected is not None and container.name == SIDECAR_NAME:
            continue
        aggressive = modes[container.name].aggressive if modes is not None else None
        lint = ContainerLint(ref, source, container, deadline, injected, aggressive)
        findings.extend(lint.run(exec_probes=exec_probes))
    return findings


def _progress_deadline(ref: PodSpecRef, ctx: ErrorContext) -> Deadline | None:
    """Knative's progress deadline (annotation, else 600 s); a Deployment's progressDeadlineSeconds."""
    value = ref.annotation(PROGRESS_DEADLINE_ANNOTATION)
    if value is not None:
        at = f"annotations[{PROGRESS_DEADLINE_ANNOTATION}]"
        if not isinstance(value, str):
            raise ctx.error(at, f'expected a duration string like "600s", got {quote(value)}')
        try:
            return Deadline(parse_duration(value), f"{PROGRESS_DEADLINE_ANNOTATION} {value}")
        except ValueError as err:
            raise ctx.error(at, str(err)) from None
    if ref.knative:
        return Deadline(DEFAULT_PROGRESS_DEADLINE_SECONDS, "Knative's default")
    if ref.kind == "Deployment":
        spec = ref.obj.get("spec") or {}
        seconds = spec.get("progressDeadlineSeconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            return Deadline(float(seconds), "spec.progressDeadlineSeconds")
        return Deadline(DEFAULT_PROGRESS_DEADLINE_SECONDS, "the Deployment default")
    return None  # a Pod, Job or StatefulSet has no deadline to miss


def _injected_config(ref: PodSpecRef) -> Mapping[str, ContainerSpec] | None:
    """For an injected template: the sidecar's view of each container (its config env), by name."""
    entry = sidecar_entry(ref.pod_spec)
    if entry is None:
        return None
    for env in entry.get("env") or []:
        if isinstance(env, dict) and env.get("name") == CONFIG_ENV and isinstance(env.get("value"), str):
            try:
                docs = load_documents(env["value"], CONFIG_ENV)
                loaded = containers_from_document(docs[0], ErrorContext(CONFIG_ENV), CONFIG_ENV)
            except (ConfigError, IndexError):
                return {}
            return {spec.name: spec for spec in loaded.containers}
    return {}
