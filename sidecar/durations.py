"""Go-style durations ("250ms", "2s", "1m30s") and bare seconds ("1.5") as float seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a non-negative duration; raise ValueError with a short reason.

    >>> parse_duration("250ms"), parse_duration("1m30s"), parse_duration("2")
    (0.25, 90.0, 2.0)
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty duration")
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"duration {text!r} must be a finite number >= 0")
        return value
    pos, total = 0, 0.0
    while pos < len(raw):
        match = _PART.match(raw, pos)
        if not match:
            raise ValueError(f"bad duration {text!r} (use e.g. 500ms, 2s, 1m)")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def parse_finite_duration(text: str) -> float:
    """parse_duration, refusing what sums to infinity: an endless drain or period is a typo.

    parse_duration refuses "1e400" but sums "9999...9s" to inf, which would silently mean
    "never exit" or "never probe again"."""
    value = parse_duration(text)
    if not math.isfinite(value):
        raise ValueError(f"duration {text[:40]!r} is too long")
    return value


def format_duration(seconds: float) -> str:
    """Compact form for messages: 0.0012 -> "1.2ms", 2.0 -> "2s"."""
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.3g}ms"
    return f"{seconds:.3g}s"
