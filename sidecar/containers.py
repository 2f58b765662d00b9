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
from dataclasses import dataclass, field, replace
from typing import Any

from probes.spec import HandlerSpec, TcpSocketSpec
from sidecar.container_names import (
    INIT_CONTAINER_NAME,
    USER_CONTAINER_NAME,
    check_container_name,
    knative_default_names,
)
from sidecar.error_context import ErrorContext, field_name, join_field, quote, type_words
from sidecar.k8s_schema import CONTAINER_FIELDS, CONTAINERS_FILE_FIELDS, ContainerPort, to_struct
from sidecar.manifests import PodSpecRef
from sidecar.probe_conversion import PortContext, convert_probe
from sidecar.spec import DEFAULT_TIMEOUT_SECONDS, ContainerSpec, ProbeTiming

# Pod annotation listing containers that are reported but never gate readiness.
NOT_REQUIRED_ANNOTATION = "readiness-sidecar.io/not-required"

# Knative's default user port: a Knative pod that declares no ports at all serves
# on 8080 from its first container, and that is where Knative's default probe goes.
KNATIVE_DEFAULT_USER_PORT = 8080

# Native sidecars: init containers with this restartPolicy keep running with the pod.
SIDECAR_RESTART_POLICY = "Always"


@dataclass(frozen=True, slots=True)
class LoadedContainers:
    """What one config source contributed."""

    label: str  # for SidecarConfig.sources: "pod.yaml", "--probe x2", ...
    containers: tuple[ContainerSpec, ...] = ()
    warnings: Mapping[str, str] = field(default_factory=dict)  # container name -> one line


@dataclass(frozen=True, slots=True)
class _Rules:
    in_manifest: bool
    knative: bool = False
    # Knative's serving port for a container that declares none (see KNATIVE_DEFAULT_USER_PORT).
    knative_fallback_port: int | None = None


def containers_from_pod(ref: PodSpecRef, source: str) -> LoadedContainers:
    """The containers of one pod template: spec.containers, then native sidecars."""
    ctx = ErrorContext(source, ref.label)
    containers = _entries(ref.pod_spec, "containers", ctx, ref.field_prefix, required=True)
    inits = _entries(ref.pod_spec, "initContainers", ctx, ref.field_prefix, required=False)
    prefix = ref.field_prefix
    given = [_given_name(e, ctx, join_field(prefix, f"containers[{i}].name")) for i, e in enumerate(containers)]
    given_init = [_given_name(e, ctx, join_field(prefix, f"initContainers[{i}].name")) for i, e in enumerate(inits)]
    taken = {name for name in [*given, *given_init] if name}
    names = knative_default_names(given, taken, USER_CONTAINER_NAME)
    init_names = knative_default_names(given_init, taken, INIT_CONTAINER_NAME)
    _check_unique([*names, *init_names], ctx)

    watched = list(zip(names, containers, strict=True)) + [
        (name, entry)
        for name, entry in zip(init_names, inits, strict=True)
        if entry.get("restartPolicy") == SIDECAR_RESTART_POLICY
    ]
    not_required = _not_required(ref, ctx, [name for name, _ in watched])
    any_ports = any(entry.get("ports") for entry in containers)
    specs: list[ContainerSpec] = []
    warnings: dict[str, str] = {}
    for index, (name, entry) in enumerate(watched):
        serves_by_default = ref.knative and index == 0 and not any_ports
        rules = _Rules(
            in_manifest=True,
            knative=ref.knative,
            knative_fallback_port=KNATIVE_DEFAULT_USER_PORT if serves_by_default else None,
        )
        spec, warning = _container(entry, name, ctx.within(f"container {quote(name)}"), rules, f"{source}: {ref.label}")
        specs.append(replace(spec, required=name not in not_required))
        if warning:
            warnings[name] = warning
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
    specs: list[ContainerSpec] = []
    for index, entry in enumerate(entries):
        at = f"containers[{index}]"
        if not isinstance(entry, dict):
            raise ctx.error(at, f"expected a mapping, got {type_words(entry)}")
        if entry.get("name") is None:
            raise ctx.error(f"{at}.name", "required")
        name = check_container_name(entry["name"], ctx, f"{at}.name")
        _check_unique([*(spec.name for spec in specs), name], ctx)
        spec, _ = _container(entry, name, ctx.within(f"container {quote(name)}"), _Rules(False), origin)
        specs.append(spec)
    return LoadedContainers(origin, tuple(specs))


def _container(
    entry: dict[Any, Any], name: str, ctx: ErrorContext, rules: _Rules, origin: str
) -> tuple[ContainerSpec, str | None]:
    allowed = CONTAINER_FIELDS if rules.in_manifest else CONTAINERS_FILE_FIELDS
    for key in entry:
        if key not in allowed:
            raise ctx.error(field_name(key), "unknown field")
    raw_ports = entry.get("ports")
    ports = [] if raw_ports is None else to_struct(raw_ports, list[ContainerPort], ctx, "ports")
    named: dict[str, int] = {}
    for index, port in enumerate(ports):
        if port.name and port.name in named:
            raise ctx.error(f"ports[{index}].name", f"duplicate port name {quote(port.name)}")
        if port.name:
            named[port.name] = port.container_port
    serving_port = ports[0].container_port if ports else rules.knative_fallback_port

    required = entry.get("required", True)
    if not isinstance(required, bool):
        raise ctx.error("required", f"expected true or false, got {type_words(required)}")

    liveness: HandlerSpec | None = None
    liveness_timeout = DEFAULT_TIMEOUT_SECONDS
    if not rules.in_manifest and entry.get("livenessProbe") is not None:
        # Only a containers file hands liveness to the sidecar (inject --rewrite-liveness
        # writes it there); in a manifest liveness belongs to the kubelet.
        liveness, liveness_timing = convert_probe(entry["livenessProbe"], ctx, "livenessProbe", PortContext(named))
        liveness_timeout = liveness_timing.timeout

    def spec(handler: HandlerSpec | None, timing: ProbeTiming | None = None) -> ContainerSpec:
        return ContainerSpec(name, handler, timing or ProbeTiming(), required, origin, liveness, liveness_timeout)

    if entry.get("readinessProbe") is not None:
        port_context = PortContext(named, serving_port if rules.knative else None)
        return spec(*convert_probe(entry["readinessProbe"], ctx, "readinessProbe", port_context)), None
    if serving_port is not None:
        # Knative's default readiness probe: TCP on the container's first port.
        return spec(TcpSocketSpec(port=serving_port)), None
    if rules.in_manifest:
        return spec(None), ctx.message("", "no readinessProbe and no ports; left to the kubelet")
    raise ctx.error("", "no readinessProbe and no ports: nothing to probe")


def _entries(
    pod_spec: Mapping[str, Any], key: str, ctx: ErrorContext, prefix: str, *, required: bool
) -> list[dict[Any, Any]]:
    at = join_field(prefix, key)
    value = pod_spec.get(key)
    if value is None:
        if required:
            raise ctx.error(at, "required")
        return []
    if not isinstance(value, list):
        raise ctx.error(at, f"expected a list, got {type_words(value)}")
    if required and not value:
        raise ctx.error(at, "must list at least one container")
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ctx.error(f"{at}[{index}]", f"expected a mapping, got {type_words(entry)}")
    return value


def _given_name(entry: Mapping[Any, Any], ctx: ErrorContext, field_path: str) -> str | None:
    name = entry.get("name")
    if name is None or name == "":
        return None  # Knative names it
    return check_container_name(name, ctx, field_path)


def _check_unique(names: list[str], ctx: ErrorContext) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ctx.within(f"container {quote(name)}").error("", "duplicate container name")
        seen.add(name)


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
