"""Container fragments to ContainerSpecs: from a pod template, or from a containers list.

The two differ in small, deliberate ways. In a manifest a container may lack a
name (Knative names it), `required` comes from the pod annotation
`readiness-sidecar.io/not-required`, a core pod's annotations choose each readiness
probe's mode (see `probe_modes`), and a container with neither a probe nor ports is left
to the kubelet with a warning. In a containers list a name is
required, `required:` is a field, and such a container is an error: someone wrote
it down in order to have it watched.

    loaded = containers_from_pod(ref, "pod.yaml")
    [spec.name for spec in loaded.containers]  # ["user-container"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from probes.spec import DEFAULT_HOST, HandlerSpec, TcpSocketSpec
from sidecar.config.names import check_container_name
from sidecar.config.pod_template import PodSpecRef, watched_containers, with_original_probes
from sidecar.config.probe import ContainerContext, container_context, convert_probe, pod_container_context
from sidecar.config.schema import CONTAINER_FIELDS, CONTAINERS_FILE_FIELDS, UNKNOWN_FIELD
from sidecar.contract import (
    AGGRESSIVE_PROBES_ANNOTATION,
    KUBELET_PROBES_ANNOTATION,
    NOT_REQUIRED_ANNOTATION,
    PROBE_MODE_ANNOTATION,
)
from sidecar.errors import ErrorContext, did_you_mean, field_name, quote, type_words
from sidecar.model import DEFAULT_TIMEOUT_SECONDS, KUBELET_PERIOD_SECONDS, ContainerSpec, ProbeTiming

AGGRESSIVE_MODE = "aggressive"
KUBELET_MODE = "kubelet"
PROBE_MODE_NAMES = (AGGRESSIVE_MODE, KUBELET_MODE)


@dataclass(frozen=True, slots=True)
class LoadedContainers:
    """What one config source contributed."""

    label: str  # for SidecarConfig.sources: "pod.yaml", "--probe x2", ...
    containers: tuple[ContainerSpec, ...] = ()
    warnings: Mapping[str, str] = field(default_factory=dict)  # container name -> one line
    # container name -> one line: which mode its readiness check got, and why (manifests only)
    modes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProbeMode:
    """How one container's readiness check is scheduled, and the reason, for people."""

    aggressive: bool
    why: str


def containers_from_pod(ref: PodSpecRef, source: str, *, default_host: str = DEFAULT_HOST) -> LoadedContainers:
    """The containers of one pod template: spec.containers, then native sidecars, with the
    probes Istio took over read as their author wrote them; a probe that names no host goes
    to `default_host`."""
    ctx = ErrorContext(source, ref.label)
    ref = with_original_probes(ref, ctx)
    watched = watched_containers(ref, ctx)
    names = [container.name for container in watched]
    not_required = _container_list(ref, ctx, NOT_REQUIRED_ANNOTATION, names)
    pod_modes = None if ref.knative else probe_modes(ref, ctx, names)
    specs: list[ContainerSpec] = []
    warnings: dict[str, str] = {}
    modes: dict[str, str] = {}
    for container in watched:
        container_ctx = ctx.within(f"container {quote(container.name)}")
        _check_fields(container.entry, container_ctx, CONTAINER_FIELDS)
        ports = pod_container_context(ref, container, container_ctx, host=default_host)
        required = container.name not in not_required
        spec = _container(container.entry, container.name, container_ctx, ports, required, in_manifest=True)
        if spec.handler is None:
            warnings[container.name] = container_ctx.message("", "no readinessProbe and no ports; left to the kubelet")
        else:
            mode = pod_modes[container.name] if pod_modes is not None else _knative_mode(spec.timing)
            written, spec = spec.timing.period, replace(spec, timing=_scheduled(spec.timing, mode.aggressive))
            if not mode.aggressive:
                what = f"kubelet mode, every {spec.timing.period:g}s"
            else:
                what = "aggressive mode" + (f" (periodSeconds {written:g} not used)" if written else "")
            modes[container.name] = container_ctx.message("readiness", f"{what}: {mode.why}")
        specs.append(spec)
    return LoadedContainers(source, tuple(specs), warnings, modes)


def probe_modes(ref: PodSpecRef, ctx: ErrorContext, names: list[str]) -> dict[str, ProbeMode]:
    """Each container's mode in a core pod: the annotations decide, never periodSeconds.

    The API server defaults periodSeconds (to 10) before a mutating webhook sees a pod, so
    "absent means aggressive" can't be read from a core pod at admission; inject reads the
    same annotations, so both give a workload the same sidecar config. Aggressive mode is
    the default; `kubelet` keeps a probe's own period (10 s when absent, as the API server
    fills it in) and thresholds, exactly.
    """
    at = f"annotations[{PROBE_MODE_ANNOTATION}]"
    default = ref.annotation(PROBE_MODE_ANNOTATION)
    if default is not None and default not in PROBE_MODE_NAMES:
        raise ctx.error(at, f"must be {' or '.join(PROBE_MODE_NAMES)}, got {quote(default)}")
    kubelet = _container_list(ref, ctx, KUBELET_PROBES_ANNOTATION, names)
    aggressive = _container_list(ref, ctx, AGGRESSIVE_PROBES_ANNOTATION, names)
    if both := sorted(kubelet & aggressive):
        raise ctx.error(
            f"annotations[{KUBELET_PROBES_ANNOTATION}]",
            f"container {quote(both[0])} is also in {AGGRESSIVE_PROBES_ANNOTATION}; name it in one",
        )
    modes: dict[str, ProbeMode] = {}
    for name in names:
        if name in kubelet:
            modes[name] = ProbeMode(False, f"named in {KUBELET_PROBES_ANNOTATION}")
        elif name in aggressive:
            modes[name] = ProbeMode(True, f"named in {AGGRESSIVE_PROBES_ANNOTATION}")
        elif default is not None:
            modes[name] = ProbeMode(default == AGGRESSIVE_MODE, f"{PROBE_MODE_ANNOTATION} is {default}")
        else:
            modes[name] = ProbeMode(True, f"the default for a pod; {PROBE_MODE_ANNOTATION}: {KUBELET_MODE}"
                                          " keeps the kubelet's schedule")
    return modes


def _knative_mode(timing: ProbeTiming) -> ProbeMode:
    # Knative's CRDs are not defaulted by the core API server: a period as written is the user's.
    if timing.period:
        return ProbeMode(False, "periodSeconds is set (Knative)")
    return ProbeMode(True, "no periodSeconds (Knative)")


def _scheduled(timing: ProbeTiming, aggressive: bool) -> ProbeTiming:
    """The timing the sidecar runs: period 0 is aggressive mode, else the kubelet's period."""
    if aggressive:
        return replace(timing, period=0.0)
    return replace(timing, period=timing.period or float(KUBELET_PERIOD_SECONDS))


def containers_from_document(
    doc: object, ctx: ErrorContext, origin: str, *, default_host: str = DEFAULT_HOST
) -> LoadedContainers:
    """A containers file (or READINESS_SIDECAR_CONFIG): a mapping with `containers:`; a probe
    that names no host goes to `default_host`."""
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
        ports = container_context(entry, container_ctx, knative=False, fallback=None, host=default_host)
        required = entry.get("required", True)
        if not isinstance(required, bool):
            raise container_ctx.error("required", f"expected true or false, got {type_words(required)}")
        specs[name] = _container(entry, name, container_ctx, ports, required, in_manifest=False)
    return LoadedContainers(origin, tuple(specs.values()))


def _check_fields(entry: dict[Any, Any], ctx: ErrorContext, allowed: frozenset[str]) -> None:
    for key in entry:
        if key not in allowed:
            hint = did_you_mean(key, allowed) if isinstance(key, str) else ""
            raise ctx.error(field_name(key), UNKNOWN_FIELD + hint)


def _container(
    entry: dict[Any, Any], name: str, ctx: ErrorContext, ports: ContainerContext, required: bool, *, in_manifest: bool
) -> ContainerSpec:
    # Only a containers file hands liveness and startup checks to the sidecar (inject
    # --rewrite-liveness writes them there); in a manifest they belong to the kubelet.
    liveness, liveness_timeout = _routed_check(entry, "livenessProbe", ctx, ports, in_manifest)
    startup, startup_timeout = _routed_check(entry, "startupProbe", ctx, ports, in_manifest)

    def spec(handler: HandlerSpec | None, timing: ProbeTiming | None = None) -> ContainerSpec:
        return ContainerSpec(
            name, handler, timing or ProbeTiming(), required, liveness, liveness_timeout, startup, startup_timeout
        )

    if entry.get("readinessProbe") is not None:
        return spec(*convert_probe(entry["readinessProbe"], ctx, "readinessProbe", ports))
    if ports.serving is not None:
        # Knative's default readiness probe: TCP on the container's first port.
        return spec(TcpSocketSpec(port=ports.serving, host=ports.host, host_defaulted=True))
    if in_manifest:
        return spec(None)
    raise ctx.error("", "no readinessProbe and no ports: nothing to probe")


def _routed_check(
    entry: dict[Any, Any], kind: str, ctx: ErrorContext, ports: ContainerContext, in_manifest: bool
) -> tuple[HandlerSpec | None, float]:
    """A containers file's livenessProbe or startupProbe: the check and its timeout the sidecar runs once per
    GET /live/<c> or /startup/<c>. Absent (as in every config written before startupProbe was) is (None, default)."""
    if in_manifest or entry.get(kind) is None:
        return None, DEFAULT_TIMEOUT_SECONDS
    context = ContainerContext(ports.named, env=ports.env, host=ports.host)
    handler, timing = convert_probe(entry[kind], ctx, kind, context)
    return handler, timing.timeout


def _container_list(ref: PodSpecRef, ctx: ErrorContext, annotation: str, known: list[str]) -> set[str]:
    """The container names a pod annotation lists, "name1,name2"; ConfigError for another shape or name."""
    at = f"annotations[{annotation}]"
    value = ref.annotation(annotation)
    if value is None:
        return set()
    if not isinstance(value, str):
        raise ctx.error(at, f'expected a string like "name1,name2", got {type_words(value)}')
    names = {name.strip() for name in value.split(",") if name.strip()}
    for name in sorted(names):
        if name not in known:
            raise ctx.error(at, f"unknown container {quote(name)} (containers: {', '.join(known)})")
    return names
