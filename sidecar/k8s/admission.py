"""AdmissionReview v1 in, AdmissionReview v1 out: what the webhook answers, with no I/O.

The answer is `allowed: true` but for one case. The webhook only adds a sidecar; refusing a pod because of
our own problem (a bad probe, a malformed review, a bug) would block deployments, so every such error becomes a
warning that `kubectl` shows and the pod is admitted unchanged. A bad value in one of our own annotations
(`readiness-sidecar.io/health-port: "http"`) is different: the pod's author asked for something inject refuses
too (exit 2), so the pod is denied with that one line rather than started without what was asked for.

    reply = review_reply(body, InjectOptions())
    reply.review["response"]["patch"]   # base64 JSON Patch, present only when the pod changes
    reply.summary                       # one log line: 'uid=... pod=ns/web-*: injected (3 patch ops)'
    reply.result, reply.patch_ops       # 'injected', 3: what the webhook's metrics count
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sidecar.contract import INJECT_ANNOTATION, SIDECAR_NAME
from sidecar.errors import ConfigError, one_line, quote
from sidecar.k8s.inject import InjectOptions, inject_object
from sidecar.k8s.json_patch import json_patch

API_VERSION = "admission.k8s.io/v1"
WARNING_PREFIX = f"{SIDECAR_NAME}: "
# The API server may truncate warnings over 256 characters and drop some of a long list.
MAX_WARNING_CHARS = 256
MAX_WARNINGS = 10
SOURCE = "admission"  # how inject's messages name the input: there is no file
# A denial is the request's fault (a bad annotation value): 400, as the API server answers invalid input.
DENIED_CODE = 400

# A review's result, as the webhook's log and metrics name it.
INJECTED = "injected"  # a patch adds the sidecar
SKIPPED = "skipped"  # admitted unchanged, as asked: opted out, already injected, an UPDATE
DENIED = "denied"  # refused: a bad value in one of our annotations
ERROR = "error"  # admitted unchanged although injection was wanted: see ERROR_KINDS
RESULTS = (INJECTED, SKIPPED, DENIED, ERROR)
# Why a review ended in ERROR. Each is admitted with a warning, never refused.
MALFORMED_REVIEW = "malformed_review"  # not JSON, not an AdmissionReview v1
NOT_A_POD = "not_a_pod"  # the webhook's rules send it something else
INJECT_REFUSED = "inject_refused"  # inject refuses the pod (exit 2 from `inject`)
INTERNAL = "internal"  # a bug
ERROR_KINDS = (MALFORMED_REVIEW, NOT_A_POD, INJECT_REFUSED, INTERNAL)


@dataclass(frozen=True, slots=True)
class Reply:
    review: dict[str, Any]  # the AdmissionReview to send back
    summary: str  # one log line about this review
    uid: str = ""
    pod: str = "?"  # namespace/name (name* for a generateName)
    result: str = SKIPPED  # one of RESULTS
    error_kind: str | None = None  # one of ERROR_KINDS when result is ERROR
    patch_ops: int = 0


class _Skip(Exception):
    """The pod is admitted untouched; `warning` (if any) tells the user why; `error_kind` if it is an ERROR."""

    def __init__(self, reason: str, warning: str = "", error_kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warning = warning
        self.error_kind = error_kind


def review_reply(body: bytes, options: InjectOptions) -> Reply:
    """The AdmissionReview answering `body`. Never raises (except CancelledError, which is not an Exception)."""
    uid, pod_name, error_kind = "", "?", None
    try:
        request = _parse(body)["request"]
        uid = request["uid"]
        pod = _pod(request)
        pod_name = _pod_name(request, pod)
        _refuse_opted_out(pod)
        patch, warnings = _patch_for(pod, options)
    except _Skip as skip:
        outcome = f"{skip.reason}: {skip.warning}" if skip.warning else skip.reason
        warnings, patch, error_kind = [skip.warning] if skip.warning else [], [], skip.error_kind
    except ConfigError as exc:
        if is_annotation_error(exc):
            return _denial(uid, pod_name, f"uid={uid or '?'} pod={pod_name}: denied: {exc}", str(exc))
        outcome, warnings, patch = f"not injected: {exc}", [f"not injected: {exc}"], []
        error_kind = INJECT_REFUSED
    except Exception as exc:  # a bug must not block pod creation: admit, warn, and log it
        outcome = f"not injected: internal error: {type(exc).__name__}: {exc}"
        warnings, patch, error_kind = [outcome], [], INTERNAL
    else:
        outcome = f"injected ({len(patch)} patch ops)" if patch else "unchanged (already injected or nothing to do)"
    return _reply(uid, pod_name, f"uid={uid or '?'} pod={pod_name}: {outcome}", warnings, patch, error_kind)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        review = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _malformed(f"request body is not JSON: {one_line(str(exc))}") from None
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise _malformed("request body is not an AdmissionReview")
    if review.get("apiVersion") != API_VERSION:
        got = quote(review.get("apiVersion"))
        raise _malformed(f"AdmissionReview apiVersion {got} is not {API_VERSION}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise _malformed("AdmissionReview has no request")
    if not isinstance(request.get("uid"), str):
        raise _malformed("AdmissionReview request has no uid")
    return review


def _malformed(warning: str) -> _Skip:
    return _Skip("malformed review", warning, MALFORMED_REVIEW)


def _pod(request: dict[str, Any]) -> dict[str, Any]:
    """request.object if this review is a Pod CREATE; else _Skip."""
    gvk = request.get("kind")
    if not isinstance(gvk, dict) or gvk.get("group", "") != "" or gvk.get("kind") != "Pod":
        shown = _gvk(gvk) if isinstance(gvk, dict) else quote(gvk)
        raise _Skip("not injected", f"only Pods are injected, got {shown}: check the webhook's rules", NOT_A_POD)
    operation = request.get("operation")
    if operation != "CREATE" or request.get("subResource"):
        # Containers are immutable after CREATE; other operations are a rule mistake, not the user's.
        raise _Skip(f"skipped {operation} {request.get('subResource') or ''}".rstrip())
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise _malformed("AdmissionReview request has no Pod object")
    return pod


def _refuse_opted_out(pod: dict[str, Any]) -> None:
    opt = _mapping(_mapping(pod.get("metadata")).get("annotations")).get(INJECT_ANNOTATION)
    if isinstance(opt, str) and opt.strip().lower() == "false":
        raise _Skip(f"opted out ({INJECT_ANNOTATION}: {quote(opt)})")


def _patch_for(pod: dict[str, Any], options: InjectOptions) -> tuple[list[dict[str, Any]], list[str]]:
    # The API server usually sends the Pod with its type meta, but inject needs it to find the pod spec; diffing
    # against the typed copy keeps the patch off apiVersion and kind either way.
    typed = {**pod, "apiVersion": "v1", "kind": "Pod"}
    injected, warnings = inject_object(typed, SOURCE, options)
    return json_patch(typed, injected), warnings


def is_annotation_error(exc: ConfigError) -> bool:
    """A bad value of a pod annotation (ours: the probe modes, the sidecar's settings), as inject refuses it."""
    return exc.field.startswith("annotations[")


def _denial(uid: str, pod: str, summary: str, message: str) -> Reply:
    status = {"code": DENIED_CODE, "message": _printable(message)}
    response = {"uid": uid, "allowed": False, "status": status}
    review = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    return Reply(review, _printable(summary), uid=_printable(uid), pod=_printable(pod), result=DENIED)


def _reply(
    uid: str, pod: str, summary: str, warnings: list[str], patch: list[dict[str, Any]], error_kind: str | None
) -> Reply:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode("ascii")
    if warnings:
        response["warnings"] = _warnings(warnings)
    review = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    result = ERROR if error_kind else INJECTED if patch else SKIPPED
    return Reply(
        review,
        _printable(summary),
        uid=_printable(uid),
        pod=_printable(pod),
        result=result,
        error_kind=error_kind,
        patch_ops=len(patch),
    )


def _warnings(warnings: list[str]) -> list[str]:
    if len(warnings) > MAX_WARNINGS:
        warnings = [*warnings[: MAX_WARNINGS - 1], f"and {len(warnings) - MAX_WARNINGS + 1} more warnings"]
    out = []
    for warning in warnings:
        text = WARNING_PREFIX + _printable(warning)
        out.append(text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "...")
    return out


def _printable(text: str) -> str:
    """One printable line: warnings and log lines are built from user input and end up in terminals."""
    return "".join(ch if ch.isprintable() else "?" for ch in one_line(text))


def _gvk(gvk: dict[str, Any]) -> str:
    group, version, kind = (str(gvk.get(k, "")) for k in ("group", "version", "kind"))
    return f"{group}/{version} {kind}" if group else f"{version} {kind}"


def _pod_name(request: dict[str, Any], pod: dict[str, Any]) -> str:
    # Pods of a ReplicaSet have no name yet at admission, only generateName.
    metadata = _mapping(pod.get("metadata"))
    name = metadata.get("name") or f"{metadata.get('generateName') or ''}*"
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    return f"{namespace}/{name}"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
