"""What a probe's port can refer to in one container of a pod template, for any of its probes.

The loader (sidecar.containers) resolves readiness ports the same way; `inject`
(liveness rewriting) and `lint` (liveness and startup checks) need it for the
other probes too.

    ports = container_port_context(ref, 0, ref.pod_spec["containers"][0], ctx)
    ports.named, ports.default  # {"http": 8080}, 8080 for Knative, None otherwise
"""

from __future__ import annotations

from typing import Any

from sidecar.containers import KNATIVE_DEFAULT_USER_PORT
from sidecar.error_context import ErrorContext
from sidecar.k8s_schema import ContainerPort, to_struct
from sidecar.manifests import PodSpecRef
from sidecar.probe_conversion import PortContext


def container_port_context(ref: PodSpecRef, index: int, entry: dict[str, Any], ctx: ErrorContext) -> PortContext:
    """Named ports of `entry`; for Knative also its serving port, which fills in a missing probe port.

    `index` is the container's position in spec.containers. Raises ConfigError for malformed ports.
    """
    raw = entry.get("ports")
    ports = [] if raw is None else to_struct(raw, list[ContainerPort], ctx, "ports")
    named = {port.name: port.container_port for port in ports if port.name}
    if not ref.knative:
        return PortContext(named)
    if ports:
        return PortContext(named, ports[0].container_port)
    containers = ref.pod_spec.get("containers") or []
    no_ports_anywhere = not any(isinstance(c, dict) and c.get("ports") for c in containers)
    # Knative serves a pod that declares no ports on 8080, from its first container.
    return PortContext(named, KNATIVE_DEFAULT_USER_PORT if index == 0 and no_ports_anywhere else None)
