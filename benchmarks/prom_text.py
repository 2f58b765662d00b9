"""Just enough of the Prometheus text format to read our own counters and histograms.

    scrape = Scrape.parse(text)
    scrape.total("readiness_probe_total")
    buckets = scrape.buckets("readiness_probe_schedule_lateness_seconds")  # {le: cumulative count}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class Scrape:
    # sample name -> summed value over all label sets except `le`, keyed by le ("" if none)
    samples: Mapping[str, Mapping[str, float]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                le = sample.labels.get("le", "")
                by_le = samples.setdefault(sample.name, {})
                by_le[le] = by_le.get(le, 0.0) + sample.value
        return cls(samples)

    def total(self, name: str) -> float:
        return sum(self.samples.get(name, {}).values())

    def buckets(self, histogram: str) -> dict[float, float]:
        """Cumulative counts by upper bound, summed over every container."""
        raw = self.samples.get(histogram + "_bucket", {})
        return {float(le): value for le, value in raw.items()}


@dataclass(frozen=True, slots=True)
class HistogramDelta:
    """What a histogram gained between two scrapes."""

    buckets: dict[float, float]  # cumulative, by upper bound (inf included)

    @classmethod
    def between(cls, before: Scrape, after: Scrape, histogram: str) -> HistogramDelta:
        a, b = after.buckets(histogram), before.buckets(histogram)
        return cls({le: a[le] - b.get(le, 0.0) for le in sorted(a)})

    @classmethod
    def combine(cls, deltas: list[HistogramDelta]) -> HistogramDelta:
        bounds = sorted({le for d in deltas for le in d.buckets})
        return cls({le: sum(d.buckets.get(le, 0.0) for d in deltas) for le in bounds})

    @property
    def count(self) -> float:
        return self.buckets.get(math.inf, 0.0)

    def quantile_upper_bound(self, q: float) -> float:
        """The smallest bucket bound that holds fraction q of the observations (an upper bound)."""
        if self.count == 0:
            return math.nan
        for le, cumulative in sorted(self.buckets.items()):
            if cumulative >= q * self.count:
                return le
        return math.inf

    def above(self, bound: float) -> float:
        """How many observations exceeded `bound` (which must be a bucket bound)."""
        return self.count - self.buckets.get(bound, 0.0)
