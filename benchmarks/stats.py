"""Percentiles of latency samples, reported in milliseconds.

    summary = summarize([0.0012, 0.0031, 0.0020])
    summary.p50  # 2.0 (ms)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_samples:
        return math.nan
    rank = (len(sorted_samples) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_samples) - 1)
    return sorted_samples[low] + (sorted_samples[high] - sorted_samples[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Milliseconds, except n."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    def triple(self) -> str:
        return f"{_ms(self.p50)} / {_ms(self.p90)} / {_ms(self.p99)}"

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) and not math.isnan(v) else v) for k, v in asdict(self).items()}


def summarize(seconds: Sequence[float]) -> Summary:
    ordered = sorted(s * 1000.0 for s in seconds)
    mean = sum(ordered) / len(ordered) if ordered else math.nan
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        mean=mean,
        max=ordered[-1] if ordered else math.nan,
    )


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_ms(value: float) -> str:
    """A millisecond figure with sensible precision: 0.84, 12.3, 498."""
    return _ms(value)


def ratio(numerator: float, denominator: float) -> float:
    if denominator <= 0 or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator
