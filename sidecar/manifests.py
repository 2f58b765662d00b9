"""Multi-document YAML/JSON manifests, and the pod templates inside them.

Shared by config loading, `inject` and `lint`. A `PodSpecRef` holds the very dicts
of the parsed document, so `inject` can rewrite a pod spec in place and dump the
documents again.

    docs = load_documents(text, "pod.yaml")
    refs = [ref for doc in docs for ref in find_pod_specs(doc, "pod.yaml")]
    refs[0].label, refs[0].path  # ("Deployment/web", ("spec", "template", "spec"))
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sidecar.error_context import ErrorContext, field_name, one_line, quote
from sidecar.errors import ConfigError

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

# libyaml (about 6x faster here, and `check` must start fast) composes nested
# nodes by recursing in C: tens of thousands of levels crash the process instead
# of raising. Every level of nesting costs at least one of these characters, so
# text with few of them is provably shallow; other text goes to the pure-Python
# loader, which raises RecursionError instead.
_NESTING_CHARS = "[{-?:"
C_LOADER_MAX_NESTING_CHARS = 5000
# The pure-Python scanner reads ahead through every unclosed `[`/`{` at about 65 us
# each before the composer gives up, so deep flow nesting is refused up front.
# Real manifests nest a dozen levels; brackets inside quoted strings only make
# the estimate err high, and by hundreds only for a pathological text.
MAX_FLOW_NESTING = 500
_BRACKETS = re.compile(r"[\[\]{}]")


def load_documents(text: str, source: str) -> list[Any]:
    """Every non-empty document in `text` (JSON, YAML or flow-style YAML)."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        # Real JSON parses as JSON: YAML 1.1 rejects some valid JSON (surrogate-pair
        # escapes) and reads 1e5 as a string. Anything else falls through to YAML.
        try:
            doc = json.loads(stripped)
        except (ValueError, RecursionError):
            pass
        else:
            return [] if doc is None else [doc]
    import yaml  # here, so `--probe` and SERVING_READINESS_PROBE alone never pay for it

    c_loader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    loader = yaml.SafeLoader
    if c_loader is not None and _nesting_bound(text) <= C_LOADER_MAX_NESTING_CHARS:
        loader = c_loader
    elif _flow_nesting_bound(text) > MAX_FLOW_NESTING:
        raise ConfigError(source, "", "", "invalid YAML: nested too deeply")
    try:
        return [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = one_line(err.problem or err.context or "syntax error")
        if mark is None:
            raise ConfigError(source, "", "", f"invalid YAML: {problem}") from None
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(source, "", "", f"invalid YAML at {where}: {problem}") from None
    except yaml.YAMLError as err:  # ReaderError: control characters and the like
        raise ConfigError(source, "", "", f"invalid YAML: {one_line(str(err))}") from None
    except (ValueError, OverflowError, UnicodeError) as err:
        # Constructors raise these for a timestamp like 2020-13-45 or a 5000-digit int.
        raise ConfigError(source, "", "", f"invalid YAML: {one_line(str(err))}") from None
    except RecursionError:
        raise ConfigError(source, "", "", "invalid YAML: nested too deeply") from None


def _nesting_bound(text: str) -> int:
    return sum(text.count(char) for char in _NESTING_CHARS)


def _flow_nesting_bound(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKETS.finditer(text):
        depth = depth + 1 if bracket[0] in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


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
