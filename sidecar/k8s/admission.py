"""AdmissionReview v1 in, AdmissionReview v1 out: what the webhook answers, with no I/O.

The answer is `allowed: true` but for one case. The webhook only adds a sidecar; refusing a pod because of
our own problem (a bad probe, a malformed review, a bug) would block deployments, so every such error becomes a
warning that `kubectl` shows and the pod is admitted unchanged. A bad value in one of our own annotations
(`readiness-sidecar.io/health-port: "http"`) is different: the pod's author asked for something inject refuses
too (exit 2), so the pod is denied with that one line rather than started without what was asked for.

    reply = review_reply(body, InjectOptions())
    reply.review["response"]["patch"]   # base64 JSON Patch, present only when the pod changes
    reply.body()                        # the review as the answer's JSON bytes
    reply.summary                       # one log line: 'uid=... pod=ns/web-*: injected (3 patch ops)'
    reply.result, reply.patch_ops       # 'injected', 3: what the webhook's metrics count

    cache = InjectionCache()            # the webhook keeps one: a ReplicaSet's pods are alike at admission
    review_reply(body, InjectOptions(), cache)
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

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

# How many pods' injections the webhook remembers. A ReplicaSet creates its pods together, in batches that grow
# up to 500 (burstReplicas, pkg/controller/replicaset/replica_set.go), all alike at admission (InjectionCache
# says why); 64 covers that many workloads scaling or rolling out at once.
CACHED_INJECTIONS = 64
# A pod bigger than this as JSON is injected without being remembered, so the cache holds at most about 8 MiB
# (CACHED_INJECTIONS pods and their patches). A ten-container pod is about 4 KiB.
MAX_CACHED_POD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    review: dict[str, Any]  # the AdmissionReview to send back
    summary: str  # one log line about this review
    uid: str = ""
    pod: str = "?"  # namespace/name (name* for a generateName)
    result: str = SKIPPED  # one of RESULTS
    error_kind: str | None = None  # one of ERROR_KINDS when result is ERROR
    patch_ops: int = 0
    # Whether an InjectionCache had this pod's injection (True: inject did not run) or not (False); None when
    # no cache was asked (no cache given, the review stopped before inject, or inject refused the pod).
    cached: bool | None = None

    def body(self) -> bytes:
        """The review as the answer's body: JSON, UTF-8 (msgspec writes it ten times faster than json)."""
        return msgspec.json.encode(self.review)


@dataclass(frozen=True, slots=True)
class Injection:
    """What inject makes of one pod: its JSON Patch as the response carries it, and inject's warnings."""

    patch: str  # base64 of the patch's JSON; "" when the pod is left as it is
    patch_ops: int
    warnings: tuple[str, ...]


class InjectionCache:
    """The injections of the last CACHED_INJECTIONS pods, by the pod's JSON and the inject options.

    Inject's result depends on nothing but the pod and the options, and the pods a ReplicaSet creates are
    the same at mutating admission: the API server gives a pod its name (from generateName) and its uid only
    after mutating admission, in the registry's Create (kubernetes/kubernetes#112063 moved the name there,
    still after admission). So a scale-up's reviews, which arrive together, differ only in the review's uid,
    and all but the first are answered without running inject. A pod that another webhook made unique
    just misses. What inject refuses (ConfigError) is never remembered: it is computed, and raised, each time.
    """

    def __init__(self, entries: int = CACHED_INJECTIONS, max_pod_bytes: int = MAX_CACHED_POD_BYTES) -> None:
        self.entries = entries
        self.max_pod_bytes = max_pod_bytes
        self._cached: OrderedDict[tuple[InjectOptions, bytes], Injection] = OrderedDict()

    def injection(self, pod: dict[str, Any], options: InjectOptions) -> tuple[Injection, bool]:
        """inject's result for `pod`, and whether it was remembered (a hit). ConfigError as `injection`."""
        key = (options, msgspec.json.encode(pod))  # one JSON text per pod: _parse refuses NaN and infinity
        if len(key[1]) > self.max_pod_bytes:
            return injection(pod, options), False
        found = self._cached.get(key)
        if found is not None:
            self._cached.move_to_end(key)
            return found, True
        made = injection(pod, options)
        self._cached[key] = made
        if len(self._cached) > self.entries:
            self._cached.popitem(last=False)
        return made, False

    def __len__(self) -> int:
        return len(self._cached)


class _Skip(Exception):
    """The pod is admitted untouched; `warning` (if any) tells the user why; `error_kind` if it is an ERROR."""

    def __init__(self, reason: str, warning: str = "", error_kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warning = warning
        self.error_kind = error_kind


def review_reply(body: bytes, options: InjectOptions, cache: InjectionCache | None = None) -> Reply:
    """The AdmissionReview answering `body`, its injection taken from `cache` when the same pod was injected
    before. Never raises (except CancelledError, which is not an Exception)."""
    uid, pod_name, error_kind = "", "?", None
    cache_hit: bool | None = None
    try:
        request = _parse(body)["request"]
        uid = request["uid"]
        pod = _pod(request)
        pod_name = _pod_name(request, pod)
        _refuse_opted_out(pod)
        made, cache_hit = cache.injection(pod, options) if cache is not None else (injection(pod, options), None)
    except _Skip as skip:
        outcome = f"{skip.reason}: {skip.warning}" if skip.warning else skip.reason
        made, error_kind = Injection("", 0, (skip.warning,) if skip.warning else ()), skip.error_kind
    except ConfigError as exc:
        if is_annotation_error(exc):
            return _denial(uid, pod_name, f"uid={uid or '?'} pod={pod_name}: denied: {exc}", str(exc))
        outcome = f"not injected: {exc}"
        made, error_kind = Injection("", 0, (outcome,)), INJECT_REFUSED
    except Exception as exc:  # a bug must not block pod creation: admit, warn, and log it
        outcome = f"not injected: internal error: {type(exc).__name__}: {exc}"
        made, error_kind = Injection("", 0, (outcome,)), INTERNAL
    else:
        ops = made.patch_ops
        outcome = f"injected ({ops} patch ops)" if ops else "unchanged (already injected or nothing to do)"
    reply = _reply(uid, pod_name, f"uid={uid or '?'} pod={pod_name}: {outcome}", made, error_kind)
    return reply if cache_hit is None else replace(reply, cached=cache_hit)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        review = _REVIEW_DECODER.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
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


def _finite(literal: str) -> float:
    # JSON (RFC 8259) has no infinity and the API server never writes one, but 1e400 reads as one; msgspec
    # would write it back as null, and InjectionCache would take two different pods for one.
    number = float(literal)
    if math.isinf(number):
        raise ValueError(f"number {literal[:40]} is out of range")
    return number


# msgspec reads a review about three times faster than json (12 against 31 us for a ten-container pod), and
# refuses NaN, which json would read.
_REVIEW_DECODER = msgspec.json.Decoder(float_hook=_finite)


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


def injection(pod: dict[str, Any], options: InjectOptions) -> Injection:
    """Inject `pod` (ConfigError if inject refuses it) and say it as a JSON Patch."""
    # The API server usually sends the Pod with its type meta, but inject needs it to find the pod spec; diffing
    # against the typed copy keeps the patch off apiVersion and kind either way.
    typed = {**pod, "apiVersion": "v1", "kind": "Pod"}
    injected, warnings = inject_object(typed, SOURCE, options)
    patch = json_patch(typed, injected)
    encoded = base64.b64encode(msgspec.json.encode(patch)).decode("ascii") if patch else ""
    return Injection(encoded, len(patch), tuple(warnings))


def is_annotation_error(exc: ConfigError) -> bool:
    """A bad value of a pod annotation (ours: the probe modes, the sidecar's settings), as inject refuses it."""
    return exc.field.startswith("annotations[")


def _denial(uid: str, pod: str, summary: str, message: str) -> Reply:
    status = {"code": DENIED_CODE, "message": _printable(message)}
    response = {"uid": uid, "allowed": False, "status": status}
    review = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    return Reply(review, _printable(summary), uid=_printable(uid), pod=_printable(pod), result=DENIED)


def _reply(uid: str, pod: str, summary: str, made: Injection, error_kind: str | None) -> Reply:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if made.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = made.patch
    if made.warnings:
        response["warnings"] = _warnings(made.warnings)
    review = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    result = ERROR if error_kind else INJECTED if made.patch else SKIPPED
    return Reply(
        review,
        _printable(summary),
        uid=_printable(uid),
        pod=_printable(pod),
        result=result,
        error_kind=error_kind,
        patch_ops=made.patch_ops,
    )


def _warnings(warnings: Sequence[str]) -> list[str]:
    if len(warnings) > MAX_WARNINGS:
        warnings = [*warnings[: MAX_WARNINGS - 1], f"and {len(warnings) - MAX_WARNINGS + 1} more warnings"]
    out = []
    for warning in warnings:
        text = WARNING_PREFIX + _printable(warning)
        out.append(text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "...")
    return out


def _printable(text: str) -> str:
    """One printable line: warnings and log lines are built from user input and end up in terminals."""
    line = one_line(text)
    if line.isprintable():  # nearly always: skip the walk over every character
        return line
    return "".join(ch if ch.isprintable() else "?" for ch in line)


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
