"""The container `inject` adds to a pod: one place for its name, ports, probes, resources and security.

    container = sidecar_container("readiness-sidecar:0.1.0", config_json, declare_ports=True)
    container["readinessProbe"]["httpGet"]["path"]  # "/ready?wait=900ms"
"""

from __future__ import annotations

import copy
from typing import Any

from sidecar.config.pod_template import SIDECAR_RESTART_POLICY
from sidecar.contract import (
    CONFIG_ENV,
    GRPC_PORT,
    GRPC_PORT_NAME,
    HEALTH_PORT,
    HEALTH_PORT_NAME,
    HEALTHZ_PATH,
    METRICS_PORT,
    METRICS_PORT_NAME,
    READY_PATH,
    SIDECAR_NAME,
    WAIT_PARAM,
)

PORTS = ((HEALTH_PORT_NAME, HEALTH_PORT), (GRPC_PORT_NAME, GRPC_PORT), (METRICS_PORT_NAME, METRICS_PORT))

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
    image: str,
    config_json: str,
    *,
    declare_ports: bool,
    native: bool = False,
    volume_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A fresh container dict (no structure shared with the constants above).

    `declare_ports` is False for Knative, which lets only the serving container
    declare ports; the probes use port numbers, so they work either way.
    """
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": image,
        "args": ["run"],
        "env": [{"name": CONFIG_ENV, "value": config_json}],
    }
    if declare_ports:
        container["ports"] = [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS]
    container["readinessProbe"] = copy.deepcopy(READINESS_PROBE)
    container["livenessProbe"] = copy.deepcopy(LIVENESS_PROBE)
    container["resources"] = copy.deepcopy(RESOURCES)
    container["securityContext"] = copy.deepcopy(SECURITY_CONTEXT)
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    if native:
        container["restartPolicy"] = SIDECAR_RESTART_POLICY
    return container

