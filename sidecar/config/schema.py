"""The Kubernetes shapes the loader reads (corev1.Probe, corev1.ContainerPort), as msgspec Structs.

msgspec rather than pydantic because it imports in milliseconds, and `check` must
start fast. Unknown fields are errors, so a typo like `periodSecond` is caught
instead of silently ignored. Optional fields accept null, as the API server does.

    ctx = ErrorContext("pod.yaml", 'Pod/x: container "app"')
    probe = to_struct(raw, Probe, ctx, "readinessProbe")
    # ConfigError: pod.yaml: Pod/x: container "app": readinessProbe.periodSecond: unknown field
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec

from sidecar.errors import ErrorContext, did_you_mean, field_name, join_field

INT32_MAX = 2**31 - 1
# A misspelt key's problem; "; did you mean ...?" may follow (lint tells it apart by this start).
UNKNOWN_FIELD = "unknown field"
MAX_PORT = 65535

NonNegativeInt32 = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
PositiveInt64 = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
PortNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_PORT)]
HostPortNumber = Annotated[int, msgspec.Meta(ge=0, le=MAX_PORT)]
# IntOrString: a number, a digit string, or a port name. Range and names are
# checked by the loader, which knows the container's ports.
IntOrString = int | str


class HTTPHeader(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    value: str


class HTTPGetAction(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Optional because Knative fills in the serving port when it is left out.
    port: IntOrString | None = None
    path: str | None = None
    host: str | None = None
    scheme: str | None = None
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(msgspec.Struct, forbid_unknown_fields=True):
    port: IntOrString | None = None
    host: str | None = None


class GRPCAction(msgspec.Struct, forbid_unknown_fields=True):
    # corev1 says int32; a string is accepted here only to say why it is wrong.
    port: IntOrString | None = None
    service: str | None = None


class ExecAction(msgspec.Struct, forbid_unknown_fields=True):
    command: list[str] | None = None


class Probe(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: NonNegativeInt32 | None = None
    timeout_seconds: NonNegativeInt32 | None = None
    period_seconds: NonNegativeInt32 | None = None
    success_threshold: NonNegativeInt32 | None = None
    failure_threshold: NonNegativeInt32 | None = None
    termination_grace_period_seconds: PositiveInt64 | None = None


Action = HTTPGetAction | TCPSocketAction | GRPCAction | ExecAction
# The probes of a corev1.Container.
PROBE_KINDS = ("readinessProbe", "livenessProbe", "startupProbe")
# A probe's handlers, in the order messages list them; a valid probe sets exactly one.
HANDLER_KEYS = ("httpGet", "tcpSocket", "grpc", "exec")


def probe_actions(probe: Probe) -> dict[str, Action]:
    """The handlers a probe sets, by field name, in HANDLER_KEYS order."""
    actions = (probe.http_get, probe.tcp_socket, probe.grpc, probe.exec)
    return {key: action for key, action in zip(HANDLER_KEYS, actions, strict=True) if action is not None}


def handler_keys(probe: object) -> list[str]:
    """The same as `probe_actions`, on plain YAML/JSON data that may not even be a valid probe."""
    if not isinstance(probe, dict):
        return []
    return [key for key in HANDLER_KEYS if probe.get(key) is not None]


class EnvVar(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: str
    value: str | None = None
    # A secret, a config map or a field of the pod: known to the kubelet at start, never here.
    value_from: dict[str, Any] | None = None


class ContainerPort(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    container_port: PortNumber
    name: str | None = None
    protocol: str | None = None
    host_port: HostPortNumber | None = None
    host_ip: str | None = msgspec.field(default=None, name="hostIP")


# Every field of corev1.Container, so a misspelt key is an error, not silence.
CONTAINER_FIELDS = frozenset({
    "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
    "resources", "resizePolicy", "restartPolicy", "restartPolicyRules", "volumeMounts",
    "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
    "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",
    "securityContext", "stdin", "stdinOnce", "tty",
})  # fmt: skip
# Our own extension, allowed only in a containers file: `required: false`.
CONTAINERS_FILE_FIELDS = CONTAINER_FIELDS | {"required"}

T = TypeVar("T")


def to_struct(value: object, type_: type[T], ctx: ErrorContext, field: str) -> T:
    """Convert plain YAML/JSON data to `type_`, or raise one ConfigError line at `field`."""
    try:
        return msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as err:
        rel_field, problem = describe_validation_error(str(err))
        if problem == UNKNOWN_FIELD:
            problem += _unknown_field_hint(type_, str(err))
        raise ctx.error(join_field(field, rel_field), problem) from None
    except RecursionError:  # self-referencing YAML aliases
        raise ctx.error(field, "nested too deeply") from None


_AT = re.compile(r"(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`(?: in `(?P<parent>[^`]*)`)?)?", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>.*)`", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<name>.*)`", re.S)
_WRONG_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`", re.S)
_CONSTRAINT = re.compile(r"Expected `[^`]+` (?P<rule>.+)", re.S)
# One step of msgspec's path after `$`: `.key` or `[index]`.
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")

_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "bool": "a boolean",
    "float": "a number",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
    "bytes": "binary data",
    "date": "a date",
    "datetime": "a timestamp",
    "time": "a time",
}


def describe_validation_error(text: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.x.y[0]`" as ("x.y[0]", "expected ...")."""
    match = _AT.fullmatch(text)
    if match is None:  # pragma: no cover - the pattern matches any text
        return "", text
    msg, path, parent = match["msg"], match["path"], match["parent"]
    if parent is not None:  # "- at `key` in `$.x`": a mapping key of the wrong type
        return _relative(parent), "keys must be strings"
    field = _relative(path or "$")
    if found := _UNKNOWN.fullmatch(msg):
        return join_field(field, field_name(found["name"])), UNKNOWN_FIELD
    if found := _MISSING.fullmatch(msg):
        return join_field(field, field_name(found["name"])), "required"
    if found := _WRONG_TYPE.fullmatch(msg):
        return field, f"expected {_type_words(found['want'])}, got {_type_words(found['got'])}"
    if found := _CONSTRAINT.fullmatch(msg):
        return field, f"must be {found['rule']}"
    return field, msg


def _unknown_field_hint(type_: object, text: str) -> str:
    """The "; did you mean periodSeconds?" for msgspec's "Object contains unknown field
    `periodSecond` - at `$`": the fields of the struct at that path are the choices."""
    match = _AT.fullmatch(text)
    found = _UNKNOWN.fullmatch(match["msg"]) if match else None
    if match is None or found is None:  # pragma: no cover - called for unknown fields only
        return ""
    return did_you_mean(found["name"], _field_names_at(type_, match["path"] or "$"))


def _field_names_at(type_: object, path: str) -> list[str]:
    """The keys (as written in YAML) of the struct at msgspec's `$.httpGet.httpHeaders[0]` in `type_`."""
    import msgspec.inspect as mi  # only on the way to an error message

    def unwrap(info: mi.Type | None) -> mi.Type | None:
        while True:
            if isinstance(info, mi.Metadata):
                info = info.type
            elif isinstance(info, mi.UnionType):
                kinds = [kind for kind in info.types if not isinstance(kind, mi.NoneType)]
                if len(kinds) != 1:
                    return info
                info = kinds[0]
            else:
                return info

    info: mi.Type | None = mi.type_info(type_)
    for key, index in _PATH_STEP.findall(path.removeprefix("$")):
        info = unwrap(info)
        if key and isinstance(info, mi.StructType):
            info = next((f.type for f in info.fields if f.encode_name == key), None)
        elif index and isinstance(info, mi.ListType):
            info = info.item_type
        else:
            return []
    info = unwrap(info)
    return [f.encode_name for f in info.fields] if isinstance(info, mi.StructType) else []


def _relative(path: str) -> str:
    return path.removeprefix("$").removeprefix(".")


def _type_words(union: str) -> str:
    names = [name.strip() for name in union.split("|")]
    if len(names) > 1:
        names = [name for name in names if name != "null"]
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)
