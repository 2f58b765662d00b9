"""One pod's sidecar settings: the inject options, with the pod's own annotations winning.

inject and the webhook both come here (through `inject_object`), so a pod annotated
`readiness-sidecar.io/health-port: "9550"` gets the same sidecar either way. A value
is parsed by the parser of the `run` setting it becomes (`sidecar.ports`,
`sidecar.durations`), so the annotation takes what the sidecar's flag takes; a bad one
is one ConfigError naming the annotation.

    settings = pod_settings(ref, ErrorContext("web.yaml", ref.label), InjectOptions())
    settings.health_port, settings.drain_seconds, settings.sidecar_env()  # 8550, 30.0, []
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sidecar.config.pod_template import PodSpecRef
from sidecar.contract import (
    DEFAULT_DRAIN_SECONDS,
    DRAIN_SECONDS_ANNOTATION,
    ENV_PREFIX,
    EXEC_PROBES_ANNOTATION,
    GRPC_PORT,
    GRPC_PORT_ANNOTATION,
    GRPC_PORT_NAME,
    HEALTH_PORT,
    HEALTH_PORT_ANNOTATION,
    HEALTH_PORT_NAME,
    IMAGE_ANNOTATION,
    METRICS_PORT,
    METRICS_PORT_ANNOTATION,
    METRICS_PORT_NAME,
    POD_IP_ENV,
    PROBE_HOST_ANNOTATION,
    PROBE_HOST_ENV,
    PROBE_HOST_LOCALHOST,
    PROBE_HOST_POD_IP,
    SIDECAR_NAME,
)
from sidecar.durations import parse_finite_duration
from sidecar.errors import ErrorContext, quote, type_words
from sidecar.k8s.options import EXEC_PROBE_MODES, InjectOptions
from sidecar.ports import parse_port

PROBE_HOSTS = (PROBE_HOST_LOCALHOST, PROBE_HOST_POD_IP)
# After the drain the app gets SIGTERM and needs time to stop before the kubelet's SIGKILL.
STOP_SECONDS = 10
# The env vars `run` reads for its settings (ENV_PREFIX + the flag's name, as runtime.settings.env_name).
HEALTH_PORT_ENV = ENV_PREFIX + "HEALTH_PORT"
GRPC_PORT_ENV = ENV_PREFIX + "GRPC_PORT"
METRICS_PORT_ENV = ENV_PREFIX + "METRICS_PORT"
DRAIN_SECONDS_ENV = ENV_PREFIX + "DRAIN_SECONDS"
PORT_OFF = "off"  # what `run` reads as a port turned off
# queue-proxy's ports in every Knative pod: the ones Knative's validation reserves (HTTP, HTTP/2,
# admin, both metrics ports, profiling: pkg/apis/serving/k8s_validation.go reservedPorts), and its HTTPS 8112.
KNATIVE_QUEUE_PROXY_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008, 8112})


class SidecarPort(NamedTuple):
    name: str  # the containerPort's name: rs-health, rs-grpc, rs-metrics
    annotation: str  # the annotation that moves it
    number: int


@dataclass(frozen=True, slots=True)
class PodSettings:
    image: str  # the annotation's, else --image or READINESS_SIDECAR_IMAGE, else DEFAULT_IMAGE
    exec_probes: str  # one of EXEC_PROBE_MODES
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    health_port: int = HEALTH_PORT
    grpc_port: int | None = GRPC_PORT  # None: off
    metrics_port: int | None = METRICS_PORT  # None: off
    probe_host: str = PROBE_HOST_LOCALHOST

    @property
    def grace_seconds(self) -> int:
        """The terminationGracePeriodSeconds the drain needs: the drain, then time to stop."""
        return math.ceil(self.drain_seconds) + STOP_SECONDS

    def ports(self) -> list[SidecarPort]:
        """Every port the sidecar listens on (a port turned off is not)."""
        ports = [
            (HEALTH_PORT_NAME, HEALTH_PORT_ANNOTATION, self.health_port),
            (GRPC_PORT_NAME, GRPC_PORT_ANNOTATION, self.grpc_port),
            (METRICS_PORT_NAME, METRICS_PORT_ANNOTATION, self.metrics_port),
        ]
        return [SidecarPort(name, annotation, port) for name, annotation, port in ports if port is not None]

    def sidecar_env(self) -> list[dict[str, Any]]:
        """The env entries that tell `run` what differs from its defaults (none for a default pod)."""
        env: list[dict[str, Any]] = []
        for name, value, default in (
            (HEALTH_PORT_ENV, self.health_port, HEALTH_PORT),
            (GRPC_PORT_ENV, self.grpc_port, GRPC_PORT),
            (METRICS_PORT_ENV, self.metrics_port, METRICS_PORT),
        ):
            if value != default:
                env.append({"name": name, "value": PORT_OFF if value is None else str(value)})
        if self.drain_seconds != DEFAULT_DRAIN_SECONDS:
            env.append({"name": DRAIN_SECONDS_ENV, "value": _seconds_text(self.drain_seconds)})
        if self.probe_host == PROBE_HOST_POD_IP:
            env.append({"name": PROBE_HOST_ENV, "value": PROBE_HOST_POD_IP})
            env.append({"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        return env


def pod_settings(ref: PodSpecRef, ctx: ErrorContext, options: InjectOptions) -> PodSettings:
    """The options, overridden by the pod's annotations; ConfigError (one line) for a bad value or a port clash."""

    def annotated(key: str, parse: Callable[[str], Any], default: Any) -> Any:
        value = ref.annotation(key)
        if value is None:
            return default
        at = f"annotations[{key}]"
        if not isinstance(value, str):  # annotations are strings; YAML reads 9550 as an integer
            raise ctx.error(at, f"must be a string (quote it), got {type_words(value)}")
        try:
            return parse(value)
        except ValueError as exc:
            raise ctx.error(at, str(exc)) from None

    settings = PodSettings(
        image=annotated(IMAGE_ANNOTATION, _image, options.image_or_default),
        exec_probes=annotated(EXEC_PROBES_ANNOTATION, _choice(EXEC_PROBE_MODES), options.exec_probes),
        drain_seconds=annotated(DRAIN_SECONDS_ANNOTATION, parse_finite_duration, DEFAULT_DRAIN_SECONDS),
        health_port=annotated(HEALTH_PORT_ANNOTATION, _fixed_port(allow_off=False), HEALTH_PORT),
        grpc_port=annotated(GRPC_PORT_ANNOTATION, _fixed_port(allow_off=True), GRPC_PORT),
        metrics_port=annotated(METRICS_PORT_ANNOTATION, _fixed_port(allow_off=True), METRICS_PORT),
        probe_host=annotated(PROBE_HOST_ANNOTATION, _choice(PROBE_HOSTS), PROBE_HOST_LOCALHOST),
    )
    _refuse_port_clashes(ref, ctx, settings)
    return settings


def _fixed_port(*, allow_off: bool) -> Callable[[str], int | None]:
    def parse(text: str) -> int | None:
        port = parse_port(text, allow_off=allow_off)
        if port == 0:  # run's "pick a free port": the kubelet's probes need to know it
            raise ValueError("port 0 would be a free port the kubelet cannot know; give a number 1-65535")
        return port

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be {' or '.join(choices)}, got {quote(text)}")
        return text

    return parse


def _image(text: str) -> str:
    if not text.strip() or any(ch.isspace() for ch in text.strip()):
        raise ValueError(f"must be an image reference, got {quote(text)}")
    return text.strip()


def _seconds_text(seconds: float) -> str:
    """Seconds as `run` reads them back exactly: "45", "1.5"."""
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)


def _refuse_port_clashes(ref: PodSpecRef, ctx: ErrorContext, settings: PodSettings) -> None:
    """The sidecar shares the pod's network namespace: none of its ports may be another's."""
    taken: dict[int, SidecarPort] = {}
    for port in settings.ports():
        if port.number in taken:
            other = taken[port.number].name
            raise ctx.error(f"annotations[{port.annotation}]", f"port {port.number} is the sidecar's {other} too")
        taken[port.number] = port
        if ref.knative and port.number in KNATIVE_QUEUE_PROXY_PORTS:
            raise ctx.error(f"annotations[{port.annotation}]", f"port {port.number} is Knative queue-proxy's")
    for key in ("initContainers", "containers"):
        entries = ref.pod_spec.get(key)
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict) or entry.get("name") == SIDECAR_NAME:
                continue
            declared_ports = entry.get("ports")  # any shape: this runs before the pod spec is validated
            for declared in declared_ports if isinstance(declared_ports, list) else ():
                number = declared.get("containerPort") if isinstance(declared, dict) else None
                if isinstance(number, int) and not isinstance(number, bool) and number in taken:
                    port = taken[number]
                    container = quote(entry.get("name") or "")
                    raise ctx.error(
                        f"annotations[{port.annotation}]",
                        f"the sidecar's {port.name} port {number} is declared by container {container}; choose another",
                    )


__all__ = ["PodSettings", "SidecarPort", "pod_settings"]
