"""The few bytes of gRPC that `grpc.health.v1.Health` needs, shared by the probe and the health port.

Both speak HTTP/2 through h2 (python-hyper) rather than grpcio: the kubelet's grpc probe
dials a new connection for every attempt, and a grpcio channel per attempt costs
milliseconds of CPU, while its import adds about 10 MiB to the process (measured in
docs/performance.md). The health protocol's messages are one field each, so their
protobuf encoding is written here by hand, checked against grpcio's in the tests.

    body = frame(encode_request("api"))             # a length-prefixed HealthCheckRequest
    service = decode_request(unframe(body))         # "api"; WireError if malformed
    status = decode_response(unframe(frame(encode_response(SERVING))))   # 1
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, unquote

HEALTH_SERVICE = "grpc.health.v1.Health"
CHECK_PATH = f"/{HEALTH_SERVICE}/Check"
WATCH_PATH = f"/{HEALTH_SERVICE}/Watch"
LIST_PATH = f"/{HEALTH_SERVICE}/List"
CONTENT_TYPE = "application/grpc"

# HealthCheckResponse.ServingStatus (grpc/health/v1/health.proto).
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {UNKNOWN: "UNKNOWN", SERVING: "SERVING", NOT_SERVING: "NOT_SERVING", SERVICE_UNKNOWN: "SERVICE_UNKNOWN"}

# grpc status codes (grpc/status.proto), by number.
CODE_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)
OK, DEADLINE_EXCEEDED, NOT_FOUND, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 0, 4, 5, 8, 12, 13, 14
# A response without grpc-status: the code gRPC clients derive from its HTTP status
# (grpc's doc/http-grpc-status-mapping.md); any other status is UNKNOWN.
HTTP_STATUS_CODES = {400: INTERNAL, 401: 16, 403: 7, 404: UNIMPLEMENTED, 429: UNAVAILABLE, 502: UNAVAILABLE,
                     503: UNAVAILABLE, 504: UNAVAILABLE}
UNKNOWN_CODE = 2

# The 5-byte prefix of every message: a compressed flag and a big-endian length.
PREFIX_BYTES = 5
# protobuf: field 1 as a length-delimited string (the request) or a varint (the response).
_SERVICE_TAG = 0x0A
_STATUS_TAG = 0x08
# A map entry's value (field 2, length-delimited); its key, field 1, shares _SERVICE_TAG's byte.
_ENTRY_VALUE_TAG = 0x12
# grpc-message is percent-encoded; these stay as they are (printable ASCII but '%').
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class WireError(ValueError):
    """Bytes that are not what the protocol allows; str() says what, briefly."""


def code_name(code: int) -> str:
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else f"code {code}"


def frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(data: bytes) -> bytes:
    """The one uncompressed message in `data`; WireError for anything else."""
    if len(data) < PREFIX_BYTES:
        raise WireError("truncated message")
    if data[0] != 0:
        raise WireError("compressed message")
    length = int.from_bytes(data[1:PREFIX_BYTES], "big")
    if len(data) != PREFIX_BYTES + length:
        raise WireError("message length does not match")
    return data[PREFIX_BYTES:]


def framed_length(data: bytes) -> int | None:
    """How long the first framed message in `data` is, prefix included; None until its prefix arrived."""
    if len(data) < PREFIX_BYTES:
        return None
    return PREFIX_BYTES + int.from_bytes(data[1:PREFIX_BYTES], "big")


def encode_request(service: str) -> bytes:
    raw = service.encode()
    return bytes((_SERVICE_TAG,)) + _varint(len(raw)) + raw if raw else b""


def decode_request(message: bytes) -> str:
    """HealthCheckRequest.service; unknown fields are skipped, as protobuf does."""
    service = b""
    for tag, value in _fields(message):
        if tag == _SERVICE_TAG:
            if not isinstance(value, bytes):
                raise WireError("service is not a string")
            service = value
    try:
        return service.decode()
    except UnicodeDecodeError:
        raise WireError("service is not UTF-8") from None


def encode_response(status: int) -> bytes:
    return bytes((_STATUS_TAG,)) + _varint(status) if status else b""


def decode_response(message: bytes) -> int:
    """HealthCheckResponse.status, as a number (proto3 enums are open)."""
    status = UNKNOWN
    for tag, value in _fields(message):
        if tag == _STATUS_TAG and isinstance(value, int):
            status = value
    return status


def encode_list_response(statuses: Iterable[tuple[str, int]]) -> bytes:
    """HealthListResponse: `map<string, HealthCheckResponse> statuses = 1`, one entry per service.

    Each entry is a message of its own (key = 1, value = 2), both always written, as grpcio does.
    """
    out = bytearray()
    for service, status in statuses:
        key = service.encode()
        value = encode_response(status)
        entry = b"".join((bytes((_SERVICE_TAG,)), _varint(len(key)), key,
                          bytes((_ENTRY_VALUE_TAG,)), _varint(len(value)), value))
        out += bytes((_SERVICE_TAG,)) + _varint(len(entry)) + entry
    return bytes(out)


def check_message(message: bytes) -> None:
    """WireError unless `message` is well-formed protobuf: a HealthListRequest, which has no fields to read."""
    _fields(message)


def encode_message(text: str) -> str:
    """grpc-message's percent-encoding."""
    return quote(text, safe=_MESSAGE_SAFE)


def decode_message(value: str) -> str:
    return unquote(value, errors="replace")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise WireError("bad varint")


def _fields(message: bytes) -> list[tuple[int, int | bytes]]:
    """(tag byte, value) of each field: a varint as int, a length-delimited field as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        wire_type = key & 0x7
        if wire_type == 0:
            value, at = _read_varint(message, at)
            fields.append((key, value))
        elif wire_type == 2:
            length, at = _read_varint(message, at)
            if at + length > len(message):
                raise WireError("truncated field")
            fields.append((key, message[at : at + length]))
            at += length
        elif wire_type in (1, 5):  # fixed64, fixed32: skipped
            at += 8 if wire_type == 1 else 4
            if at > len(message):
                raise WireError("truncated field")
        else:
            raise WireError(f"unsupported wire type {wire_type}")
    return fields
