"""`readiness-sidecar inject`: add the sidecar to every pod template of a manifest.

Per pod template the containers' readiness probes move into the sidecar's
READINESS_SIDECAR_CONFIG (what `sidecar.config` loads back, named ports resolved),
and the pod's readiness becomes the sidecar's aggregated `/ready`. The webhook
calls `inject_object` so admission and the CLI give the same result.

    injected, warnings = inject_object(deployment, "web.yaml", InjectOptions())
    inject_object(injected, "web.yaml", InjectOptions())[0] == injected  # idempotent
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from probes.spec import ExecSpec
from sidecar.config.containers import LoadedContainers, containers_from_pod
from sidecar.config.documents import copy_document, remove_key
from sidecar.config.encode import compact_json, containers_document
from sidecar.config.names import container_named
from sidecar.config.pod_template import PodSpecRef, WatchedContainer, find_pod_specs, watched_containers
from sidecar.config.probe import convert_probe, pod_container_context
from sidecar.config.schema import HANDLER_KEYS, handler_keys
from sidecar.contract import (
    DEFAULT_DRAIN_SECONDS,
    DRAIN_PATH,
    IMAGE_ANNOTATION,
    ROUTED_PROBE_PATHS,
    SIDECAR_NAME,
    STATUS_ANNOTATION,
    STATUS_INJECTED,
)
from sidecar.errors import ErrorContext, quote
from sidecar.k8s.istio import exclude_before_istio, route_through_pilot_agent, runs_probe
from sidecar.k8s.options import InjectOptions
from sidecar.k8s.pod_settings import STOP_SECONDS, pod_settings
from sidecar.k8s.sidecar_container import announce_metrics, sidecar_container
from sidecar.k8s.sidecar_image import mount_holding, shared_mount
from sidecar.model import LIVENESS, ROUTED_CHECK_FIELDS, ContainerSpec

# The kubelet waits a little longer for /live and /startup than the sidecar's own attempt, so a
# slow check comes back as a 503 with its reason instead of a bare kubelet timeout.
LIVE_TIMEOUT_MARGIN_SECONDS = 1
# The preStop hook blocks for the drain; the app then needs time to stop (a drain-seconds
# annotation sizes it from its own drain: PodSettings.grace_seconds).
MIN_GRACE_SECONDS = int(DEFAULT_DRAIN_SECONDS) + STOP_SECONDS
WORKLOADS_THAT_COMPLETE = frozenset({"Job", "CronJob"})
# Handlers the sidecar can run for an app that listens on localhost only; an exec probe
# stays with the kubelet, since it must run in the app's own container.
REWRITABLE_HANDLERS = ("httpGet", "tcpSocket", "grpc")

KUBELET_MANAGED = "exec probe left to the kubelet, and no port for the sidecar to check instead: kubelet-managed"
NATIVE_IGNORED_FOR_KNATIVE = "--native-sidecar ignored: Knative takes no restartPolicy on containers"
ISTIO_RUNS_PROBE = "left to Istio's pilot-agent, which already runs it from inside the pod (docs/istio.md)"
JOB_NEEDS_NATIVE = "a regular sidecar container keeps a Job's pods running; use --native-sidecar (Kubernetes 1.29+)"
# Knative always checks the serving container's readiness (its default is TCP on the serving
# port), so with the sidecar's own readinessProbe a revision has two probed containers. Knative
# rejects probes on a non-serving container unless this flag is on; with it, queue-proxy probes
# every container's readiness in parallel (knative/serving#14853, config/core/configmaps/features.yaml).
KNATIVE_MULTI_CONTAINER_PROBING = (
    "more than one container is probed (the serving container and the sidecar's readinessProbe): Knative"
    " accepts and probes them all only with multi-container-probing: enabled in the knative-serving"
    " config-features ConfigMap"
)

__all__ = [
    "InjectOptions",
    "check_pod_settings",
    "default_image_used",
    "inject_documents",
    "inject_object",
    "is_injected",
    "probe_mode_lines",
    "sidecar_entry",
]


def inject_object(obj: Any, source: str, options: InjectOptions) -> tuple[Any, list[str]]:
    """Return (a deep copy of obj with every pod template injected, warnings). Objects without a pod template come
    back equal to the input. Already injected templates (a container named SIDECAR_NAME exists) are unchanged.
    Raises ConfigError (one line) for input it cannot inject."""
    result = copy_document(obj)
    warnings: list[str] = []
    for ref in find_pod_specs(result, source):
        warnings.extend(_inject_template(ref, source, options))
    return result, warnings


def inject_documents(docs: Sequence[Any], source: str, options: InjectOptions) -> tuple[list[Any], list[str]]:
    """inject_object over every document of a file, in order."""
    injected: list[Any] = []
    warnings: list[str] = []
    for doc in docs:
        result, doc_warnings = inject_object(doc, source, options)
        injected.append(result)
        warnings.extend(doc_warnings)
    return injected, warnings


def sidecar_entry(pod_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The container inject added (a container or init container named SIDECAR_NAME), if any."""
    return container_named(pod_spec, SIDECAR_NAME)


def is_injected(pod_spec: dict[str, Any]) -> bool:
    return sidecar_entry(pod_spec) is not None


def probe_mode_lines(docs: Sequence[Any], source: str, options: InjectOptions) -> list[str]:
    """One line per container the sidecar would watch: the mode its readiness check gets, and why."""
    return [
        line
        for doc in docs
        for ref in find_pod_specs(doc, source)
        if not is_injected(ref.pod_spec)
        for line in _sidecar_view(ref, source, _exec_probes(ref, source, options)).modes.values()
    ]


def check_pod_settings(docs: Sequence[Any], source: str, options: InjectOptions) -> None:
    """Read every pod template's settings annotations first: a bad value is bad input (ConfigError,
    exit 2) that --force can't inject past, so it must not pass for a lint error."""
    for doc in docs:
        for ref in find_pod_specs(doc, source):
            if not is_injected(ref.pod_spec):
                pod_settings(ref, ErrorContext(source, ref.label), options)


def default_image_used(before: Sequence[Any], after: Sequence[Any], source: str, options: InjectOptions) -> bool:
    """Whether inject gave some template (injected now, in `after`) DEFAULT_IMAGE because nothing named one."""
    if options.image is not None:
        return False
    for old, new in zip(before, after, strict=True):
        for old_ref, new_ref in zip(find_pod_specs(old, source), find_pod_specs(new, source), strict=True):
            added = not is_injected(old_ref.pod_spec) and is_injected(new_ref.pod_spec)
            if added and new_ref.annotation(IMAGE_ANNOTATION) is None:
                return True
    return False


def _exec_probes(ref: PodSpecRef, source: str, options: InjectOptions) -> str:
    return pod_settings(ref, ErrorContext(source, ref.label), options).exec_probes


def _sidecar_view(ref: PodSpecRef, source: str, exec_probes: str) -> LoadedContainers:
    """The pod as the sidecar will watch it: an exec probe the kubelet keeps is invisible to
    it, so it falls back to a TCP check on the container's port."""
    keep_exec = exec_probes == "kubelet"
    view = replace(ref, pod_spec=_without_exec_readiness(ref.pod_spec)) if keep_exec else ref
    return containers_from_pod(view, source)


def _inject_template(ref: PodSpecRef, source: str, options: InjectOptions) -> list[str]:
    pod_spec = ref.pod_spec
    if is_injected(pod_spec):
        return []
    ctx = ErrorContext(source, ref.label)
    settings = pod_settings(ref, ctx, options)
    keep_exec = settings.exec_probes == "kubelet"
    loaded = _sidecar_view(ref, source, settings.exec_probes)
    watched = watched_containers(ref, ctx)
    pairs = list(zip(loaded.containers, watched, strict=True))

    warnings = []
    for spec, container in pairs:
        if spec.name not in loaded.warnings:
            continue
        if keep_exec and _exec_only(container.entry.get("readinessProbe")):
            where = ctx.within(f"container {quote(spec.name)}")
            warnings.append(where.message("readinessProbe", KUBELET_MANAGED))
        else:
            warnings.append(loaded.warnings[spec.name])
    if not any(spec.observed for spec, _ in pairs):
        warnings.append(ctx.message("", "no container has a readinessProbe or a port to watch; sidecar not injected"))
        return warnings

    if ref.knative:
        _fix_knative_names(watched)
    specs: list[ContainerSpec] = []
    for spec, container in pairs:
        entry = container.entry
        probe = entry.get("readinessProbe")
        if probe is not None and not (keep_exec and _exec_only(probe)):
            remove_key(entry, "readinessProbe")
        if container.in_containers and not ref.knative:
            _add_drain_hook(entry, settings.health_port)
        if not spec.observed:
            continue
        if options.rewrite_liveness:
            where = ctx.within(f"container {quote(spec.name)}")
            with_istio = [field for field in ROUTED_PROBE_PATHS if runs_probe(ref, entry, field, ctx)]
            warnings.extend(where.message(field, ISTIO_RUNS_PROBE) for field in with_istio)
            spec = _rewrite_liveness(ref, container, spec, where, settings.health_port, leave=with_istio)
        specs.append(spec)

    native = options.native_sidecar and not ref.knative
    if options.native_sidecar and ref.knative:
        warnings.append(ctx.message("", NATIVE_IGNORED_FOR_KNATIVE))
    if not native and ref.kind in WORKLOADS_THAT_COMPLETE:
        warnings.append(ctx.message("", JOB_NEEDS_NATIVE))
    mounts = _exec_mounts(pairs) if not keep_exec else []
    added = sidecar_container(
        settings,
        compact_json(containers_document(specs)),
        declare_ports=not ref.knative,
        native=native,
        volume_mounts=mounts,
    )
    if native:
        pod_spec["initContainers"] = [added, *(pod_spec.get("initContainers") or [])]
    else:
        pod_spec["containers"].append(added)
    if ref.knative:
        warnings.append(ctx.message("", KNATIVE_MULTI_CONTAINER_PROBING))
    else:
        _cover_drain(pod_spec, settings.grace_seconds)
    annotations = _pod_annotations(ref)
    annotations[STATUS_ANNOTATION] = STATUS_INJECTED
    announce_metrics(annotations, settings)
    warnings.extend(route_through_pilot_agent(ref, settings.health_port, ctx))
    exclude_before_istio(ref, annotations, settings.health_port, ctx)
    return warnings


def _exec_only(probe: Any) -> bool:
    return handler_keys(probe) == ["exec"]


def _without_exec_readiness(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of the pod spec whose containers keep no exec-only readinessProbe."""
    view = dict(pod_spec)
    for key in ("containers", "initContainers"):
        entries = pod_spec.get(key)
        if isinstance(entries, list):
            view[key] = [
                {k: v for k, v in entry.items() if k != "readinessProbe"}
                if isinstance(entry, dict) and _exec_only(entry.get("readinessProbe"))
                else entry
                for entry in entries
            ]
    return view


def _fix_knative_names(watched: Sequence[WatchedContainer]) -> None:
    """Name unnamed containers as the sidecar reports them.

    Knative names an unnamed container `user-container` only while it is alone; with
    the sidecar beside it, it would become `user-container-0`, and the sidecar's
    /ready/<name> and metrics would name a container the pod does not have.
    """
    for container in watched:
        entry = container.entry
        if not entry.get("name"):
            rest = [(k, v) for k, v in entry.items() if k != "name"]
            entry.clear()
            entry["name"] = container.name
            entry.update(rest)


def _add_drain_hook(entry: dict[str, Any], health_port: int) -> None:
    """preStop: wait for the sidecar's drain, unless the container has its own preStop."""
    hook = {"httpGet": {"path": DRAIN_PATH, "port": health_port}}
    lifecycle = entry.get("lifecycle")
    if lifecycle is None:
        entry["lifecycle"] = {"preStop": hook}
    elif isinstance(lifecycle, dict) and lifecycle.get("preStop") is None:
        lifecycle["preStop"] = hook


def _cover_drain(pod_spec: dict[str, Any], needed: int) -> None:
    grace = pod_spec.get("terminationGracePeriodSeconds")
    too_short = isinstance(grace, int) and not isinstance(grace, bool) and grace < needed
    if grace is None or too_short:  # absent means the API default, 30 s
        pod_spec["terminationGracePeriodSeconds"] = needed


def _rewrite_liveness(
    ref: PodSpecRef,
    container: WatchedContainer,
    spec: ContainerSpec,
    ctx: ErrorContext,
    health_port: int,
    leave: Sequence[str] = (),
) -> ContainerSpec:
    """Point an httpGet/tcpSocket/grpc livenessProbe and startupProbe at the sidecar's /live/<name> and
    /startup/<name>, as Istio's /app-health/<name>/livez|startupz (pkg/kube/inject/app_probe.go); the sidecar
    keeps the original checks in its config and runs them. The kubelet's own timing stays on the probe."""
    entry = container.entry
    for field, route in ROUTED_PROBE_PATHS.items():
        if field in leave:
            continue  # Istio's pilot-agent already runs it from inside the pod
        raw = entry.get(field)
        handlers = handler_keys(raw)
        if not isinstance(raw, dict) or len(handlers) != 1 or handlers[0] not in REWRITABLE_HANDLERS:
            continue
        ports = pod_container_context(ref, container, ctx)
        handler, timing = convert_probe(raw, ctx, field, ports)
        rewritten: dict[str, Any] = {"httpGet": {"path": route.format(container=spec.name), "port": health_port}}
        for key, value in raw.items():
            if key not in HANDLER_KEYS and key != "timeoutSeconds":
                rewritten[key] = value
        rewritten["timeoutSeconds"] = int(timing.timeout) + LIVE_TIMEOUT_MARGIN_SECONDS
        entry[field] = rewritten
        if ROUTED_CHECK_FIELDS[field] == LIVENESS:
            spec = replace(spec, liveness=handler, liveness_timeout=timing.timeout)
        else:
            spec = replace(spec, startup=handler, startup_timeout=timing.timeout)
    return spec


def _exec_mounts(pairs: Sequence[tuple[ContainerSpec, WatchedContainer]]) -> list[dict[str, Any]]:
    """Read-only copies of the volume mounts that hold exec probe commands the sidecar now runs."""
    mounts: list[dict[str, Any]] = []
    for spec, container in pairs:
        if not isinstance(spec.handler, ExecSpec):
            continue
        mount = mount_holding(spec.handler.command[0], container.entry.get("volumeMounts") or [])
        if mount is not None and all(m["mountPath"] != mount.get("mountPath") for m in mounts):
            mounts.append(shared_mount(mount))
    return mounts


def _pod_annotations(ref: PodSpecRef) -> dict[str, Any]:
    """The pod template's own annotations, created (metadata first) if it has none."""
    holder = ref.obj if len(ref.path) == 1 else _walk(ref.obj, ref.path[:-1])
    if not isinstance(holder.get("metadata"), dict):
        # Put metadata first, where people look for it, keeping the dict's identity.
        rest = [(k, v) for k, v in holder.items() if k != "metadata"]
        holder.clear()
        holder["metadata"] = {}
        holder.update(rest)
    metadata = holder["metadata"]
    if not isinstance(metadata.get("annotations"), dict):
        metadata["annotations"] = {}
    annotations: dict[str, Any] = metadata["annotations"]
    return annotations


def _walk(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = obj
    for key in path:
        node = node[key]
    return node
