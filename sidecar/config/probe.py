"""One corev1.Probe (plain YAML/JSON data) to a probes.spec handler and a ProbeTiming,
and what a probe's port can refer to in its container.

This is where the kubelet's rules live: exactly one handler, named ports resolved
from the container's own `ports`, 0 meaning "the default" for timeouts and
thresholds, and no named port for grpc. Knative's rules for ports live here too:
its serving port fills in a missing probe port.

    raw = {"httpGet": {"port": "http", "path": "/health"}, "periodSeconds": 5}
    handler, timing = convert_probe(raw, ctx, "readinessProbe", ContainerContext({"http": 8080}))
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
    PROBE_KINDS,
    ContainerPort,
    EnvVar,
    ExecAction,
    GRPCAction,
    HTTPGetAction,
    IntOrString,
    Probe,
    TCPSocketAction,
    handler_keys,
    probe_actions,
    to_struct,
)
from sidecar.config.wire_text import host_problem, is_header_name, is_header_value, is_host, is_path
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
class ContainerContext:
    """What a probe can refer to in its container: its ports and its environment.

    `named` are the named ports. `default` is Knative's serving port: used when a handler
    gives no port (or 0), and for a probe that names no handler at all. None outside
    Knative, where a port is required. `serving` is where a container without a
    readinessProbe is checked (Knative's default probe, TCP): its first declared port,
    or Knative's 8080. `env` maps the container's env names to their values, for
    `$(VAR)` in exec commands; None for a source that carries no env (`--probe`,
    SERVING_READINESS_PROBE), whose commands are taken as written. `host` is where a
    probe that names no host goes (every grpc probe, which can't name one): the pod's
    loopback, or its pod IP with --probe-host pod-ip, as the kubelet's probes go to the pod IP.
    """

    named: Mapping[str, int] = field(default_factory=dict)
    default: int | None = None
    serving: int | None = None
    env: Mapping[str, str] | None = None
    host: str = DEFAULT_HOST


def container_context(
    entry: dict[str, Any], ctx: ErrorContext, *, knative: bool, fallback: int | None, host: str = DEFAULT_HOST
) -> ContainerContext:
    """The ContainerContext of one container: its `ports` (`fallback` serves when it declares
    none), if a probe of it runs a command, its `env`, and the `host` probes default to.

    ConfigError for malformed ports, a port name used twice, or a malformed env.
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
    # Read only where it is used: env of any shape never stops a container without exec probes.
    runs_commands = any("exec" in handler_keys(entry.get(kind)) for kind in PROBE_KINDS)
    env = _static_env(entry.get("env"), ctx) if runs_commands else {}
    return ContainerContext(named, serving if knative else None, serving, env, host)


def _static_env(raw: object, ctx: ErrorContext) -> dict[str, str]:
    """env as the kubelet maps it for exec probes (pkg/kubelet/container/helpers.go,
    v1EnvVarsToMap): every name to its `value`, "" for a `valueFrom` entry, the last of a
    repeated name winning."""
    entries = [] if raw is None else to_struct(raw, list[EnvVar], ctx, "env")
    return {entry.name: entry.value or "" for entry in entries}


def expand_command_argument(argument: str, env: Mapping[str, str]) -> str:
    """$(VAR) replaced from `env`, as the kubelet's ExpandContainerCommandOnlyStatic does.

    `$$` is an escaped `$`; an undefined `$(VAR)`, an unclosed `$(` and a `$` before any
    other character stay as written (kubernetes third_party/forked/golang/expansion).
    """
    if "$" not in argument:
        return argument
    out: list[str] = []
    cursor, end = 0, len(argument)
    while cursor < end:
        char = argument[cursor]
        if char != "$" or cursor + 1 == end:
            out.append(char)
            cursor += 1
            continue
        after = argument[cursor + 1]
        if after == "$":
            out.append("$")
            cursor += 2
        elif after == "(" and (close := argument.find(")", cursor + 2)) >= 0:
            name = argument[cursor + 2 : close]
            out.append(env.get(name, f"$({name})"))
            cursor = close + 1
        else:
            out.append("$" + after)
            cursor += 2
    return "".join(out)


def pod_container_context(
    ref: PodSpecRef, container: WatchedContainer, ctx: ErrorContext, *, host: str = DEFAULT_HOST
) -> ContainerContext:
    """The ContainerContext of a container in a pod template, for any of its probes."""
    users = ref.pod_spec.get("containers") or []
    no_ports_anywhere = not any(isinstance(c, dict) and c.get("ports") for c in users)
    # Knative serves a pod that declares no ports on 8080, from its first container.
    serves_by_default = ref.knative and container.in_containers and container.index == 0 and no_ports_anywhere
    fallback = KNATIVE_DEFAULT_USER_PORT if serves_by_default else None
    return container_context(container.entry, ctx, knative=ref.knative, fallback=fallback, host=host)


def convert_probe(
    raw: object, ctx: ErrorContext, prefix: str, ports: ContainerContext
) -> tuple[HandlerSpec, ProbeTiming]:
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
        handler = _exec(probe.exec, ctx, join_field(prefix, "exec"), ports.env)
    elif ports.default is not None:
        # Knative gives a handler-less readiness probe a TCP check on the serving port.
        handler = TcpSocketSpec(port=ports.default, host=ports.host, host_defaulted=True)
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


def _http_get(action: HTTPGetAction, ctx: ErrorContext, prefix: str, ports: ContainerContext) -> HttpGetSpec:
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
        host=_host(action.host, ctx, join_field(prefix, "host"), ports.host),
        scheme=scheme,
        headers=tuple(headers),
        host_defaulted=not action.host,
    )


def _tcp_socket(action: TCPSocketAction, ctx: ErrorContext, prefix: str, ports: ContainerContext) -> TcpSocketSpec:
    return TcpSocketSpec(
        port=resolve_port(action.port, ctx, join_field(prefix, "port"), ports),
        host=_host(action.host, ctx, join_field(prefix, "host"), ports.host),
        host_defaulted=not action.host,
    )


def _grpc(action: GRPCAction, ctx: ErrorContext, prefix: str, ports: ContainerContext) -> GrpcSpec:
    port = resolve_port(action.port, ctx, join_field(prefix, "port"), ports, allow_named=False)
    service = action.service or ""
    if not is_path(service):
        raise ctx.error(join_field(prefix, "service"), f"must not contain control characters: {quote(service)}")
    # corev1's GRPCAction has no host: the kubelet always dials the pod IP.
    return GrpcSpec(port=port, service=service, host=ports.host)


def _exec(action: ExecAction, ctx: ErrorContext, prefix: str, env: Mapping[str, str] | None) -> ExecSpec:
    command = action.command or []
    if not command or not command[0]:
        raise ctx.error(join_field(prefix, "command"), "must be a non-empty list of strings")
    if any("\x00" in arg for arg in command):
        raise ctx.error(join_field(prefix, "command"), "must not contain NUL characters")
    if env is not None:
        command = [expand_command_argument(arg, env) for arg in command]
    return ExecSpec(command=tuple(command))


def _host(host: str | None, ctx: ErrorContext, field_path: str, default: str) -> str:
    """The host a probe names, else `default`: as the kubelet's "" means the pod IP
    (kubernetes pkg/probe/http/request.go, pkg/kubelet/prober/prober.go)."""
    if not host:
        return default
    if not is_host(host):
        raise ctx.error(field_path, f"must not contain spaces, '/', '[]@?#' or control characters: {quote(host)}")
    if (problem := host_problem(host)) is not None:
        raise ctx.error(field_path, f"{quote(host)} {problem}")
    return host


def resolve_port(
    raw: IntOrString | None,
    ctx: ErrorContext,
    field_path: str,
    ports: ContainerContext,
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
