"""`readiness-sidecar lint`: probe problems in manifests, one finding per line.

The loader validates only readiness probes, and stops at the first mistake; lint
reads every probe (readiness, liveness, startup) of every container with the same
schema structs and reports everything it finds. Rules: sidecar.k8s.lint_rules.
A pod template's `readiness-sidecar.io/lint-ignore` annotation drops the rules it lists.

    findings = lint_documents(read_manifest("svc.yaml", stdin, round_trip=True).docs, "svc.yaml")
    for finding in findings: print(finding)
    # svc.yaml:14: warning: Service/runtime: container "app": liveness-not-covered: livenessProbe (...) ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probes.spec import DEFAULT_HOST
from sidecar.config.containers import containers_from_document, probe_modes
from sidecar.config.documents import load_documents
from sidecar.config.pod_template import PodSpecRef, find_pod_specs, watched_containers, with_original_probes
from sidecar.contract import CONFIG_ENV, LINT_IGNORE_ANNOTATION, PROBE_HOST_POD_IP, SIDECAR_NAME
from sidecar.durations import parse_duration
from sidecar.errors import ConfigError, ErrorContext, join_field, quote
from sidecar.k8s.inject import sidecar_entry
from sidecar.k8s.lint_container import ContainerLint, Deadline, covers, field_line, field_problem, leading_field
from sidecar.k8s.lint_rules import RULES_BY_ID, Finding
from sidecar.k8s.options import InjectOptions
from sidecar.k8s.pod_settings import PodSettings, pod_settings
from sidecar.model import ContainerSpec

PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0  # Knative's config-deployment and a Deployment's default
# lint has no pod IP: under probe-host pod-ip this stands for it, in comparisons and in the
# targets messages show. The space makes it a host no probe can name (config.wire_text.is_host).
POD_IP_STAND_IN = "<pod IP>"
# Kinds whose pods run to completion: nothing routes traffic to them, so readiness means nothing.
RUN_TO_COMPLETION_KINDS = frozenset({"Job", "CronJob"})
# Any other restartPolicy is a pod that completes; a workload's template is always "Always".
LONG_RUNNING_RESTART_POLICY = "Always"

__all__ = ["covers", "lint_documents", "lint_template"]


def lint_documents(docs: list[Any], source: str, *, exec_probes: str = "kubelet") -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        try:
            refs = find_pod_specs(doc, source)
        except ConfigError as err:
            message = field_problem(err)
            line = field_line(doc, leading_field(message))
            findings.append(Finding(source, err.where, "", "invalid-manifest", message, line))
            continue
        for ref in refs:
            findings.extend(lint_template(ref, source, exec_probes=exec_probes))
    return findings


def lint_template(ref: PodSpecRef, source: str, *, exec_probes: str = "kubelet") -> list[Finding]:
    """Every finding of one pod template, less the rules its lint-ignore annotation lists."""
    ignored, findings = _lint_ignore(ref, source)
    findings.extend(_template_findings(ref, source, exec_probes))
    return [finding for finding in findings if finding.rule not in ignored]


def _template_findings(ref: PodSpecRef, source: str, exec_probes: str) -> list[Finding]:
    ctx = ErrorContext(source, ref.label)
    try:
        ref = with_original_probes(ref, ctx)  # lint what the author wrote, not Istio's rewrites
        watched = watched_containers(ref, ctx)
        deadline = _progress_deadline(ref, ctx)
        modes = None if ref.knative else probe_modes(ref, ctx, [container.name for container in watched])
        # The pod's own annotations (exec-probes, health-port) win over the flags, as in inject.
        settings = pod_settings(ref, ctx, InjectOptions(exec_probes=exec_probes))
    except ConfigError as err:
        return [_template_finding(ref, source, "invalid-manifest", field_problem(err))]
    host = _default_host(settings)
    injected = _injected_config(ref, host)
    findings: list[Finding] = []
    if injected is None and _takes_traffic(ref) and not any(c.entry.get("readinessProbe") for c in watched):
        findings.append(_no_readiness_probe(ref, source))
    for container in watched:
        if injected is not None and container.name == SIDECAR_NAME:
            continue
        aggressive = modes[container.name].aggressive if modes is not None else None
        lint = ContainerLint(ref, source, container, deadline, injected, aggressive, settings.health_port, host)
        findings.extend(lint.run(exec_probes=settings.exec_probes))
    return findings


def _template_finding(ref: PodSpecRef, source: str, rule: str, message: str) -> Finding:
    """A finding about the pod template, at the line of the field (from the object) it names."""
    return Finding(source, ref.label, "", rule, message, field_line(ref.obj, leading_field(message)))


def _takes_traffic(ref: PodSpecRef) -> bool:
    """A long-running core pod: Knative defaults a TCP readiness probe, and pods that complete take no traffic."""
    if ref.knative or ref.kind in RUN_TO_COMPLETION_KINDS:
        return False
    restart_policy = ref.pod_spec.get("restartPolicy", LONG_RUNNING_RESTART_POLICY)
    return bool(restart_policy == LONG_RUNNING_RESTART_POLICY)


def _no_readiness_probe(ref: PodSpecRef, source: str) -> Finding:
    # The kubelet counts a container without a readinessProbe ready once it runs (and its
    # startupProbe, if any, succeeded): kubernetes pkg/kubelet/prober/prober_manager.go,
    # UpdatePodStatus, "no readinessProbe -> always ready".
    return _template_finding(
        ref, source, "no-readiness-probe",
        f"{join_field(ref.field_prefix, 'containers')}: no container has a readinessProbe; the kubelet counts"
        " each one ready as soon as it starts, so the pod gets traffic before the app can serve it"
        " (inject gives a container with ports a TCP check in the sidecar)",
    )  # fmt: skip


def _lint_ignore(ref: PodSpecRef, source: str) -> tuple[frozenset[str], list[Finding]]:
    """The rule IDs the object's and the pod template's lint-ignore annotations list, and
    a finding for each listed ID that is not a rule."""
    ignored: set[str] = set()
    findings: list[Finding] = []
    prefix = ".".join(ref.path[:-1])  # "" for a Pod, whose template metadata is its own
    places = [("metadata", ref.metadata)]
    if ref.pod_metadata is not ref.metadata:
        places.append((join_field(prefix, "metadata"), ref.pod_metadata))
    for at, metadata in places:
        annotations = metadata.get("annotations") or {}
        if LINT_IGNORE_ANNOTATION not in annotations:
            continue
        value = annotations[LINT_IGNORE_ANNOTATION]
        field = f"{at}.annotations[{LINT_IGNORE_ANNOTATION}]"
        if not isinstance(value, str):
            message = f"{field}: expected a string of comma-separated rule IDs, got {quote(value)}"
            findings.append(_template_finding(ref, source, "invalid-manifest", message))
            continue
        for rule in (part.strip() for part in value.split(",")):
            if not rule:
                continue
            ignored.add(rule)
            if rule not in RULES_BY_ID:
                message = f"{field}: {quote(rule)} is not a lint rule (docs/lint.md lists them); it ignores nothing"
                findings.append(_template_finding(ref, source, "unknown-lint-ignore", message))
    return frozenset(ignored), findings


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


def _default_host(settings: PodSettings) -> str:
    """Where the pod's sidecar sends a probe that names no host, as lint can write it."""
    return POD_IP_STAND_IN if settings.probe_host == PROBE_HOST_POD_IP else DEFAULT_HOST


def _injected_config(ref: PodSpecRef, host: str) -> Mapping[str, ContainerSpec] | None:
    """For an injected template: the sidecar's view of each container (its config env), by name."""
    entry = sidecar_entry(ref.pod_spec)
    if entry is None:
        return None
    for env in entry.get("env") or []:
        if isinstance(env, dict) and env.get("name") == CONFIG_ENV and isinstance(env.get("value"), str):
            try:
                # str(): a round-trip read gives a ScalarString, which libyaml does not take.
                docs = load_documents(env["value"], CONFIG_ENV)
                loaded = containers_from_document(docs[0], ErrorContext(CONFIG_ENV), CONFIG_ENV, default_host=host)
            except (ConfigError, IndexError):
                return {}
            return {spec.name: spec for spec in loaded.containers}
    return {}
