"""The pod templates inside manifests, and the containers of each that the sidecar watches.

Shared by config loading, `inject` and `lint`, so all three agree on which objects hold
pods, which containers count (containers, then restartable init containers) and what
Knative calls the unnamed ones. A `PodSpecRef` holds the very dicts of the parsed
document, so `inject` can rewrite a pod spec in place and dump the documents again.

    refs = [ref for doc in docs for ref in find_pod_specs(doc, "pod.yaml")]
    refs[0].label, refs[0].path  # ("Deployment/web", ("spec", "template", "spec"))
    [c.name for c in watched_containers(refs[0], ErrorContext("pod.yaml", refs[0].label))]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from sidecar.config import istio
from sidecar.config.names import INIT_CONTAINER_NAME, USER_CONTAINER_NAME, check_container_name, knative_default_names
from sidecar.errors import ConfigError, ErrorContext, field_name, join_field, quote, type_words

# Native sidecars: init containers with this restartPolicy keep running with the pod.
SIDECAR_RESTART_POLICY = "Always"

KNATIVE_SERVING_GROUP = "serving.knative.dev"
KNATIVE_KINDS = frozenset({"Service", "Configuration", "Revision"})

# kind -> (API groups it lives in, path from the object to its pod spec).
# "" is the core group; "extensions" is where old manifests still keep workloads.
_POD_SPEC_PATHS: Mapping[str, tuple[frozenset[str], tuple[str, ...]]] = MappingProxyType(
    {
        "Pod": (frozenset({""}), ("spec",)),
        "PodTemplate": (frozenset({""}), ("template", "spec")),
        "ReplicationController": (frozenset({""}), ("spec", "template", "spec")),
        "Deployment": (frozenset({"apps", "extensions"}), ("spec", "template", "spec")),
        "StatefulSet": (frozenset({"apps"}), ("spec", "template", "spec")),
        "DaemonSet": (frozenset({"apps", "extensions"}), ("spec", "template", "spec")),
        "ReplicaSet": (frozenset({"apps", "extensions"}), ("spec", "template", "spec")),
        "Job": (frozenset({"batch"}), ("spec", "template", "spec")),
        "CronJob": (frozenset({"batch"}), ("spec", "jobTemplate", "spec", "template", "spec")),
    }
)
_KNATIVE_POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Service": ("spec", "template", "spec"),
        "Configuration": ("spec", "template", "spec"),
        "Revision": ("spec",),
    }
)

# A `List` inside a `List` is legal but rare; the bound stops self-referencing
# YAML aliases (`&l {kind: List, items: [*l]}`) from recursing forever.
MAX_LIST_NESTING = 8

def api_group(api_version: str) -> str:
    """The API group of an apiVersion: "apps/v1" -> "apps", "v1" -> "" (the core group)."""
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def is_knative(kind: str, api_version: str) -> bool:
    """Whether this is a Knative Serving object with a pod template."""
    return kind in KNATIVE_KINDS and api_group(api_version) == KNATIVE_SERVING_GROUP


@dataclass(frozen=True, slots=True)
class PodSpecRef:
    """One pod template found in a document, pointing into the parsed document itself.

    ref = find_pod_specs(doc, "pod.yaml")[0]
    ref.pod_spec["containers"].append(sidecar)  # edits `doc` in place
    ref.annotation("readiness-sidecar.io/not-required")
    """

    kind: str
    api_version: str
    name: str  # metadata.name, "" if absent
    obj: dict[str, Any]  # the object that owns the template (the Pod, the Deployment...)
    path: tuple[str, ...]  # from `obj` to the pod spec
    pod_spec: dict[str, Any]  # the same dict as obj at `path`
    metadata: Mapping[str, Any]  # obj.metadata ({} if absent)
    pod_metadata: Mapping[str, Any]  # the pod template's metadata (obj.metadata for a Pod)

    @property
    def label(self) -> str:
        """How messages name the object: "Deployment/web"."""
        return _label(self.kind, self.name)

    @property
    def knative(self) -> bool:
        return is_knative(self.kind, self.api_version)

    @property
    def field_prefix(self) -> str:
        """The pod spec's path as a field path, e.g. "spec.template.spec"."""
        return ".".join(self.path)

    def annotation(self, key: str) -> Any:
        """An annotation of the pod: the template's wins over the owning object's."""
        for metadata in (self.pod_metadata, self.metadata):
            annotations = metadata.get("annotations") or {}
            if key in annotations:
                return annotations[key]
        return None


def find_pod_specs(doc: Any, source: str) -> list[PodSpecRef]:
    """The pod templates of one document; [] for objects that have none.

    Raises ConfigError when an object of a kind that must have a pod template is
    malformed on the way to it (e.g. a Deployment whose `spec.template` is a list).
    """
    return _find(doc, source, depth=0)


def _find(doc: Any, source: str, depth: int) -> list[PodSpecRef]:
    if not isinstance(doc, dict):
        return []
    kind, api_version = doc.get("kind"), doc.get("apiVersion", "")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return []
    if kind == "List":
        return _find_in_list(doc, source, depth)
    path = _pod_spec_path(kind, api_version)
    if path is None:
        return []
    metadata = _mapping_at(doc, ("metadata",), ErrorContext(source, kind), required=False)
    name = metadata.get("name", "")
    if not isinstance(name, str):
        raise ErrorContext(source, kind).error("metadata.name", f"must be a string, got {quote(name)}")
    ctx = ErrorContext(source, _label(kind, name))
    pod_spec = _mapping_at(doc, path, ctx, required=True)
    pod_metadata = metadata if len(path) == 1 else _mapping_at(doc, (*path[:-1], "metadata"), ctx, required=False)
    for meta, meta_path in (
        (metadata, "metadata"),
        (pod_metadata, ".".join((*path[:-1], "metadata"))),
    ):
        annotations = meta.get("annotations")
        if annotations is not None and not isinstance(annotations, dict):
            raise ctx.error(f"{meta_path}.annotations", "must be a mapping")
    return [
        PodSpecRef(kind, api_version, name, doc, path, pod_spec, metadata, pod_metadata),
    ]


def _label(kind: str, name: str) -> str:
    return f"{kind}/{field_name(name)}" if name else kind


def _find_in_list(doc: dict[str, Any], source: str, depth: int) -> list[PodSpecRef]:
    if depth >= MAX_LIST_NESTING:
        raise ConfigError(source, "List", "items", f"Lists nested more than {MAX_LIST_NESTING} deep")
    items = doc.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(source, "List", "items", "must be a list")
    return [ref for item in items for ref in _find(item, source, depth + 1)]


def _pod_spec_path(kind: str, api_version: str) -> tuple[str, ...] | None:
    if is_knative(kind, api_version):
        return _KNATIVE_POD_SPEC_PATHS[kind]
    known = _POD_SPEC_PATHS.get(kind)
    if known is None:
        return None
    groups, path = known
    # Without an apiVersion the kind alone decides; with one, a CRD that reuses a
    # built-in kind name (a volcano Job, say) is not ours to read.
    if api_version and api_group(api_version) not in groups:
        return None
    return path


def _mapping_at(doc: dict[str, Any], path: tuple[str, ...], ctx: ErrorContext, *, required: bool) -> dict[str, Any]:
    node: Any = doc
    for depth, key in enumerate(path):
        node = node.get(key)
        field = ".".join(path[: depth + 1])
        if node is None:
            if required:
                raise ctx.error(field, "required")
            return {}
        if not isinstance(node, dict):
            raise ctx.error(field, "must be a mapping")
    result: dict[str, Any] = node
    return result


@dataclass(frozen=True, slots=True)
class WatchedContainer:
    """One container of a pod template that the sidecar reports on."""

    name: str  # as given, or as Knative's defaulting names an unnamed one
    entry: dict[str, Any]  # the very dict of the document
    index: int  # its position in spec.containers or spec.initContainers
    in_containers: bool  # in spec.containers (a user container), not a native sidecar
    field: str  # its field path, e.g. "spec.template.spec.containers[0]"


def watched_containers(ref: PodSpecRef, ctx: ErrorContext) -> list[WatchedContainer]:
    """spec.containers, then restartable init containers (native sidecars), named as Knative does.

    Istio's own containers (istio-proxy) are left out: they belong to Istio's injector, which
    keeps their probes with the kubelet. ConfigError for a malformed container list, a bad
    name or a name used twice.
    """
    prefix = ref.field_prefix
    containers = _entries(ref.pod_spec, "containers", ctx, prefix, required=True)
    inits = _entries(ref.pod_spec, "initContainers", ctx, prefix, required=False)
    taken: set[str] = set()
    given = _given_names(containers, join_field(prefix, "containers"), ctx, taken)
    given_init = _given_names(inits, join_field(prefix, "initContainers"), ctx, taken)
    names = knative_default_names(given, taken, USER_CONTAINER_NAME)
    init_names = knative_default_names(given_init, taken, INIT_CONTAINER_NAME)
    owned = istio_owned(ref, ctx)
    watched = [
        WatchedContainer(name, entry, index, True, join_field(prefix, f"containers[{index}]"))
        for index, (name, entry) in enumerate(zip(names, containers, strict=True))
        if name not in owned
    ]
    watched.extend(
        WatchedContainer(name, entry, index, False, join_field(prefix, f"initContainers[{index}]"))
        for index, (name, entry) in enumerate(zip(init_names, inits, strict=True))
        if entry.get("restartPolicy") == SIDECAR_RESTART_POLICY and name not in owned
    )
    return watched


def with_original_probes(ref: PodSpecRef, ctx: ErrorContext) -> PodSpecRef:
    """The pod template as its author wrote the probes, for reading: where Istio's injector
    pointed them at pilot-agent, the originals from ISTIO_KUBE_APP_PROBERS are put back.

    The same ref when there is nothing to restore. The view shares everything else with the
    document, so it must not be edited (inject edits `ref` itself).
    """
    owned = istio_owned(ref, ctx)
    if not owned:
        return ref
    port = istio.status_port(ref.annotation(istio.STATUS_PORT_ANNOTATION), ctx)
    restored = istio.restore_app_probes(ref.pod_spec, owned, port, ctx)
    return ref if restored is None else replace(ref, pod_spec=restored)


def istio_owned(ref: PodSpecRef, ctx: ErrorContext) -> frozenset[str]:
    """The containers Istio's injector added to this pod template (none if it has not injected it)."""
    return istio.istio_containers(_istio_status(ref), ctx)


def _istio_status(ref: PodSpecRef) -> Any:
    """Istio's status annotation: on the pod template, or on the way to it (`istioctl kube-inject`
    writes a CronJob's on spec.jobTemplate.metadata)."""
    value = ref.annotation(istio.STATUS_ANNOTATION)
    node: Any = ref.obj
    for key in ref.path[:-2]:
        if value is not None or not isinstance(node, dict):
            break
        node = node.get(key)
        metadata = node.get("metadata") if isinstance(node, dict) else None
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict):
            value = annotations.get(istio.STATUS_ANNOTATION)
    return value


def _entries(
    pod_spec: Mapping[str, Any], key: str, ctx: ErrorContext, prefix: str, *, required: bool
) -> list[dict[str, Any]]:
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


def _given_names(entries: list[dict[str, Any]], at: str, ctx: ErrorContext, taken: set[str]) -> list[str | None]:
    """Each entry's name (None where Knative names it), adding them to `taken`; ConfigError for a repeat."""
    names: list[str | None] = []
    for index, entry in enumerate(entries):
        field = f"{at}[{index}].name"
        raw = entry.get("name")
        if raw is None or raw == "":
            names.append(None)
            continue
        name = check_container_name(raw, ctx, field)
        if name in taken:
            raise ctx.error(field, f"duplicate container name {quote(name)}")
        taken.add(name)
        names.append(name)
    return names
