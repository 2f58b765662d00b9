"""`readiness-sidecar inject`: add the sidecar to every pod template of a manifest.

Per pod template the containers' readiness probes move into the sidecar's
READINESS_SIDECAR_CONFIG (what `sidecar.config` loads back, named ports resolved),
and the pod's readiness becomes the sidecar's aggregated `/ready`. The webhook
calls `inject_object` so admission and the CLI give the same result.

    injected, warnings = inject_object(deployment, "web.yaml", InjectOptions())
    inject_object(injected, "web.yaml", InjectOptions())[0] == injected  # idempotent
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from probes.spec import ExecSpec
from sidecar.containers import SIDECAR_RESTART_POLICY, containers_from_pod
from sidecar.containers_file import compact_json, containers_document
from sidecar.error_context import ErrorContext, quote
from sidecar.manifest_io import dump_documents, read_manifest
from sidecar.manifests import PodSpecRef, find_pod_specs
from sidecar.port_context import container_port_context
from sidecar.probe_conversion import convert_probe
from sidecar.settings import DEFAULT_DRAIN_SECONDS
from sidecar.sidecar_container import HEALTH_PORT, SIDECAR_NAME, sidecar_container
from sidecar.sidecar_image import mount_holding, shared_mount
from sidecar.spec import ContainerSpec

DEFAULT_IMAGE = "readiness-sidecar:0.1.0"
EXEC_PROBE_MODES = ("kubelet", "sidecar")

INJECT_ANNOTATION = "readiness-sidecar.io/inject"  # "false" opts a pod out of the webhook
STATUS_ANNOTATION = "readiness-sidecar.io/status"
STATUS_INJECTED = "injected"

DRAIN_PATH = "/wait-for-drain"
LIVE_PATH = "/live/{container}"
# The kubelet waits a little longer for /live than the sidecar's own attempt, so a
# slow check comes back as a 503 with its reason instead of a bare kubelet timeout.
LIVE_TIMEOUT_MARGIN_SECONDS = 1
# The preStop hook blocks for the drain; the app then needs time to stop.
MIN_GRACE_SECONDS = int(DEFAULT_DRAIN_SECONDS) + 10
WORKLOADS_THAT_COMPLETE = frozenset({"Job", "CronJob"})
# Liveness handlers the sidecar can run for an app that listens on localhost only.
REWRITABLE_LIVENESS = ("httpGet", "tcpSocket")
HANDLER_KEYS = ("httpGet", "tcpSocket", "grpc", "exec")

KUBELET_MANAGED = "exec probe left to the kubelet, and no port for the sidecar to check instead: kubelet-managed"
NATIVE_IGNORED_FOR_KNATIVE = "--native-sidecar ignored: Knative takes no restartPolicy on containers"
JOB_NEEDS_NATIVE = "a regular sidecar container keeps a Job's pods running; use --native-sidecar (Kubernetes 1.29+)"

__all__ = [
    "DEFAULT_IMAGE",
    "SIDECAR_NAME",
    "InjectOptions",
    "inject_documents",
    "inject_object",
    "run_inject_command",
]


@dataclass(frozen=True, slots=True)
class InjectOptions:
    image: str = DEFAULT_IMAGE
    exec_probes: str = "kubelet"  # or "sidecar"
    native_sidecar: bool = False
    rewrite_liveness: bool = False

    def __post_init__(self) -> None:
        if self.exec_probes not in EXEC_PROBE_MODES:
            raise ValueError(f"exec_probes must be one of {EXEC_PROBE_MODES}, got {self.exec_probes!r}")


def inject_object(obj: Any, source: str, options: InjectOptions) -> tuple[Any, list[str]]:
    """Return (a deep copy of obj with every pod template injected, warnings). Objects without a pod template come
    back equal to the input. Already injected templates (a container named SIDECAR_NAME exists) are unchanged.
    Raises ConfigError (one line) for input it cannot inject."""
    result = copy.deepcopy(obj)
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


def is_injected(pod_spec: dict[str, Any]) -> bool:
    # Runs before the pod spec is validated (inject --force goes past lint errors): any shape.
    return any(
        isinstance(entry, dict) and entry.get("name") == SIDECAR_NAME
        for key in ("containers", "initContainers")
        if isinstance(entries := pod_spec.get(key), list)
        for entry in entries
    )


def _inject_template(ref: PodSpecRef, source: str, options: InjectOptions) -> list[str]:
    pod_spec = ref.pod_spec
    if is_injected(pod_spec):
        return []
    ctx = ErrorContext(source, ref.label)
    keep_exec = options.exec_probes == "kubelet"
    # The loader sees the pod as the sidecar will: an exec probe the kubelet keeps
    # is invisible to it, so it falls back to a TCP check on the container's port.
    view = replace(ref, pod_spec=_without_exec_readiness(pod_spec)) if keep_exec else ref
    loaded = containers_from_pod(view, source)
    watched = _watched_entries(pod_spec)
    pairs = list(zip(loaded.containers, watched, strict=True))

    warnings = []
    for spec, entry in pairs:
        if spec.name not in loaded.warnings:
            continue
        if keep_exec and _exec_only(entry.get("readinessProbe")):
            where = ctx.within(f"container {quote(spec.name)}")
            warnings.append(where.message("readinessProbe", KUBELET_MANAGED))
        else:
            warnings.append(loaded.warnings[spec.name])
    if not any(spec.observed for spec, _ in pairs):
        warnings.append(ctx.message("", "no container has a readinessProbe or a port to watch; sidecar not injected"))
        return warnings

    if ref.knative:
        _fix_knative_names(pairs)
    user_entries = pod_spec["containers"]
    specs: list[ContainerSpec] = []
    for index, (spec, entry) in enumerate(pairs):
        is_user = any(entry is user for user in user_entries)
        probe = entry.get("readinessProbe")
        if probe is not None and not (keep_exec and _exec_only(probe)):
            del entry["readinessProbe"]
        if is_user and not ref.knative:
            _add_drain_hook(entry)
        if not spec.observed:
            continue
        if options.rewrite_liveness:
            spec = _rewrite_liveness(ref, index, entry, spec, ctx.within(f"container {quote(spec.name)}"))
        specs.append(spec)

    native = options.native_sidecar and not ref.knative
    if options.native_sidecar and ref.knative:
        warnings.append(ctx.message("", NATIVE_IGNORED_FOR_KNATIVE))
    if not native and ref.kind in WORKLOADS_THAT_COMPLETE:
        warnings.append(ctx.message("", JOB_NEEDS_NATIVE))
    mounts = _exec_mounts(pairs) if not keep_exec else []
    container = sidecar_container(
        options.image,
        compact_json(containers_document(specs)),
        declare_ports=not ref.knative,
        native=native,
        volume_mounts=mounts,
    )
    if native:
        pod_spec["initContainers"] = [container, *(pod_spec.get("initContainers") or [])]
    else:
        user_entries.append(container)
    if not ref.knative:
        _cover_drain(pod_spec)
    _mark_injected(ref)
    return warnings


def _watched_entries(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries containers_from_pod reports on, in its order: containers, then native sidecars."""
    inits = pod_spec.get("initContainers") or []
    return [*pod_spec["containers"], *(e for e in inits if e.get("restartPolicy") == SIDECAR_RESTART_POLICY)]


def _handlers_in(probe: Any) -> list[str]:
    return [key for key in HANDLER_KEYS if isinstance(probe, dict) and probe.get(key) is not None]


def _exec_only(probe: Any) -> bool:
    return _handlers_in(probe) == ["exec"]


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


def _fix_knative_names(pairs: Sequence[tuple[ContainerSpec, dict[str, Any]]]) -> None:
    """Name unnamed containers as the sidecar reports them.

    Knative names an unnamed container `user-container` only while it is alone; with
    the sidecar beside it, it would become `user-container-0`, and the sidecar's
    /ready/<name> and metrics would name a container the pod does not have.
    """
    for spec, entry in pairs:
        if not entry.get("name"):
            rest = [(k, v) for k, v in entry.items() if k != "name"]
            entry.clear()
            entry["name"] = spec.name
            entry.update(rest)


def _add_drain_hook(entry: dict[str, Any]) -> None:
    """preStop: wait for the sidecar's drain, unless the container has its own preStop."""
    hook = {"httpGet": {"path": DRAIN_PATH, "port": HEALTH_PORT}}
    lifecycle = entry.get("lifecycle")
    if lifecycle is None:
        entry["lifecycle"] = {"preStop": hook}
    elif isinstance(lifecycle, dict) and lifecycle.get("preStop") is None:
        lifecycle["preStop"] = hook


def _cover_drain(pod_spec: dict[str, Any]) -> None:
    grace = pod_spec.get("terminationGracePeriodSeconds")
    too_short = isinstance(grace, int) and not isinstance(grace, bool) and grace < MIN_GRACE_SECONDS
    if grace is None or too_short:  # absent means the API default, 30 s
        pod_spec["terminationGracePeriodSeconds"] = MIN_GRACE_SECONDS


def _rewrite_liveness(
    ref: PodSpecRef, index: int, entry: dict[str, Any], spec: ContainerSpec, ctx: ErrorContext
) -> ContainerSpec:
    """Point an httpGet/tcpSocket livenessProbe at the sidecar's /live/<name>; the sidecar runs the check."""
    raw = entry.get("livenessProbe")
    handlers = _handlers_in(raw)
    if not isinstance(raw, dict) or len(handlers) != 1 or handlers[0] not in REWRITABLE_LIVENESS:
        return spec
    ports = container_port_context(ref, index, entry, ctx)
    handler, timing = convert_probe(raw, ctx, "livenessProbe", ports)
    rewritten: dict[str, Any] = {"httpGet": {"path": LIVE_PATH.format(container=spec.name), "port": HEALTH_PORT}}
    for key, value in raw.items():
        if key not in HANDLER_KEYS and key != "timeoutSeconds":
            rewritten[key] = value
    rewritten["timeoutSeconds"] = int(timing.timeout) + LIVE_TIMEOUT_MARGIN_SECONDS
    entry["livenessProbe"] = rewritten
    return replace(spec, liveness=handler, liveness_timeout=timing.timeout)


def _exec_mounts(pairs: Sequence[tuple[ContainerSpec, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Read-only copies of the volume mounts that hold exec probe commands the sidecar now runs."""
    mounts: list[dict[str, Any]] = []
    for spec, entry in pairs:
        if not isinstance(spec.handler, ExecSpec):
            continue
        mount = mount_holding(spec.handler.command[0], entry.get("volumeMounts") or [])
        if mount is not None and all(m["mountPath"] != mount.get("mountPath") for m in mounts):
            mounts.append(shared_mount(mount))
    return mounts


def _mark_injected(ref: PodSpecRef) -> None:
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
    metadata["annotations"][STATUS_ANNOTATION] = STATUS_INJECTED


def _walk(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = obj
    for key in path:
        node = node[key]
    return node


def run_inject_command(args: argparse.Namespace) -> int:
    """The CLI: read, lint (refuse on errors unless --force), inject, then write all at once."""
    from sidecar.lint import lint_documents

    options = InjectOptions(
        image=args.image or DEFAULT_IMAGE,
        exec_probes=args.exec_probes,
        native_sidecar=args.native_sidecar,
        rewrite_liveness=args.rewrite_liveness,
    )
    manifest = read_manifest(args.filename, sys.stdin.buffer)
    findings = lint_documents(manifest.docs, manifest.source, exec_probes=options.exec_probes)
    for finding in findings:
        print(finding, file=sys.stderr)
    errors = sum(finding.is_error for finding in findings)
    if errors and not args.force:
        print(f"inject: refusing: {errors} lint error(s) above; --force injects anyway", file=sys.stderr)
        return 1
    injected, warnings = inject_documents(manifest.docs, manifest.source, options)
    # Only now, with every document injected, does anything reach stdout.
    text = dump_documents(injected, as_json=manifest.is_json)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    return 0
