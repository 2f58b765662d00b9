"""The one result type every probe returns, as the kubelet's `probe.Result`."""

from __future__ import annotations

import enum
import errno
import time
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What one attempt concluded.

    WARNING is the kubelet's "probe.Warning" (a redirect to another host that was
    not followed). It counts as success for readiness.
    ERROR is an attempt that could not conclude: the kubelet's probe.Unknown with an
    error, such as an HTTP response whose headers arrived but whose body could not be
    read. The kubelet retries it at once and, if it errs every time, throws the result
    away (pkg/kubelet/prober/worker.go): readiness and the counters stay as they were.
    """

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"
    ERROR = "error"

    @property
    def ok(self) -> bool:
        """Whether it counts as a success."""
        return self is Outcome.SUCCESS or self is Outcome.WARNING

    @property
    def conclusive(self) -> bool:
        """Whether it counts at all: an errored attempt decides nothing."""
        return self is not Outcome.ERROR


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One attempt: its outcome, a short human message and how long it took.

        result = await probe.attempt(timeout=1.0)
        if result.outcome.ok: ...
        print(f"{result.message} in {result.duration * 1000:.1f} ms")
    """

    outcome: Outcome
    message: str
    duration: float  # seconds, wall clock, monotonic


# Messages end up in logs, /status and gRPC; they must stay short and printable.
MAX_MESSAGE_CHARS = 160


def sanitize(text: str, limit: int = 80) -> str:
    """First line of `text`, printable ASCII only, at most `limit` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in line)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def timed_out(seconds: float) -> str:
    """The message of an attempt that ran out of time, the same for every probe type."""
    return f"timeout after {seconds:g}s"


def remaining(timeout: float, started: float) -> float:
    """What is left of an attempt's `timeout` that began at monotonic `started`: its
    continuation may start a loop iteration later, and must still end on time."""
    return max(0.0, timeout - (time.monotonic() - started))


# An OSError without an errno (rare) is quoted, but never at length.
_ERROR_TEXT_CHARS = 60


def errno_name(exc: OSError) -> str:
    """ECONNREFUSED, ECONNRESET, ...: the name an operator greps for."""
    if exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return sanitize(str(exc), _ERROR_TEXT_CHARS)


def unexpected_error(exc: BaseException) -> str:
    """The message of an attempt that raised what no probe foresaw: the errno's name for an
    OSError ("probe error: EMFILE: too many open files"), else the exception's type."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        detail = f": {sanitize(exc.strerror.lower(), _ERROR_TEXT_CHARS)}" if exc.strerror else ""
        return f"probe error: {errno.errorcode[exc.errno]}{detail}"
    return f"probe error: {type(exc).__name__}"
