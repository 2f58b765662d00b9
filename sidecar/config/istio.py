"""Pods Istio's injector already rewrote: which containers are Istio's, and the app probes it took over.

`istioctl kube-inject` and Istio's webhook (istio/istio pkg/kube/inject/app_probe.go) point
every app container's httpGet, tcpSocket and grpc probe, and its httpGet and tcpSocket
lifecycle hooks, at pilot-agent's status port (15020): `/app-health/<c>/readyz|livez|startupz`
and `/app-lifecycle/<c>/prestopz|poststartz`. The originals, named ports resolved to numbers,
go into istio-proxy's ISTIO_KUBE_APP_PROBERS as JSON. pilot-agent
(pilot/cmd/pilot-agent/status/server.go) answers those paths by running the original against
the pod IP.

The sidecar must probe the app, never pilot-agent, so config and lint read such a pod
through `restore_app_probes`: the same pod spec with the originals put back. Istio's own
containers (named in its `sidecar.istio.io/status` annotation) belong to Istio: the sidecar
neither watches nor lints them.

    owned = istio_containers('{"initContainers":["istio-init","istio-proxy"],"containers":null}', ctx)
    restored = restore_app_probes(pod_spec, owned, DEFAULT_STATUS_PORT, ctx)  # None: nothing to restore
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, TypeGuard

from sidecar.config.names import container_named
from sidecar.errors import ErrorContext, quote

# Set by Istio's injector on the pod template: what it added, as JSON.
STATUS_ANNOTATION = "sidecar.istio.io/status"
# pilot-agent's status port, unless the pod moves it with this annotation (-1: no status server).
STATUS_PORT_ANNOTATION = "status.sidecar.istio.io/port"
DEFAULT_STATUS_PORT = 15020
# "false" on a pod: Istio leaves its probes and hooks as they are.
REWRITE_PROBES_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
# Inbound ports istio-init leaves out of interception; read when Istio injects, not later.
EXCLUDE_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"
PROXY_CONTAINER = "istio-proxy"
APP_PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"

# Where pilot-agent serves each probe and hook of container {c} (status.FormatProberURL).
PROBE_PATHS: Mapping[str, str] = {
    "readinessProbe": "/app-health/{c}/readyz",
    "livenessProbe": "/app-health/{c}/livez",
    "startupProbe": "/app-health/{c}/startupz",
}
HOOK_PATHS: Mapping[str, str] = {
    "preStop": "/app-lifecycle/{c}/prestopz",
    "postStart": "/app-lifecycle/{c}/poststartz",
}
# The handlers an ISTIO_KUBE_APP_PROBERS entry may hold (its Prober struct), exactly one each.
PROBER_HANDLERS = ("httpGet", "tcpSocket", "grpc")


def istio_containers(status: Any, ctx: ErrorContext) -> frozenset[str]:
    """The container names Istio's status annotation lists ("containers" and "initContainers").

    Absent: frozenset(). Present but not Istio's JSON: one ConfigError line.
    """
    if status is None:
        return frozenset()
    at = f"annotations[{STATUS_ANNOTATION}]"
    try:
        doc = json.loads(status) if isinstance(status, str) else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ctx.error(at, "expected the JSON object Istio's injector writes")
    names: set[str] = set()
    for key in ("containers", "initContainers"):
        listed = doc.get(key) or []
        if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
            raise ctx.error(at, f"{key}: expected a list of container names")
        names.update(listed)
    return frozenset(names)


def status_port(value: Any, ctx: ErrorContext) -> int | None:
    """pilot-agent's status port from its annotation's value (None if absent: the default);
    None too for -1, Istio's "no status server"."""
    if value is None:
        return DEFAULT_STATUS_PORT
    text = str(value).strip()
    if text == "-1":
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ctx.error(f"annotations[{STATUS_PORT_ANNOTATION}]", f"expected a port number, got {quote(value)}")
    return int(text)


def rewrites_probes(value: Any) -> bool:
    """Whether Istio rewrites this pod's probes: unless its annotation parses as false (strconv.ParseBool)."""
    return not (isinstance(value, str) and value.strip() in ("0", "f", "F", "false", "FALSE", "False"))


def find_proxy(pod_spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The istio-proxy container, in containers (classic) or initContainers (native sidecar)."""
    return container_named(pod_spec, PROXY_CONTAINER)


def app_probers(pod_spec: Mapping[str, Any], ctx: ErrorContext) -> dict[str, Any]:
    """istio-proxy's ISTIO_KUBE_APP_PROBERS, decoded: {path: {httpGet|tcpSocket|grpc, timeoutSeconds}}."""
    env = _probers_env(find_proxy(pod_spec))
    if env is None:
        return {}
    at = f"container {quote(PROXY_CONTAINER)}: env[{APP_PROBERS_ENV}]"
    try:
        probers = json.loads(env.get("value") or "{}")
    except ValueError:
        raise ctx.error(at, "not JSON") from None
    if not isinstance(probers, dict) or not all(isinstance(p, dict) for p in probers.values()):
        raise ctx.error(at, "expected a JSON object of probers")
    return probers


def set_app_probers(pod_spec: Mapping[str, Any], probers: Mapping[str, Any]) -> None:
    """Write istio-proxy's ISTIO_KUBE_APP_PROBERS (compact, keys sorted as Go's json.Marshal writes a map)."""
    proxy = find_proxy(pod_spec)
    if proxy is None:
        return
    value = json.dumps(dict(probers), separators=(",", ":"), sort_keys=True)
    env = _probers_env(proxy)
    if env is not None:
        env["value"] = value
    else:
        proxy.setdefault("env", []).append({"name": APP_PROBERS_ENV, "value": value})


def _probers_env(proxy: dict[str, Any] | None) -> dict[str, Any] | None:
    entries = proxy.get("env") if proxy is not None else None
    for env in entries if isinstance(entries, list) else ():
        if isinstance(env, dict) and env.get("name") == APP_PROBERS_ENV:
            return env
    return None


def is_pilot_agent_route(handler: Any, path: str, port: int) -> TypeGuard[dict[str, Any]]:
    """Whether a probe or hook is Istio's rewrite: an httpGet of `path` on the status port."""
    action = handler.get("httpGet") if isinstance(handler, dict) else None
    if not isinstance(action, dict) or action.get("path") != path:
        return False
    return str(action.get("port")) == str(port)


def restore_app_probes(
    pod_spec: dict[str, Any], owned: frozenset[str], port: int | None, ctx: ErrorContext
) -> dict[str, Any] | None:
    """A copy of the pod spec with every app probe and hook Istio rewrote put back as the user wrote it.

    None when there is nothing to restore. Only the containers change: each is a shallow copy
    (a round-trip mapping keeps its positions), the rest of the pod spec is shared.
    """
    if port is None:
        return None
    probers = app_probers(pod_spec, ctx)
    if not probers:
        return None
    restored = copy.copy(pod_spec)  # copy.copy keeps a round-trip mapping's type and positions
    changed = False
    for key in ("containers", "initContainers"):
        entries = pod_spec.get(key)
        if not isinstance(entries, list):
            continue
        copies = []
        for entry in entries:
            ours = isinstance(entry, dict) and entry.get("name") not in owned
            new = _restored_container(entry, probers, port) if ours else entry
            changed = changed or new is not entry
            copies.append(new)
        restored[key] = copies
    return restored if changed else None


def _restored_container(entry: dict[str, Any], probers: Mapping[str, Any], port: int) -> dict[str, Any]:
    name = entry.get("name")
    result = entry
    for kind, template in PROBE_PATHS.items():
        prober = probers.get(template.format(c=name))
        probe = entry.get(kind)
        if _usable(prober) and is_pilot_agent_route(probe, template.format(c=name), port):
            if result is entry:
                result = copy.copy(entry)
            result[kind] = _original_probe(probe, prober)
    lifecycle = entry.get("lifecycle")
    if isinstance(lifecycle, dict):
        hooks = copy.copy(lifecycle)
        for hook, template in HOOK_PATHS.items():
            prober = probers.get(template.format(c=name))
            if _usable(prober) and is_pilot_agent_route(lifecycle.get(hook), template.format(c=name), port):
                hooks[hook] = {key: copy.deepcopy(prober[key]) for key in PROBER_HANDLERS if key in prober}
        if hooks != lifecycle:
            if result is entry:
                result = copy.copy(entry)
            result["lifecycle"] = hooks
    return result


def _usable(prober: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(prober, dict) and sum(key in prober for key in PROBER_HANDLERS) == 1


def _original_probe(rewritten: dict[str, Any], prober: Mapping[str, Any]) -> dict[str, Any]:
    """The rewritten probe's timing fields (Istio keeps them) with the original handler back."""
    original = copy.copy(rewritten)
    del original["httpGet"]
    for key in PROBER_HANDLERS:
        if key in prober:
            original[key] = copy.deepcopy(prober[key])
    if "timeoutSeconds" in prober:
        original["timeoutSeconds"] = prober["timeoutSeconds"]
    return original
