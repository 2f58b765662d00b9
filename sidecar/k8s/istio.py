"""inject in an Istio mesh: keep the kubelet's probes and hooks of the sidecar reachable under STRICT mTLS.

istio-init redirects every inbound port except its own to Envoy, so under STRICT mTLS the
kubelet's plain-HTTP probes and preStop hooks to the health port never reach the sidecar.
Istio solves this for app containers by pointing them at pilot-agent (docs/istio.md):

- **inject after Istio** (the pod has Istio's status annotation): do what Istio's injector
  does for every app container (pkg/kube/inject/app_probe.go): point each probe and hook on
  the health port at pilot-agent's status port, `/app-health/<c>/readyz|livez|startupz` and
  `/app-lifecycle/<c>/prestopz`, and add the originals to istio-proxy's
  ISTIO_KUBE_APP_PROBERS. An exclude annotation would do nothing by now: istio-init's
  arguments were fixed when Istio injected.
- **inject before Istio**: nothing to do while Istio rewrites probes (its default): it
  rewrites the sidecar's probes and hooks like any container's. A pod that turns the rewrite
  off (`sidecar.istio.io/rewriteAppHTTPProbers: "false"`) gets the health port in
  `traffic.sidecar.istio.io/excludeInboundPorts`, which istio-init reads when Istio injects.

    warnings = route_through_pilot_agent(ref, HEALTH_PORT, ctx)
    runs_probe(ref, entry, "livenessProbe", ctx)  # True: inject --rewrite-liveness leaves it to Istio
"""

from __future__ import annotations

import copy
from typing import Any, TypeGuard

from sidecar.config import istio
from sidecar.config.pod_template import PodSpecRef, istio_owned
from sidecar.config.schema import PROBE_KINDS
from sidecar.errors import ErrorContext, quote

# A kubelet httpGet with this scheme reaches pilot-agent as HTTP; pilot-agent then speaks HTTPS.
HTTP_SCHEME = "HTTP"

NO_STATUS_PORT = (
    f"{istio.STATUS_PORT_ANNOTATION} is -1: pilot-agent serves no probes, so under STRICT mTLS the kubelet"
    " can't reach the sidecar's port; exclude it before Istio injects (docs/istio.md)"
)


def route_through_pilot_agent(ref: PodSpecRef, health_port: int, ctx: ErrorContext) -> list[str]:
    """After Istio: every probe and lifecycle hook on the health port goes through pilot-agent.

    Edits the pod spec in place; returns warnings. A pod Istio has not injected is left alone.
    """
    owned = istio_owned(ref, ctx)
    if not owned or not istio.rewrites_probes(ref.annotation(istio.REWRITE_PROBES_ANNOTATION)):
        return []
    port = istio.status_port(ref.annotation(istio.STATUS_PORT_ANNOTATION), ctx)
    if port is None:
        return [ctx.message("", NO_STATUS_PORT)]
    if istio.find_proxy(ref.pod_spec) is None:
        return [ctx.message("", f"Istio's status annotation is set but no {quote(istio.PROXY_CONTAINER)} container")]
    probers = istio.app_probers(ref.pod_spec, ctx)
    for entry in _app_containers(ref, owned):
        name = entry.get("name")
        for kind in PROBE_KINDS:
            probe = entry.get(kind)
            if _on_port(probe, health_port):
                path = istio.PROBE_PATHS[kind].format(c=name)
                probers[path] = _prober(probe)
                entry[kind] = _via_pilot_agent(probe, path, port)
        lifecycle = entry.get("lifecycle")
        if not isinstance(lifecycle, dict):
            continue
        for hook, template in istio.HOOK_PATHS.items():
            handler = lifecycle.get(hook)
            if _on_port(handler, health_port):
                path = template.format(c=name)
                probers[path] = {"httpGet": _numeric_port(handler["httpGet"])}
                lifecycle[hook] = _via_pilot_agent(handler, path, port)
    istio.set_app_probers(ref.pod_spec, probers)
    return []


def runs_probe(ref: PodSpecRef, entry: dict[str, Any], kind: str, ctx: ErrorContext) -> bool:
    """Whether Istio's pilot-agent already runs this probe of an app container (Istio rewrote it)."""
    if not istio_owned(ref, ctx):
        return False
    port = istio.status_port(ref.annotation(istio.STATUS_PORT_ANNOTATION), ctx)
    path = istio.PROBE_PATHS[kind].format(c=entry.get("name"))
    return port is not None and istio.is_pilot_agent_route(entry.get(kind), path, port)


def exclude_before_istio(ref: PodSpecRef, annotations: dict[str, Any], health_port: int, ctx: ErrorContext) -> None:
    """Before Istio, in a pod that turns Istio's probe rewrite off: keep the health port out of
    interception, so the kubelet reaches it directly. Merged into any ports already listed in
    `annotations`, the pod template's own."""
    if istio_owned(ref, ctx) or istio.rewrites_probes(ref.annotation(istio.REWRITE_PROBES_ANNOTATION)):
        return
    listed = str(annotations.get(istio.EXCLUDE_INBOUND_ANNOTATION) or "")
    ports = [port.strip() for port in listed.split(",") if port.strip()]
    if str(health_port) not in ports:
        annotations[istio.EXCLUDE_INBOUND_ANNOTATION] = ",".join([*ports, str(health_port)])


def _app_containers(ref: PodSpecRef, owned: frozenset[str]) -> list[dict[str, Any]]:
    entries = [*(ref.pod_spec.get("containers") or []), *(ref.pod_spec.get("initContainers") or [])]
    return [entry for entry in entries if isinstance(entry, dict) and entry.get("name") not in owned]


def _on_port(handler: Any, port: int) -> TypeGuard[dict[str, Any]]:
    action = handler.get("httpGet") if isinstance(handler, dict) else None
    return isinstance(action, dict) and str(action.get("port")) == str(port)


def _numeric_port(action: dict[str, Any]) -> dict[str, Any]:
    """The httpGet as pilot-agent takes it: a port number, never a name (its validateAppKubeProber)."""
    original = copy.deepcopy(dict(action))
    original["port"] = int(original["port"])
    return original


def _prober(probe: dict[str, Any]) -> dict[str, Any]:
    prober: dict[str, Any] = {"httpGet": _numeric_port(probe["httpGet"])}
    if probe.get("timeoutSeconds"):
        prober["timeoutSeconds"] = probe["timeoutSeconds"]
    return prober


def _via_pilot_agent(handler: dict[str, Any], path: str, status_port: int) -> dict[str, Any]:
    """The handler as Istio's rewriteHTTPGetAction leaves it: same fields, pilot-agent's path and port."""
    rewritten = copy.copy(handler)
    action = copy.copy(handler["httpGet"])
    action["path"] = path
    action["port"] = status_port
    if action.get("scheme") == "HTTPS":
        action["scheme"] = HTTP_SCHEME
    rewritten["httpGet"] = action
    return rewritten
