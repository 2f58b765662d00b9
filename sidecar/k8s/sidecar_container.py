"""The container `inject` adds to a pod: one place for its name, ports, probes, resources and security.

    settings = PodSettings(image="registry.example/rs:0.1.0", exec_probes="kubelet")
    container = sidecar_container(settings, config_json, declare_ports=True)
    container["readinessProbe"]["httpGet"]["path"]  # "/ready?wait=900ms"
"""

from __future__ import annotations

from typing import Any

from sidecar.config.documents import copy_document
from sidecar.config.pod_template import SIDECAR_RESTART_POLICY
from sidecar.contract import (
    CONFIG_ENV,
    HEALTH_PORT,
    HEALTHZ_PATH,
    METRICS_PATH,
    PROMETHEUS_ANNOTATION_PREFIX,
    PROMETHEUS_PATH_ANNOTATION,
    PROMETHEUS_PORT_ANNOTATION,
    PROMETHEUS_SCRAPE_ANNOTATION,
    READY_PATH,
    SIDECAR_NAME,
    WAIT_PARAM,
)
from sidecar.k8s.pod_settings import PodSettings

# The kubelet's readiness probe long-polls /ready. The wait (900 ms) ends before the
# kubelet's timeout (2 s), so a not-ready pod gets a clean 503 rather than a timeout,
# and a pod turning ready is answered the moment it does, not at the next period.
READY_WAIT = "900ms"
READINESS_PROBE: dict[str, Any] = {
    "httpGet": {"path": f"{READY_PATH}?{WAIT_PARAM}={READY_WAIT}", "port": HEALTH_PORT},
    "periodSeconds": 1,
    "timeoutSeconds": 2,
    "failureThreshold": 1,
    "successThreshold": 1,
}
LIVENESS_PROBE: dict[str, Any] = {
    "httpGet": {"path": HEALTHZ_PATH, "port": HEALTH_PORT},
    "periodSeconds": 10,
    "timeoutSeconds": 2,
    "failureThreshold": 3,
}

# Measured with `readiness-sidecar run` watching 4 containers (2 httpGet, tcp, exec) on
# this machine (docs/inject.md): RSS 57-58 MiB; CPU 8m steady and all ready, 180m with
# all four failing after the aggressive window, 350m during the first 10 s of it.
# No CPU limit on purpose: CFS throttling during the aggressive window would delay
# exactly the readiness answer the sidecar exists to speed up. The request covers
# the steady state; the memory limit leaves 2x headroom over the measured RSS.
RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "20m", "memory": "64Mi"},
    "limits": {"memory": "128Mi"},
}

NONROOT_UID = 65532  # the distroless "nonroot" user, a common convention
SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NONROOT_UID,
    "runAsGroup": NONROOT_UID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def sidecar_container(
    settings: PodSettings,
    config_json: str,
    *,
    declare_ports: bool,
    native: bool = False,
    volume_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A fresh container dict (no structure shared with the constants above), on the pod's ports.

    `declare_ports` is False for Knative, which lets only the serving container
    declare ports; the probes use port numbers, so they work either way.
    """
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "args": ["run"],
        "env": [{"name": CONFIG_ENV, "value": config_json}, *settings.sidecar_env()],
    }
    if declare_ports:
        container["ports"] = [
            {"name": port.name, "containerPort": port.number, "protocol": "TCP"} for port in settings.ports()
        ]
    container["readinessProbe"] = _on_port(READINESS_PROBE, settings.health_port)
    container["livenessProbe"] = _on_port(LIVENESS_PROBE, settings.health_port)
    container["resources"] = copy_document(RESOURCES)
    container["securityContext"] = copy_document(SECURITY_CONTEXT)
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    if native:
        container["restartPolicy"] = SIDECAR_RESTART_POLICY
    return container


def _on_port(probe: dict[str, Any], port: int) -> dict[str, Any]:
    moved: dict[str, Any] = copy_document(probe)
    moved["httpGet"]["port"] = port
    return moved


def announce_metrics(annotations: dict[str, Any], settings: PodSettings) -> None:
    """Point the prometheus.io annotations at the metrics port, so annotation-based scraping (and
    Istio's metrics merge, which reads them) finds the sidecar; nothing if the port is off.

    A pod that already has any prometheus.io annotation keeps them as they are: they announce the
    app's own exporter (or Istio already moved them to pilot-agent), the pod can announce only one
    endpoint, and the app's must win. The sidecar is then scraped through the PodMonitor
    (docs/behaviour.md#being-found).
    """
    if settings.metrics_port is None or any(str(key).startswith(PROMETHEUS_ANNOTATION_PREFIX) for key in annotations):
        return
    annotations[PROMETHEUS_SCRAPE_ANNOTATION] = "true"
    annotations[PROMETHEUS_PORT_ANNOTATION] = str(settings.metrics_port)
    annotations[PROMETHEUS_PATH_ANNOTATION] = METRICS_PATH
