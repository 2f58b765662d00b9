"""Container fragments to ContainerSpecs: from a pod template, or from a containers list.

The two differ in small, deliberate ways. In a manifest a container may lack a
name (Knative names it), `required` comes from the pod annotation
`readiness-sidecar.io/not-required`, and a container with neither a probe nor
ports is left to the kubelet with a warning. In a containers list a name is
required, `required:` is a field, and such a container is an error: someone wrote
it down in order to have it watched.

    loaded = containers_from_pod(ref, "pod.yaml")
    [spec.name for spec in loaded.containers]  # ["user-container"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from probes.spec import HandlerSpec, TcpSocketSpec
from sidecar.config.names import check_container_name
from sidecar.config.pod_template import PodSpecRef, watched_containers
from sidecar.config.probe import ContainerContext, container_context, convert_probe, pod_container_context
from sidecar.config.schema import CONTAINER_FIELDS, CONTAINERS_FILE_FIELDS
from sidecar.contract import NOT_REQUIRED_ANNOTATION
from sidecar.errors import ErrorContext, field_name, quote, type_words
from sidecar.model import DEFAULT_TIMEOUT_SECONDS, ContainerSpec, ProbeTiming


@dataclass(frozen=True, slots=True)
class LoadedContainers:
    """What one config source contributed."""

    label: str  # for SidecarConfig.sources: "pod.yaml", "--probe x2", ...
    containers: tuple[ContainerSpec, ...] = ()
    warnings: Mapping[str, str] = field(default_factory=dict)  # container name -> one line


def containers_from_pod(ref: PodSpecRef, source: str) -> LoadedContainers:
    """The containers of one pod template: spec.containers, then native sidecars."""
    ctx = ErrorContext(source, ref.label)
    watched = watched_containers(ref, ctx)
    not_required = _not_required(ref, ctx, [container.name for container in watched])
    specs: list[ContainerSpec] = []
    warnings: dict[str, str] = {}
    for container in watched:
        container_ctx = ctx.within(f"container {quote(container.name)}")
        _check_fields(container.entry, container_ctx, CONTAINER_FIELDS)
        ports = pod_container_context(ref, container, container_ctx)
        required = container.name not in not_required
        spec = _container(container.entry, container.name, container_ctx, ports, required, in_manifest=True)
        if spec.handler is None:
            warnings[container.name] = container_ctx.message("", "no readinessProbe and no ports; left to the kubelet")
        specs.append(spec)
    return LoadedContainers(source, tuple(specs), warnings)


def containers_from_document(doc: object, ctx: ErrorContext, origin: str) -> LoadedContainers:
    """A containers file (or READINESS_SIDECAR_CONFIG): a mapping with `containers:`."""
    if not isinstance(doc, dict):
        raise ctx.error("", f"expected a mapping with `containers:`, got {type_words(doc)}")
    for key in doc:
        if key != "containers":
            raise ctx.error(field_name(key), "unknown field (a containers file has only `containers:`)")
    entries = doc.get("containers")
    if not isinstance(entries, list):
        raise ctx.error("containers", f"expected a list, got {type_words(entries)}")
    if not entries:
        raise ctx.error("containers", "must list at least one container")
    specs: dict[str, ContainerSpec] = {}
    for index, entry in enumerate(entries):
        at = f"containers[{index}]"
        if not isinstance(entry, dict):
            raise ctx.error(at, f"expected a mapping, got {type_words(entry)}")
        if entry.get("name") is None:
            raise ctx.error(f"{at}.name", "required")
        name = check_container_name(entry["name"], ctx, f"{at}.name")
        container_ctx = ctx.within(f"container {quote(name)}")
        if name in specs:
            raise container_ctx.error("", "duplicate container name")
        _check_fields(entry, container_ctx, CONTAINERS_FILE_FIELDS)
        ports = container_context(entry, container_ctx, knative=False, fallback=None)
        required = entry.get("required", True)
        if not isinstance(required, bool):
            raise container_ctx.error("required", f"expected true or false, got {type_words(required)}")
        specs[name] = _container(entry, name, container_ctx, ports, required, in_manifest=False)
    return LoadedContainers(origin, tuple(specs.values()))


def _check_fields(entry: dict[Any, Any], ctx: ErrorContext, allowed: frozenset[str]) -> None:
    for key in entry:
        if key not in allowed:
            raise ctx.error(field_name(key), "unknown field")


def _container(
    entry: dict[Any, Any], name: str, ctx: ErrorContext, ports: ContainerContext, required: bool, *, in_manifest: bool
) -> ContainerSpec:
    liveness: HandlerSpec | None = None
    liveness_timeout = DEFAULT_TIMEOUT_SECONDS
    if not in_manifest and entry.get("livenessProbe") is not None:
        # Only a containers file hands liveness to the sidecar (inject --rewrite-liveness
        # writes it there); in a manifest liveness belongs to the kubelet.
        liveness, liveness_timing = convert_probe(
            entry["livenessProbe"], ctx, "livenessProbe", ContainerContext(ports.named, env=ports.env)
        )
        liveness_timeout = liveness_timing.timeout

    def spec(handler: HandlerSpec | None, timing: ProbeTiming | None = None) -> ContainerSpec:
        return ContainerSpec(name, handler, timing or ProbeTiming(), required, liveness, liveness_timeout)

    if entry.get("readinessProbe") is not None:
        return spec(*convert_probe(entry["readinessProbe"], ctx, "readinessProbe", ports))
    if ports.serving is not None:
        # Knative's default readiness probe: TCP on the container's first port.
        return spec(TcpSocketSpec(port=ports.serving))
    if in_manifest:
        return spec(None)
    raise ctx.error("", "no readinessProbe and no ports: nothing to probe")


def _not_required(ref: PodSpecRef, ctx: ErrorContext, known: list[str]) -> set[str]:
    at = f"annotations[{NOT_REQUIRED_ANNOTATION}]"
    value = ref.annotation(NOT_REQUIRED_ANNOTATION)
    if value is None:
        return set()
    if not isinstance(value, str):
        raise ctx.error(at, f'expected a string like "name1,name2", got {type_words(value)}')
    names = {name.strip() for name in value.split(",") if name.strip()}
    for name in sorted(names):
        if name not in known:
            raise ctx.error(at, f"unknown container {quote(name)} (containers: {', '.join(known)})")
    return names
