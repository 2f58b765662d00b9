"""The webhook's own Prometheus metrics: reviews by result, patch operations, errors, review latency.

Its own registry (never the process-wide default) and no `_created` series: a counter's creation
time is the process start, which `process_start_time_seconds`-style scrapes already know, and every
`_created` series doubles what a dashboard has to filter out.

    metrics = WebhookMetrics()
    metrics.observe(reply, seconds=0.0012)
    metrics.render()  # the text exposition format, for GET /metrics
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from sidecar.k8s.admission import ERROR_KINDS, RESULTS, Reply

# 250 us to 10 s: a review here takes about a millisecond; the API server's own webhook timeout is
# 10 s by default (at most 30), so anything past 10 s has already failed the call.
REVIEW_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A body past MAX_REVIEW_BYTES is refused by aiohttp (413) before any review is built.
TOO_LARGE = "too_large"


class _WithoutCreated:
    """A registry's families with their `_created` samples left out (prometheus_client's own switch,
    `disable_created_metrics()`, is process-wide; this keeps the choice to this registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():  # fresh Metric objects on every collect
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class WebhookMetrics:
    """The webhook's metric families, each result and error kind present from the start (at 0)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reviews = Counter(
            "readiness_webhook_reviews_total",
            "AdmissionReviews answered, by result: injected (patched), skipped (admitted unchanged, as asked), "
            "denied (a bad readiness-sidecar.io annotation), error (admitted unchanged though injection was wanted).",
            ["result"], registry=r,
        )  # fmt: skip
        self.patch_operations = Counter(
            "readiness_webhook_patch_operations_total",
            "JSON Patch operations sent back in injected reviews.",
            registry=r,
        )
        self.errors = Counter(
            "readiness_webhook_errors_total",
            "Reviews that could not inject, by kind: malformed_review, not_a_pod (check the webhook's rules), "
            "inject_refused (the pod is one inject refuses), internal (a bug), too_large (body over the limit, 413).",
            ["kind"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "readiness_webhook_review_duration_seconds",
            "Time to answer one AdmissionReview, from its request to its reply (reading the body included).",
            buckets=REVIEW_BUCKETS, registry=r,
        )  # fmt: skip
        self.injection_cache = Counter(
            "readiness_webhook_injection_cache_total",
            "Reviews of a pod to inject, by whether its injection was remembered from an identical pod (hit: a"
            " ReplicaSet's pods are alike at admission) or inject ran (miss).",
            ["result"], registry=r,
        )  # fmt: skip
        self._cache = {hit: self.injection_cache.labels("hit" if hit else "miss") for hit in (True, False)}
        self._results = {result: self.reviews.labels(result) for result in RESULTS}
        self._errors = {kind: self.errors.labels(kind) for kind in (*ERROR_KINDS, TOO_LARGE)}
        self._exposed = _WithoutCreated(r)

    def observe(self, reply: Reply, seconds: float) -> None:
        self._results[reply.result].inc()
        if reply.error_kind is not None:
            self._errors[reply.error_kind].inc()
        if reply.patch_ops:
            self.patch_operations.inc(reply.patch_ops)
        if reply.cached is not None:
            self._cache[reply.cached].inc()
        self.duration.observe(seconds)

    def too_large(self) -> None:
        self._errors[TOO_LARGE].inc()

    def render(self) -> bytes:
        return generate_latest(self._exposed)
