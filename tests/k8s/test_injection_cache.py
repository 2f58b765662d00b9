"""The webhook's InjectionCache: a pod seen before is answered without running inject, and never wrongly.

Every pod a ReplicaSet creates is the same at mutating admission: the API server gives it its name (from
generateName) and its uid later, in the registry's Create (staging/src/k8s.io/apiserver/pkg/registry/generic/
registry/store.go; kubernetes/kubernetes#112063 moved the name there, still after admission). So a scale-up's
reviews differ only in the review's own uid, which the answer must echo (admission.k8s.io/v1: response.uid).
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings

from sidecar.k8s.admission import InjectionCache, review_reply
from sidecar.k8s.inject import InjectOptions
from sidecar.k8s.tls_reload import TlsFiles
from tests.k8s.test_webhook import _OPTIONS, _PODS, admission_review, ca, client_tls, peer_pod, tls_files
from tests.k8s.test_webhook_service import review, scrape, tls_args, webhook

__all__ = ["ca", "client_tls", "tls_files"]  # fixtures, shared with test_webhook.py


def body(pod: Any, uid: str) -> bytes:
    return json.dumps(admission_review(pod, uid=uid)).encode()


def replica_pod() -> dict[str, Any]:
    """A pod as a ReplicaSet sends it: generateName, no name."""
    pod = peer_pod()
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "goproxy-7d9f8b6c5-"
    return pod


def test_the_same_pod_again_is_answered_from_the_cache_with_its_own_uid() -> None:
    cache, options = InjectionCache(), InjectOptions()
    first = review_reply(body(replica_pod(), "uid-1"), options, cache)
    second = review_reply(body(replica_pod(), "uid-2"), options, cache)
    assert (first.cached, second.cached) == (False, True)
    assert (first.result, second.result) == ("injected", "injected")
    assert first.review["response"]["uid"] == "uid-1"
    assert second.review["response"]["uid"] == "uid-2"
    assert second.uid == "uid-2" and "uid=uid-2 " in second.summary
    # The rest of the answer is the same, and the same as without a cache.
    without_cache = review_reply(body(replica_pod(), "uid-2"), options)
    assert second.review == without_cache.review
    assert without_cache.cached is None
    assert second.patch_ops == first.patch_ops > 0
    assert len(cache) == 1


def test_a_different_pod_or_different_options_is_injected_anew() -> None:
    cache = InjectionCache()
    pod = replica_pod()
    review_reply(body(pod, "a"), InjectOptions(), cache)
    other = copy.deepcopy(pod)
    other["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["port"] = 9999
    changed = review_reply(body(other, "b"), InjectOptions(), cache)
    assert changed.cached is False
    assert b"9999" in base64.b64decode(changed.review["response"]["patch"])  # the new probe, not the old
    native = review_reply(body(pod, "c"), InjectOptions(native_sidecar=True), cache)
    assert native.cached is False
    ops = json.loads(base64.b64decode(native.review["response"]["patch"]))
    assert any(op["path"].startswith("/spec/initContainers") for op in ops)
    assert len(cache) == 3


def test_the_cache_keeps_only_its_newest_entries_and_no_big_pods() -> None:
    cache = InjectionCache(entries=2, max_pod_bytes=len(json.dumps(replica_pod())) + 100)
    pods = []
    for port in (8001, 8002, 8003):
        pod = replica_pod()
        pod["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["port"] = port
        pods.append(pod)
    for index, pod in enumerate(pods):
        assert review_reply(body(pod, f"u{index}"), InjectOptions(), cache).cached is False
    assert len(cache) == 2
    assert review_reply(body(pods[2], "again"), InjectOptions(), cache).cached is True
    assert review_reply(body(pods[0], "evicted"), InjectOptions(), cache).cached is False  # the oldest went
    big = replica_pod()
    big["metadata"]["annotations"] = {"example.com/blob": "x" * 200}
    for uid in ("big-1", "big-2"):
        reply = review_reply(body(big, uid), InjectOptions(), cache)
        assert (reply.result, reply.cached) == ("injected", False)
    assert len(cache) == 2


def test_what_inject_refuses_is_refused_every_time_and_never_remembered() -> None:
    cache = InjectionCache()
    bad = replica_pod()
    bad["metadata"]["annotations"] = {"readiness-sidecar.io/health-port": "http"}
    for uid in ("d1", "d2"):
        reply = review_reply(body(bad, uid), InjectOptions(), cache)
        assert reply.result == "denied"
        assert reply.review["response"]["uid"] == uid
        assert reply.cached is None
    assert len(cache) == 0


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-1e400"])
def test_nan_and_infinity_are_not_json_so_they_cannot_pass_for_null(literal: bytes) -> None:
    # msgspec writes NaN and infinity as null: a pod with one would share a cache entry with one with null.
    text = body(replica_pod(), "n").replace(b'"goproxy-7d9f8b6c5-"', literal)
    reply = review_reply(text, InjectOptions(), InjectionCache())
    assert (reply.result, reply.error_kind) == ("error", "malformed_review")
    assert reply.review["response"]["warnings"][0].startswith("readiness-sidecar: request body is not JSON: ")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PODS, _OPTIONS)
def test_any_pod_gets_the_same_answer_from_the_cache_as_without_it(pod: dict[str, Any], options: InjectOptions) -> None:
    cache = InjectionCache()
    expected = review_reply(body(pod, "once"), options)
    for _ in range(2):  # the miss, then the hit
        got = review_reply(body(pod, "once"), options, cache)
        assert got.review == expected.review
        assert (got.result, got.error_kind, got.patch_ops) == (expected.result, expected.error_kind,
                                                                expected.patch_ops)  # fmt: skip


async def test_a_scale_up_is_one_miss_and_the_rest_hits_in_the_metrics(
    tls_files: TlsFiles, client_tls: Any, sidecar_env: dict[str, str]
) -> None:
    replicas = 12
    async with webhook([*tls_args(tls_files), "--metrics-port", "0", "--log-format", "json"], sidecar_env) as hook:
        assert hook.metrics_port is not None
        before = scrape(hook.metrics_port)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
            for n in range(replicas):
                status, answer = await review(session, hook.port, admission_review(replica_pod(), uid=f"r{n}"))
                assert status == 200
                assert answer["response"]["uid"] == f"r{n}"
                assert "patch" in answer["response"]
        after = scrape(hook.metrics_port)
        await hook.stop()
    assert before['readiness_webhook_injection_cache_total{result="hit"}'] == 0  # present from the start
    assert before['readiness_webhook_injection_cache_total{result="miss"}'] == 0
    assert after['readiness_webhook_injection_cache_total{result="miss"}'] == 1
    assert after['readiness_webhook_injection_cache_total{result="hit"}'] == replicas - 1
    assert after['readiness_webhook_reviews_total{result="injected"}'] == replicas
