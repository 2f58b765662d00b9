"""One corev1.Probe (plain YAML/JSON data) to a probes.spec handler and a ProbeTiming,
and what a probe's port can refer to in its container.

This is where the kubelet's rules live: exactly one handler, named ports resolved
from the container's own `ports`, 0 meaning "the default" for timeouts and
thresholds, and no named port for grpc. Knative's rules for ports live here too:
its serving port fills in a missing probe port.

    raw = {"httpGet": {"port": "http", "path": "/health"}, "periodSeconds": 5}
    handler, timing = convert_probe(raw, ctx, "readinessProbe", PortContext({"http": 8080}))
    handler, timing.period  # HttpGetSpec(port=8080, path="/health", ...), 5.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from probes.spec import DEFAULT_HOST, ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.pod_template import PodSpecRef, WatchedContainer
from sidecar.config.schema import (
    MAX_PORT,
    ContainerPort,
    ExecAction,
    GRPCAction,
    HTTPGetAction,
    IntOrString,
    Probe,
    TCPSocketAction,
    probe_actions,
    to_struct,
)
from sidecar.config.wire_text import is_header_name, is_header_value, is_host, is_path
from sidecar.errors import ErrorContext, join_field, quote
from sidecar.model import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_TIMEOUT_SECONDS,
    ProbeTiming,
)

# Knative's default user port: a Knative pod that declares no ports at all serves
# on 8080 from its first container, and that is where Knative's default probe goes.
KNATIVE_DEFAULT_USER_PORT = 8080


@dataclass(frozen=True, slots=True)
class PortContext:
    """What a probe's port can refer to in its container.

    `default` is Knative's serving port: used when a handler gives no port (or 0),
    and for a probe that names no handler at all. None outside Knative, where a
    port is required. `serving` is where a container without a readinessProbe is
    checked (Knative's default probe, TCP): its first declared port, or Knative's 8080.
    """

    named: Mapping[str, int] = field(default_factory=dict)
    default: int | None = None
    serving: int | None = None


def container_ports(entry: dict[str, Any], ctx: ErrorContext, *, knative: bool, fallback: int | None) -> PortContext:
    """The PortContext of one container's `ports`; `fallback` serves when it declares none.

    ConfigError for malformed ports or a port name used twice.
    """
    raw = entry.get("ports")
    ports = [] if raw is None else to_struct(raw, list[ContainerPort], ctx, "ports")
    named: dict[str, int] = {}
    for index, port in enumerate(ports):
        if port.name and port.name in named:
            raise ctx.error(f"ports[{index}].name", f"duplicate port name {quote(port.name)}")
        if port.name:
            named[port.name] = port.container_port
    serving = ports[0].container_port if ports else fallback
    return PortContext(named, serving if knative else None, serving)


def pod_container_ports(ref: PodSpecRef, container: WatchedContainer, ctx: ErrorContext) -> PortContext:
    """The PortContext of a container in a pod template, for any of its probes."""
    users = ref.pod_spec.get("containers") or []
    no_ports_anywhere = not any(isinstance(c, dict) and c.get("ports") for c in users)
    # Knative serves a pod that declares no ports on 8080, from its first container.
    serves_by_default = ref.knative and container.in_containers and container.index == 0 and no_ports_anywhere
    fallback = KNATIVE_DEFAULT_USER_PORT if serves_by_default else None
    return container_ports(container.entry, ctx, knative=ref.knative, fallback=fallback)


def convert_probe(raw: object, ctx: ErrorContext, prefix: str, ports: PortContext) -> tuple[HandlerSpec, ProbeTiming]:
    """Validate one probe; raise ConfigError naming `prefix`.field for any mistake."""
    probe = to_struct(raw, Probe, ctx, prefix)
    given = list(probe_actions(probe))
    if len(given) > 1:
        raise ctx.error(prefix, f"has {len(given)} handlers ({', '.join(given)}); use exactly one")
    handler: HandlerSpec
    if probe.http_get is not None:
        handler = _http_get(probe.http_get, ctx, join_field(prefix, "httpGet"), ports)
    elif probe.tcp_socket is not None:
        handler = _tcp_socket(probe.tcp_socket, ctx, join_field(prefix, "tcpSocket"), ports)
    elif probe.grpc is not None:
        handler = _grpc(probe.grpc, ctx, join_field(prefix, "grpc"), ports)
    elif probe.exec is not None:
        handler = _exec(probe.exec, ctx, join_field(prefix, "exec"))
    elif ports.default is not None:
        # Knative gives a handler-less readiness probe a TCP check on the serving port.
        handler = TcpSocketSpec(port=ports.default)
    else:
        raise ctx.error(prefix, "no handler; set one of httpGet, tcpSocket, grpc or exec")
    return handler, _timing(probe)


def _timing(probe: Probe) -> ProbeTiming:
    # The API server defaults 0 and absent alike; periodSeconds 0 is our aggressive mode.
    return ProbeTiming(
        initial_delay=float(probe.initial_delay_seconds or 0),
        timeout=float(probe.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
        period=float(probe.period_seconds or 0),
        success_threshold=probe.success_threshold or DEFAULT_SUCCESS_THRESHOLD,
        failure_threshold=probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD,
    )


def _http_get(action: HTTPGetAction, ctx: ErrorContext, prefix: str, ports: PortContext) -> HttpGetSpec:
    scheme = (action.scheme or "HTTP").lower()
    if scheme not in ("http", "https"):
        raise ctx.error(join_field(prefix, "scheme"), f"must be HTTP or HTTPS, got {quote(action.scheme)}")
    path = action.path or "/"
    if not is_path(path):
        raise ctx.error(join_field(prefix, "path"), f"must not contain control characters: {quote(path)}")
    headers = []
    for index, header in enumerate(action.http_headers or ()):
        at = join_field(prefix, f"httpHeaders[{index}]")
        if not is_header_name(header.name):
            raise ctx.error(join_field(at, "name"), f"invalid header name {quote(header.name)}")
        if not is_header_value(header.value):
            raise ctx.error(join_field(at, "value"), "must not contain CR, LF or NUL")
        headers.append((header.name, header.value))
    return HttpGetSpec(
        port=resolve_port(action.port, ctx, join_field(prefix, "port"), ports),
        path=path,
        host=_host(action.host, ctx, join_field(prefix, "host")),
        scheme=scheme,
        headers=tuple(headers),
    )


def _tcp_socket(action: TCPSocketAction, ctx: ErrorContext, prefix: str, ports: PortContext) -> TcpSocketSpec:
    return TcpSocketSpec(
        port=resolve_port(action.port, ctx, join_field(prefix, "port"), ports),
        host=_host(action.host, ctx, join_field(prefix, "host")),
    )


def _grpc(action: GRPCAction, ctx: ErrorContext, prefix: str, ports: PortContext) -> GrpcSpec:
    port = resolve_port(action.port, ctx, join_field(prefix, "port"), ports, allow_named=False)
    service = action.service or ""
    if not is_path(service):
        raise ctx.error(join_field(prefix, "service"), f"must not contain control characters: {quote(service)}")
    return GrpcSpec(port=port, service=service)


def _exec(action: ExecAction, ctx: ErrorContext, prefix: str) -> ExecSpec:
    command = action.command or []
    if not command or not command[0]:
        raise ctx.error(join_field(prefix, "command"), "must be a non-empty list of strings")
    if any("\x00" in arg for arg in command):
        raise ctx.error(join_field(prefix, "command"), "must not contain NUL characters")
    return ExecSpec(command=tuple(command))


def _host(host: str | None, ctx: ErrorContext, field_path: str) -> str:
    if not host:
        return DEFAULT_HOST
    if not is_host(host):
        raise ctx.error(field_path, f"must not contain spaces, '/', '[]@?#' or control characters: {quote(host)}")
    return host


def resolve_port(
    raw: IntOrString | None,
    ctx: ErrorContext,
    field_path: str,
    ports: PortContext,
    *,
    allow_named: bool = True,
) -> int:
    """A probe's port as a number: an int, a digit string, or a name from the container's ports."""
    if isinstance(raw, str) and not (raw.isascii() and raw.isdigit()):
        if not allow_named:
            raise ctx.error(field_path, "must be a number, named ports are not allowed for grpc")
        if raw not in ports.named:
            raise ctx.error(field_path, f"named port {quote(raw)} not found in ports")
        return ports.named[raw]
    # A 5000-digit string would trip int()'s digit limit; it is out of range anyway.
    number = (int(raw) if len(raw) <= 6 else MAX_PORT + 1) if isinstance(raw, str) else raw
    if not number:  # absent or 0: Go's zero IntOrString, which Knative fills in
        if ports.default is not None:
            return ports.default
        if number is None:
            raise ctx.error(field_path, "required")
    if number is None or not 1 <= number <= MAX_PORT:
        shown = raw if isinstance(raw, int) and raw.bit_length() < 64 else quote(raw)
        raise ctx.error(field_path, f"must be between 1 and {MAX_PORT}, got {shown}")
    return number
