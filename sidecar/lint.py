"""`readiness-sidecar lint`: probe problems in manifests, one finding per line.

The loader validates only readiness probes, and stops at the first mistake; lint
reads every probe (readiness, liveness, startup) of every container with the same
k8s_schema structs and reports everything it finds. Rules: sidecar.lint_rules.

    findings = lint_documents(load_documents(text, "svc.yaml"), "svc.yaml")
    for finding in findings: print(finding)
    # svc.yaml: Service/runtime: container "app": liveness-not-covered: livenessProbe (...) ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from sidecar.config import CONFIG_ENV
from sidecar.container_names import (
    INIT_CONTAINER_NAME,
    USER_CONTAINER_NAME,
    check_container_name,
    knative_default_names,
)
from sidecar.containers import SIDECAR_RESTART_POLICY, containers_from_document
from sidecar.durations import parse_duration
from sidecar.error_context import ErrorContext, quote
from sidecar.errors import ConfigError
from sidecar.inject import is_injected
from sidecar.lint_container import ContainerLint, Deadline, covers, field_problem
from sidecar.lint_rules import Finding
from sidecar.manifest_io import read_manifest
from sidecar.manifests import PodSpecRef, find_pod_specs, load_documents
from sidecar.sidecar_container import SIDECAR_NAME
from sidecar.spec import ContainerSpec

PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0  # Knative's config-deployment and a Deployment's default

__all__ = ["covers", "lint_documents", "lint_template", "run_lint_command"]


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
    try:
        watched = list(_watched(ref, ErrorContext(source, ref.label)))
        deadline = _progress_deadline(ref, ErrorContext(source, ref.label))
    except ConfigError as err:
        return [Finding(source, ref.label, "", "invalid-manifest", field_problem(err))]
    injected = _injected_config(ref)
    findings: list[Finding] = []
    for index, name, entry, in_containers in watched:
        if injected is not None and name == SIDECAR_NAME:
            continue
        container = ContainerLint(ref, source, index, name, entry, deadline, injected)
        findings.extend(container.run(in_containers=in_containers, exec_probes=exec_probes))
    return findings


def _watched(ref: PodSpecRef, ctx: ErrorContext) -> Iterator[tuple[int, str, dict[str, Any], bool]]:
    """(index, name, entry, in spec.containers) for containers and native sidecars, named as Knative does."""
    groups = []
    for key, required in (("containers", True), ("initContainers", False)):
        entries = ref.pod_spec.get(key)
        at = f"{ref.field_prefix}.{key}"
        if entries is None and not required:
            entries = []
        if not isinstance(entries, list) or (required and not entries):
            raise ctx.error(at, "must be a non-empty list" if required else "must be a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ctx.error(f"{at}[{i}]", "must be a mapping")
        groups.append(entries)
    given: list[list[str | None]] = [[], []]
    taken: set[str] = set()
    for group, key, names_given in zip(groups, ("containers", "initContainers"), given, strict=True):
        for i, entry in enumerate(group):
            at = f"{ref.field_prefix}.{key}[{i}].name"
            if entry.get("name") is None or entry.get("name") == "":
                names_given.append(None)  # Knative names it
                continue
            name = check_container_name(entry["name"], ctx, at)
            if name in taken:
                raise ctx.error(at, f"duplicate container name {quote(name)}")
            taken.add(name)
            names_given.append(name)
    names = knative_default_names(given[0], taken, USER_CONTAINER_NAME)
    init_names = knative_default_names(given[1], taken, INIT_CONTAINER_NAME)
    for index, (name, entry) in enumerate(zip(names, groups[0], strict=True)):
        yield index, name, entry, True
    for offset, (name, entry) in enumerate(zip(init_names, groups[1], strict=True)):
        if entry.get("restartPolicy") == SIDECAR_RESTART_POLICY:
            yield len(names) + offset, name, entry, False


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
    if not is_injected(ref.pod_spec):
        return None
    for key in ("containers", "initContainers"):
        for entry in ref.pod_spec.get(key) or []:
            if isinstance(entry, dict) and entry.get("name") == SIDECAR_NAME:
                for env in entry.get("env") or []:
                    if isinstance(env, dict) and env.get("name") == CONFIG_ENV and isinstance(env.get("value"), str):
                        try:
                            docs = load_documents(env["value"], CONFIG_ENV)
                            loaded = containers_from_document(docs[0], ErrorContext(CONFIG_ENV), CONFIG_ENV)
                        except (ConfigError, IndexError):
                            return {}
                        return {spec.name: spec for spec in loaded.containers}
    return {}


def run_lint_command(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.filename, sys.stdin.buffer)
    findings = lint_documents(manifest.docs, manifest.source, exec_probes=args.exec_probes)
    errors = sum(finding.is_error for finding in findings)
    if args.format == "json":
        doc = {
            "findings": [finding.to_json() for finding in findings],
            "errors": errors,
            "warnings": len(findings) - errors,
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        for finding in findings:
            print(finding)
        if findings:
            print(f"{errors} error(s), {len(findings) - errors} warning(s)", file=sys.stderr)
    return 1 if errors else 0
