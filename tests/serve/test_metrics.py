"""Metrics (docs/behaviour.md#metrics), scraped over HTTP from in-process sidecars probing real targets."""

from __future__ import annotations

import asyncio
import gzip
import platform
import re
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

import sidecar
from probes.spec import HttpGetSpec, TcpSocketSpec
from sidecar.app import Sidecar
from sidecar.model import ContainerSpec, ProbeTiming, SidecarConfig
from sidecar.runtime.scheduler import AggressivePolicy
from sidecar.runtime.settings import RunSettings
from sidecar.serve.metrics import REUSE_FOR
from tests.target_apps import FlipTarget

SETTINGS = RunSettings(health_port=0, grpc_port=None, metrics_port=0, bind="127.0.0.1",
                       aggressive=AggressivePolicy(steady_period=0.05))
NEVER = ProbeTiming(initial_delay=3600.0)  # a container whose first attempt never comes in a test

# The stable metric names (plus the documented extras), with the TYPE each must have.
EXPECTED_TYPES = {
    "readiness_probe_duration_seconds": "histogram",
    "readiness_probe_total": "counter",
    "readiness_container_ready": "gauge",
    "readiness_ready": "gauge",
    "readiness_transitions_total": "counter",
    "readiness_time_to_ready_seconds": "gauge",
    "readiness_consecutive_failures": "gauge",
    "readiness_draining": "gauge",
    "readiness_routed_check_total": "counter",
    "readiness_routed_check_duration_seconds": "histogram",
    "readiness_probe_schedule_lateness_seconds": "histogram",
    "readiness_container_required": "gauge",
    "readiness_sidecar_build_info": "gauge",
}

Labels = frozenset[tuple[str, str]]


class Scrape:
    """One /metrics answer, parsed: sample values by name and labels, and the TYPE lines."""

    def __init__(self, text: str, content_type: str) -> None:
        self.text = text
        self.content_type = content_type
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)
        self.types = {n: t for n, t in types if n.startswith("readiness_")}

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        found = self.get(name, **labels)
        assert found is not None, f"no sample {name}{labels}"
        return found

    def containers_in(self, name: str) -> set[str]:
        return {dict(labels).get("container", "") for n, labels in self.samples if n == name}


async def scrape(port: int) -> Scrape:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return Scrape(await resp.text(), resp.headers["Content-Type"])


async def started(containers: Sequence[ContainerSpec], registry: CollectorRegistry | None = None
                  ) -> tuple[Sidecar, int]:
    car = Sidecar(SidecarConfig(tuple(containers)), SETTINGS, registry=registry)
    ports = await car.start()
    assert ports.metrics is not None
    return car, ports.metrics


@pytest.fixture
async def target() -> AsyncIterator[FlipTarget]:
    target = await FlipTarget.start(503)
    yield target
    await target.stop()


async def test_every_series_exists_at_zero_before_the_first_attempt() -> None:
    car, port = await started([
        ContainerSpec("web", HttpGetSpec(port=1, path="/health"), NEVER),
        ContainerSpec("db", TcpSocketSpec(port=1), NEVER, required=False),
        ContainerSpec("ghost", None),
    ])
    try:
        m = await scrape(port)
    finally:
        await car.stop()
    assert m.content_type == CONTENT_TYPE_LATEST
    assert m.types == EXPECTED_TYPES
    for name, kind in (("web", "httpGet"), ("db", "tcpSocket")):
        for result in ("success", "failure", "warning"):
            assert m.value("readiness_probe_total", container=name, probe=kind, result=result) == 0
        assert m.value("readiness_probe_duration_seconds_count", container=name, probe=kind) == 0
        assert m.value("readiness_probe_duration_seconds_bucket", container=name, probe=kind,
                       le="0.0001") == 0, "sub-millisecond resolution"
        assert m.value("readiness_probe_duration_seconds_bucket", container=name, probe=kind,
                       le="10.0") == 0
        assert m.value("readiness_container_ready", container=name) == 0
        assert m.value("readiness_consecutive_failures", container=name) == 0
        assert m.value("readiness_transitions_total", container=name, to="ready") == 0
        assert m.value("readiness_transitions_total", container=name, to="not_ready") == 0
        assert m.value("readiness_probe_schedule_lateness_seconds_count", container=name) == 0
    assert m.value("readiness_container_required", container="web") == 1
    assert m.value("readiness_container_required", container="db") == 0, "optional: never gates"
    assert m.value("readiness_ready") == 0
    assert m.value("readiness_draining") == 0
    assert m.containers_in("readiness_time_to_ready_seconds") == set(), "only set once first ready"
    every_container = {dict(labels).get("container") for _, labels in m.samples}
    assert "ghost" not in every_container, "an unobserved container exports no series at all"
    assert m.get("process_cpu_seconds_total") is not None
    assert any(name == "python_info" for name, _ in m.samples)


async def test_values_follow_the_target_from_failing_to_ready_and_back(target: FlipTarget) -> None:
    car, port = await started([ContainerSpec("app", HttpGetSpec(port=target.port, path="/health"))])
    try:
        await asyncio.sleep(0.1)  # let it fail for a while
        first = await scrape(port)
        # Past REUSE_FOR: only attempts were counted, so a scrape sooner would get `first` again.
        await asyncio.sleep(REUSE_FOR + 0.1)
        failing = await scrape(port)
        target.status = 200
        assert await car.state.wait_ready(2.0)
        ready = await scrape(port)
        target.status = 503
        assert await car.state.wait_for(lambda: not car.state.ready, 2.0)
        unready = await scrape(port)
        target.status = 200
        assert await car.state.wait_ready(2.0)
        ready_again = await scrape(port)
    finally:
        await car.stop()

    app = {"container": "app"}
    http = {"container": "app", "probe": "httpGet"}
    assert first.value("readiness_consecutive_failures", **app) >= 3
    assert failing.value("readiness_consecutive_failures", **app) > first.value(
        "readiness_consecutive_failures", **app), "consecutive failures grow while failing"
    assert failing.value("readiness_probe_total", **http, result="failure") == failing.value(
        "readiness_consecutive_failures", **app)
    assert failing.value("readiness_probe_total", **http, result="success") == 0
    assert failing.value("readiness_ready") == 0
    assert failing.value("readiness_container_ready", **app) == 0
    assert failing.get("readiness_time_to_ready_seconds", **app) is None

    assert ready.value("readiness_ready") == 1
    assert ready.value("readiness_container_ready", **app) == 1
    assert ready.value("readiness_transitions_total", **app, to="ready") == 1
    assert ready.value("readiness_transitions_total", **app, to="not_ready") == 0
    assert ready.value("readiness_consecutive_failures", **app) == 0
    assert ready.value("readiness_probe_total", **http, result="success") >= 1
    time_to_ready = ready.value("readiness_time_to_ready_seconds", **app)
    assert 0.2 <= time_to_ready < 2.5, "the target was 503 for the first ~0.2 s"

    assert unready.value("readiness_ready") == 0
    assert unready.value("readiness_container_ready", **app) == 0
    assert unready.value("readiness_transitions_total", **app, to="not_ready") == 1
    assert unready.value("readiness_consecutive_failures", **app) >= 3  # failureThreshold

    assert ready_again.value("readiness_transitions_total", **app, to="ready") == 2
    assert ready_again.value("readiness_time_to_ready_seconds", **app) == time_to_ready, "set once"
    attempts = sum(ready_again.value("readiness_probe_total", **http, result=r)
                   for r in ("success", "failure", "warning"))
    assert ready_again.value("readiness_probe_duration_seconds_count", **http) == attempts
    assert ready_again.value("readiness_probe_schedule_lateness_seconds_count", **app) == attempts


async def test_optional_container_is_measured_but_does_not_gate_the_aggregate(
    target: FlipTarget,
) -> None:
    good = await FlipTarget.start(200)
    car, port = await started([
        ContainerSpec("app", HttpGetSpec(port=good.port, path="/health")),
        ContainerSpec("extra", HttpGetSpec(port=target.port, path="/health"), required=False),
    ])
    try:
        assert await car.state.wait_ready(2.0)
        m = await scrape(port)
    finally:
        await car.stop()
        await good.stop()
    assert m.value("readiness_ready") == 1
    assert m.value("readiness_container_ready", container="extra") == 0
    assert m.value("readiness_probe_total", container="extra", probe="httpGet",
                   result="failure") >= 1


async def test_draining_turns_the_aggregate_off_and_is_exported(target: FlipTarget) -> None:
    target.status = 200
    car, port = await started([ContainerSpec("app", HttpGetSpec(port=target.port, path="/health"))])
    try:
        assert await car.state.wait_ready(2.0)
        before = await scrape(port)
        car.drainer.begin()
        during = await scrape(port)
    finally:
        await car.stop()
    assert (before.value("readiness_ready"), before.value("readiness_draining")) == (1, 0)
    assert (during.value("readiness_ready"), during.value("readiness_draining")) == (0, 1)
    assert during.value("readiness_container_ready", container="app") == 1, "the app itself is fine"


async def test_two_sidecars_in_one_process_keep_their_own_registries(target: FlipTarget) -> None:
    good = await FlipTarget.start(200)
    owned = CollectorRegistry()
    first, first_port = await started([ContainerSpec("app", HttpGetSpec(good.port, "/health"))])
    second, second_port = await started(
        [ContainerSpec("app", HttpGetSpec(target.port, "/health"))], registry=owned
    )
    try:
        assert await first.state.wait_ready(2.0)
        await asyncio.sleep(0.05)
        assert second.state.containers["app"].attempts >= 2
        a, b = await scrape(first_port), await scrape(second_port)
        passed_in = generate_latest(owned).decode()
    finally:
        await first.stop()
        await second.stop()
        await good.stop()
    assert a.value("readiness_ready") == 1
    assert b.value("readiness_ready") == 0
    assert a.value("readiness_probe_total", container="app", probe="httpGet", result="failure") == 0
    assert b.value("readiness_probe_total", container="app", probe="httpGet", result="success") == 0
    assert "readiness_ready 0.0" in passed_in, "a registry passed in is the one served"


async def test_an_answer_is_reused_for_a_second_while_only_attempts_are_counted(target: FlipTarget) -> None:
    # docs/behaviour.md#exposition: attempts may lag by REUSE_FOR, readiness never does.
    car, port = await started([ContainerSpec("app", HttpGetSpec(port=target.port, path="/health"))])
    http = {"container": "app", "probe": "httpGet", "result": "failure"}
    try:
        await asyncio.sleep(0.2)  # failing, every steady period (50 ms)
        first = await scrape(port)
        concurrent = await asyncio.gather(*(scrape(port) for _ in range(5)))
        counted = car.state.containers["app"].attempts
        target.status = 200
        assert await car.state.wait_ready(2.0)
        after_ready = await scrape(port)
        await asyncio.sleep(REUSE_FOR + 0.1)
        later = await scrape(port)
    finally:
        await car.stop()
    assert counted > first.value("readiness_probe_total", **http), "attempts were counted meanwhile"
    assert {c.text for c in concurrent} == {first.text}, "within REUSE_FOR, only attempts moved: the same answer"
    assert (first.value("readiness_ready"), after_ready.value("readiness_ready")) == (0, 1), "readiness never lags"
    assert after_ready.value("readiness_probe_total", **http) >= counted
    assert later.value("readiness_probe_total", container="app", probe="httpGet", result="success") > (
        after_ready.value("readiness_probe_total", container="app", probe="httpGet", result="success")
    ), "past REUSE_FOR, a fresh answer"


async def test_metrics_port_serves_get_metrics_and_nothing_else() -> None:
    car, port = await started([ContainerSpec("app", TcpSocketSpec(port=1), NEVER)])
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/ready") as resp:
                missing = resp.status
            async with session.post(f"http://127.0.0.1:{port}/metrics", data=b"x") as resp:
                posted = resp.status
    finally:
        await car.stop()
    assert (missing, posted) == (404, 405)


async def test_liveness_and_startup_checks_are_counted_per_attempt_by_container_kind_and_result(
    target: FlipTarget,
) -> None:
    # The kubelet's /live and /startup requests (inject --rewrite-liveness): one count per attempt,
    # however many requests shared it, and series at zero only where a check was configured.
    target.status, target.delay = 200, 0.2
    web = ContainerSpec("web", TcpSocketSpec(port=target.port), NEVER,
                        liveness=HttpGetSpec(port=target.port, path="/health"),
                        startup=HttpGetSpec(port=target.port, path="/health"))  # fmt: skip
    db = ContainerSpec("db", TcpSocketSpec(port=target.port), NEVER, startup=TcpSocketSpec(port=1))
    car = Sidecar(SidecarConfig((web, db)), SETTINGS)
    ports = await car.start()
    assert ports.metrics is not None
    try:
        at_start = await scrape(ports.metrics)
        async with aiohttp.ClientSession() as session:

            async def status(path: str) -> int:
                async with session.get(f"http://127.0.0.1:{ports.health}{path}") as resp:
                    return resp.status

            shared = await asyncio.gather(*(status("/live/web") for _ in range(5)))
            target.status = 500
            statuses = [await status("/live/web"), await status("/startup/web"), await status("/startup/db")]
        after = await scrape(ports.metrics)
    finally:
        await car.stop()
    assert (shared, statuses) == ([200] * 5, [503, 503, 503])

    routed = "readiness_routed_check_total"
    for name, kind in (("web", "liveness"), ("web", "startup"), ("db", "startup")):
        for result in ("success", "warning", "failure", "error"):
            assert at_start.value(routed, container=name, kind=kind, result=result) == 0
        assert at_start.value("readiness_routed_check_duration_seconds_count", container=name, kind=kind) == 0
    assert at_start.get(routed, container="db", kind="liveness", result="success") is None, "db has no liveness"

    web_live = {"container": "web", "kind": "liveness"}
    assert after.value(routed, **web_live, result="success") == 1, "five callers shared one attempt"
    assert after.value(routed, **web_live, result="failure") == 1
    assert after.value(routed, container="web", kind="startup", result="failure") == 1
    assert after.value(routed, container="db", kind="startup", result="failure") == 1
    assert after.value("readiness_routed_check_duration_seconds_count", **web_live) == 2
    # Each of web's attempts waited for the target's 0.2 s delay.
    assert after.value("readiness_routed_check_duration_seconds_bucket", **web_live, le="0.1") == 0
    assert after.value("readiness_routed_check_duration_seconds_sum", **web_live) >= 0.4
    help_lines = dict(re.findall(r"^# HELP (readiness_routed_\S+) (.+)$", after.text, re.MULTILINE))
    assert "/live/<container>" in help_lines["readiness_routed_check_total"]
    assert "timeoutSeconds" in help_lines["readiness_routed_check_duration_seconds"]


# -- exposition: build info, no _created, OpenMetrics and gzip -------------------------------------


async def _raw_get(port: int, head: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """One request written as given (so the test picks the reader: plain or h11); status line, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = await reader.read()  # every request here asks to close
    writer.close()
    status, _, rest = answer.partition(b"\r\n")
    fields, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in fields.split(b"\r\n"):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    return status, headers, body


async def test_build_info_names_the_version_and_python_and_is_always_one() -> None:
    car, port = await started([ContainerSpec("app", TcpSocketSpec(port=1), NEVER)])
    try:
        m = await scrape(port)
    finally:
        await car.stop()
    assert m.value("readiness_sidecar_build_info", version=sidecar.__version__,
                   python=platform.python_version(), implementation=platform.python_implementation()) == 1
    assert "Always 1" in m.text, "its HELP says what it is for"


async def test_no_created_series_once_counters_and_histograms_have_moved(target: FlipTarget) -> None:
    target.status = 200
    car, port = await started([ContainerSpec("app", HttpGetSpec(port=target.port, path="/health"))])
    try:
        assert await car.state.wait_ready(2.0)
        text = (await scrape(port)).text
        _, _, open_metrics = await _raw_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                            b"Accept: application/openmetrics-text; version=1.0.0\r\n"
                                            b"Connection: close\r\n\r\n")
    finally:
        await car.stop()
    assert 'readiness_probe_total{container="app",probe="httpGet",result="success"}' in text
    for exposition in (text, open_metrics.decode()):
        assert "_created" not in exposition, "prometheus_client's created series are switched off"


async def _content(port: int, accept: bytes) -> tuple[str, bytes]:
    _, headers, body = await _raw_get(
        port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + accept + b"Connection: close\r\n\r\n"
    )
    return headers["content-type"], body


async def test_openmetrics_goes_to_a_scraper_that_takes_only_it_and_text_to_every_other() -> None:
    car, port = await started([ContainerSpec("app", TcpSocketSpec(port=1), NEVER)])
    # The Accept Prometheus 2.x sends by default (scrape/scrape.go, scrapeAcceptHeader): OpenMetrics
    # first, the text format at q=0.5. The text format is what it gets: OpenMetrics costs more to
    # render and brings nothing here (docs/performance.md#metrics-exposition).
    prometheus = (
        b"Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    )
    try:
        only_type, only = await _content(port, b"Accept: application/openmetrics-text; version=1.0.0\r\n")
        refused_type, _ = await _content(port, b"Accept: application/openmetrics-text, text/plain;q=0\r\n")
        prometheus_type, from_prometheus = await _content(port, prometheus)
        plain_type, plain = await _content(port, b"")
    finally:
        await car.stop()
    assert only_type.startswith("application/openmetrics-text; version=1.0.0")
    assert refused_type.startswith("application/openmetrics-text"), "text at q=0 is not acceptable"
    assert only.endswith(b"# EOF\n")
    families = {f.name: f for f in openmetrics_families(only.decode())}
    assert families["readiness_probe"].type == "counter", "OpenMetrics names a counter without _total"
    assert families["readiness_sidecar_build_info"].type == "gauge"
    assert prometheus_type == plain_type == CONTENT_TYPE_LATEST
    assert b"# EOF" not in from_prometheus and b"# EOF" not in plain


@pytest.mark.parametrize("request_head", [
    # the plain reader's request, and one only h11 reads (HTTP/1.0): both readers hand the headers on
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip;q=0.9\r\nConnection: close\r\n\r\n",
    b"GET /metrics HTTP/1.0\r\nHost: x\r\nACCEPT-ENCODING: gzip\r\n\r\n",
], ids=["plain", "h11"])
async def test_gzip_when_the_scraper_accepts_it(request_head: bytes) -> None:
    car, port = await started([ContainerSpec("app", TcpSocketSpec(port=1), NEVER)])
    try:
        _, headers, body = await _raw_get(port, request_head)
        _, plain_headers, plain = await _raw_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await car.stop()
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body) < len(plain) / 3
    unpacked = gzip.decompress(body).decode()
    assert 'readiness_container_ready{container="app"} 0.0' in unpacked
    assert "content-encoding" not in plain_headers
    assert "Accept-Encoding" in plain_headers["vary"], "caches keep the two apart"


async def test_every_help_text_says_more_than_the_name() -> None:
    car, port = await started([ContainerSpec("app", TcpSocketSpec(port=1), NEVER)])
    try:
        text = (await scrape(port)).text
    finally:
        await car.stop()
    helps = dict(re.findall(r"^# HELP (readiness_\S+) (.*)$", text, re.MULTILINE))
    assert helps.keys() == EXPECTED_TYPES.keys()
    for name, help_text in helps.items():
        assert len(help_text) > 80, f"{name}: an operator needs what it means and when it changes"
        if name.endswith("_seconds"):
            assert "Seconds" in help_text, f"{name}: the unit"
