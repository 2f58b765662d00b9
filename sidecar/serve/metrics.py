"""Prometheus metrics about every probe, served at /metrics on the metrics port.

Each Sidecar owns its registry (never prometheus_client's global one), so several
sidecars can run in one process. Values are pushed by StateObserver hooks as the
state changes, never polled.

    metrics = ReadinessMetrics(state, CollectorRegistry())
    state.observe(metrics)
    server = MetricsServer(metrics)
    port = await server.start("0.0.0.0", 8552)
    await server.stop()

Stable names, with `probe` the probe kind (httpGet, tcpSocket, grpc, exec)
and `result` one of success, warning (counts as success), failure, and error (an attempt
that could not conclude, retried and then thrown away as the kubelet does; it moves no counter):

    readiness_probe_duration_seconds  histogram  container, probe
    readiness_probe_total             counter    container, probe, result
    readiness_container_ready         gauge      container
    readiness_ready                   gauge      (the aggregate answer of /ready)
    readiness_transitions_total       counter    container, to=ready|not_ready
    readiness_time_to_ready_seconds   gauge      container (set once, at first ready)
    readiness_consecutive_failures    gauge      container
    readiness_draining                gauge
    readiness_sidecar_build_info      gauge      version, python, implementation (always 1)
    readiness_routed_check_total             counter    container, kind=liveness|startup, result
    readiness_routed_check_duration_seconds  histogram  container, kind

Extra, outside the stable list:

    readiness_probe_schedule_lateness_seconds  histogram  container (the benchmarks' jitter)
    readiness_container_required               gauge      container (1 if it gates /ready, so
                                                           alerts can pick required containers)

The routed checks are the livenessProbe and startupProbe that `inject --rewrite-liveness`
sends through the sidecar: one count per attempt of GET /live/<c> or /startup/<c> (callers
that share an attempt share its count), for the containers that have one.

Served as Prometheus' text format, or OpenMetrics to a scraper whose Accept takes nothing
else, gzipped when Accept-Encoding allows; no `_created` series in either.

Every observed container's series exist from start (zeros), so alerts on absent
series work before the first attempt; so do the routed checks' series. A container that is not observed (left to
the kubelet) is never probed here, so it has no series at all, not even
readiness_container_ready: its readiness is the kubelet's to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted

from probes.result import Outcome, ProbeResult
from sidecar import __version__
from sidecar.contract import METRICS_PATH
from sidecar.model import NOT_READY, READY, ROUTED_CHECK_KINDS
from sidecar.runtime.state import AggregateState, ContainerState, StateObserver, Transition
from sidecar.serve.http_server import GetOnlyServer, Request
from sidecar.serve.http_wire import Answer

# 100 us to 10 s: a TCP connect here takes ~0.1 ms, a gRPC Check ~1 ms, and a kubelet
# timeout of more than 10 s is already a problem worth seeing as +Inf.
DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)
# Lateness is loop jitter: tens of microseconds when healthy, milliseconds under load.
LATENESS_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
MAX_REQUEST_BYTES = 1024  # a scrape is a bodiless GET
# zlib's fastest level: on a 37 KB exposition it takes a tenth of level 9's time (prometheus_client's
# default: 50 against 490 us) for a body 19% larger (4.0 against 3.4 KB, both 9x smaller than
# plain; docs/performance.md#metrics-exposition).
GZIP_LEVEL = 1
# zlib's wbits for a gzip stream (header and CRC) rather than a bare zlib one.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_HEADERS = b"Content-Encoding: gzip\r\nVary: Accept, Accept-Encoding\r\n"
_VARY_HEADERS = b"Vary: Accept, Accept-Encoding\r\n"
# OpenMetrics only for a scraper that takes nothing else: rendering it costs 1.75x the text format
# here and brings nothing this registry uses (no exemplars, no _created), and Prometheus, which
# lists it first, takes the text format as well (docs/performance.md#metrics-exposition).
_OPENMETRICS = "application/openmetrics-text"
_TEXT_RANGES = ("text/plain", "text/*", "*/*")
SHUTDOWN_GRACE = 1.0  # an in-flight scrape gets this long at shutdown
# How old an answer may be served again while only attempts were counted: their counters and
# histograms lag by at most this; readiness and routed checks never do (a change rebuilds).
# At 1,000 containers one build takes ~0.4 s of CPU: however many scrape, at most 40% of a core
# (docs/performance.md#scrapers-that-never-read).
REUSE_FOR = 1.0


@dataclass(frozen=True, slots=True)
class _ContainerSeries:
    """One observed container's labelled children, looked up once: .labels() costs about
    as much as the observe() it precedes, so per attempt it would double the cost."""

    duration: Histogram
    lateness: Histogram
    results: dict[Outcome, Counter]
    ready: Gauge
    to_ready: Counter
    to_not_ready: Counter


@dataclass(frozen=True, slots=True)
class _RoutedCheckSeries:
    """One container's children for one routed check (liveness or startup), looked up once."""

    duration: Histogram
    results: dict[Outcome, Counter]


class ReadinessMetrics(StateObserver):
    """The metric families on `registry`, kept current by the state's observer hooks.

        metrics = ReadinessMetrics(state, CollectorRegistry())
        state.observe(metrics)
        generate_latest(metrics.registry)
    """

    def __init__(self, state: AggregateState, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        # No `_created` series: in the text format Prometheus stores each as a series of its own
        # (a start timestamp that never changes), doubling the counters' and histograms' series
        # for nothing a dashboard or alert here reads. The switch is prometheus_client's and
        # process-wide; this registry is the only one a sidecar's process exports.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.build_info = Gauge(
            "readiness_sidecar_build_info",
            "Always 1; the labels say which readiness-sidecar and Python this process runs. Changes only"
            " with a new image: join on it (group_left) to see which version a pod runs.",
            ["version", "python", "implementation"], registry=r,
        )
        self.build_info.labels(__version__, platform.python_version(), platform.python_implementation()).set(1)
        self.probe_duration = Histogram(
            "readiness_probe_duration_seconds",
            "Seconds one readiness probe attempt took, from connect or exec to the verdict. An attempt"
            " that hits the probe's timeoutSeconds lands at that value: a tail near it means the app"
            " answers too slowly for its probe.",
            ["container", "probe"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.probe_attempts = Counter(
            "readiness_probe_total",
            "Readiness probe attempts, by result: success, warning (a redirect the kubelet warns about"
            " but counts as success), failure, error (the attempt could not conclude; retried, then"
            " counted here and for nothing else). Grows every period; rate() it.",
            ["container", "probe", "result"], registry=r,
        )
        self.container_ready = Gauge(
            "readiness_container_ready",
            "1 while the container is ready (successThreshold successes in a row), 0 from the"
            " failureThreshold-th failure in a row. Changes exactly when /ready/<container> does.",
            ["container"], registry=r,
        )
        self.container_required = Gauge(
            "readiness_container_required",
            "1 if the container gates the pod's /ready, 0 if it is optional (reported, never gating)."
            " Fixed at start; select required containers in alerts with it. Extra, not in the stable set.",
            ["container"], registry=r,
        )
        self.ready = Gauge(
            "readiness_ready",
            "1 while the pod's aggregate readiness (GET /ready, what the kubelet sees) is ready: every"
            " required container ready and not draining. 0 otherwise.",
            registry=r,
        )
        self.transitions = Counter(
            "readiness_transitions_total",
            "Times a container's readiness changed, by the state it changed to (label to). A steady"
            " increase means the container flaps.",
            ["container", "to"], registry=r,
        )
        self.time_to_ready = Gauge(
            "readiness_time_to_ready_seconds",
            "Seconds from the sidecar's start to the container's first ready. Set once, at that moment;"
            " absent until then (absent for long means the container never became ready).",
            ["container"], registry=r,
        )
        self.consecutive_failures = Gauge(
            "readiness_consecutive_failures",
            "Failed readiness attempts in a row, now; 0 after any success. The container turns not"
            " ready when this reaches its failureThreshold.",
            ["container"], registry=r,
        )
        self.draining = Gauge(
            "readiness_draining",
            "1 while the sidecar drains: from the stop signal (SIGTERM, the pod's deletion) until it"
            " exits, or briefly on a preStop GET /wait-for-drain. /ready answers not ready meanwhile,"
            " so traffic moves away before the app stops. 0 otherwise.",
            registry=r,
        )
        self.schedule_lateness = Histogram(
            "readiness_probe_schedule_lateness_seconds",
            "Seconds an attempt started after its scheduled time: the event loop's delay. Tens of"
            " microseconds when healthy; milliseconds mean a busy or CPU-starved sidecar. Extra, not"
            " in the stable set.",
            ["container"], buckets=LATENESS_BUCKETS, registry=r,
        )
        self.routed_checks = Counter(
            "readiness_routed_check_total",
            "Liveness and startup checks the kubelet ran through the sidecar (GET /live/<container>,"
            " /startup/<container>, inject --rewrite-liveness), by result: failure and error are what the"
            " kubelet counted against its failureThreshold. One per attempt, however many callers shared it.",
            ["container", "kind", "result"], registry=r,
        )
        self.routed_check_duration = Histogram(
            "readiness_routed_check_duration_seconds",
            "Seconds one liveness or startup check run for the kubelet took; near the probe's timeoutSeconds"
            " means the app answers too slowly and the kubelet is about to restart it.",
            ["container", "kind"], buckets=DURATION_BUCKETS, registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self._series = {
            name: self._precreate(c) for name, c in state.containers.items() if c.spec.observed
        }
        self._routed = {
            (name, kind): _RoutedCheckSeries(
                duration=self.routed_check_duration.labels(name, kind),
                results={o: self.routed_checks.labels(name, kind, o.value) for o in Outcome},
            )
            for name, c in state.containers.items()
            for kind in ROUTED_CHECK_KINDS
            if c.spec.routed_check(kind) is not None
        }
        self.ready.set(state.ready)
        self.draining.set(state.draining)
        # Moves with every change but an attempt's counts: readiness (a container's, the aggregate,
        # draining) and routed checks (the kubelet's, a few a minute). An answer built before it is
        # never served again; attempts, hundreds a second, may lag by up to REUSE_FOR.
        self.revision = 0

    def _precreate(self, c: ContainerState) -> _ContainerSeries:
        assert c.spec.handler is not None
        name, kind = c.spec.name, c.spec.handler.kind
        series = _ContainerSeries(
            duration=self.probe_duration.labels(name, kind),
            lateness=self.schedule_lateness.labels(name),
            results={o: self.probe_attempts.labels(name, kind, o.value) for o in Outcome},
            ready=self.container_ready.labels(name),
            to_ready=self.transitions.labels(name, READY),
            to_not_ready=self.transitions.labels(name, NOT_READY),
        )
        series.ready.set(c.ready)
        self.container_required.labels(name).set(c.spec.gates)
        # Read at scrape time: the state already counts, so no attempt pays for a set().
        self.consecutive_failures.labels(name).set_function(lambda: c.consecutive_failures)
        if c.time_to_first_ready is not None:
            self.time_to_ready.labels(name).set(c.time_to_first_ready)
        return series

    # -- StateObserver -----------------------------------------------------------------

    def attempt_recorded(
        self, container: ContainerState, result: ProbeResult, lateness: float
    ) -> None:
        series = self._series.get(container.spec.name)
        if series is None:
            return  # an unobserved container has no scheduler; nothing to count
        series.duration.observe(result.duration)
        series.results[result.outcome].inc()
        series.lateness.observe(lateness)

    def routed_check_done(self, container: ContainerState, kind: str, result: ProbeResult) -> None:
        series = self._routed.get((container.spec.name, kind))
        if series is None:
            return  # a check the config never gave this container; never counted as another's
        self.revision += 1
        series.duration.observe(result.duration)
        series.results[result.outcome].inc()

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        series = self._series.get(container.spec.name)
        if series is None:
            return
        self.revision += 1
        series.ready.set(transition.now_ready)
        if transition.now_ready:
            series.to_ready.inc()
            if container.time_to_first_ready is not None:
                # Same value on every later ready: the first one fixed it.
                self.time_to_ready.labels(container.spec.name).set(container.time_to_first_ready)
        else:
            series.to_not_ready.inc()

    def aggregate_changed(self, state: AggregateState) -> None:
        self.revision += 1
        self.ready.set(state.ready)

    def draining_changed(self, state: AggregateState) -> None:
        self.revision += 1
        self.draining.set(state.draining)


def _accepts_text(accept: str) -> bool:
    """Whether an Accept value takes the text format: text/plain, text/* or */*, unless at q=0."""
    for entry in accept.split(","):
        media_range, *params = (part.strip().lower() for part in entry.split(";"))
        if media_range in _TEXT_RANGES and not any(_refused(param) for param in params):
            return True
    return False


def _refused(param: str) -> bool:
    """A q parameter of 0 (RFC 9110 12.4.2: "not acceptable")."""
    name, _, value = param.partition("=")
    if name.strip() != "q":
        return False
    try:
        return float(value) == 0
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _Built:
    """One exposition answer and what it was built from."""

    answer: Answer
    started: float  # time.monotonic() when its build began: the age of its values
    revision: int


# Which answer: its content type (the format, and OpenMetrics' version), and whether gzipped.
_Variant = tuple[str, bool]
_Encoder = Callable[[CollectorRegistry], bytes]


class MetricsServer:
    """GET /metrics on its own port, from the registry of a ReadinessMetrics.

        server = MetricsServer(ReadinessMetrics(state, CollectorRegistry()))
        port = await server.start("127.0.0.1", 0)
        await server.stop()

    A registry must not already hold these metric names or the process and platform
    collectors (prometheus_client refuses duplicates).

    The answer to the kubelet never waits behind a scrape: an exposition is built in a
    thread, never on the loop (for 1,000 containers it is 4.4 MB and ~0.4 s), one build per
    variant at a time, which every scrape arriving meanwhile shares; the answer is served
    again for REUSE_FOR seconds unless something but an attempt's counts changed.
    """

    def __init__(self, metrics: ReadinessMetrics) -> None:
        self.metrics = metrics
        self.registry = metrics.registry
        self._server = GetOnlyServer(
            {METRICS_PATH: self.handle_metrics}, max_body=MAX_REQUEST_BYTES, shutdown_grace=SHUTDOWN_GRACE
        )
        self._built: dict[_Variant, _Built] = {}
        self._building: dict[_Variant, asyncio.Future[_Built]] = {}

    async def start(self, bind: str, port: int) -> int:
        return await self._server.start(bind, port)

    async def stop(self) -> None:
        await self._server.stop()

    def handle_metrics(self, request: Request) -> Answer | None:
        # Prometheus' text format unless the scraper takes only OpenMetrics (Accept), each with
        # prometheus_client's content type; gzip if it accepts that (Prometheus does).
        accept = request.header(b"accept")
        if _OPENMETRICS in accept and not _accepts_text(accept):
            encode, content_type = choose_encoder(accept)
        else:
            encode, content_type = generate_latest, CONTENT_TYPE_LATEST
        variant = (content_type, gzip_accepted(request.header(b"accept-encoding")))
        arrived = time.monotonic()
        built = self._built.get(variant)
        if built is not None and self._reusable(built, arrived):
            return built.answer
        request.respond_later(self._answer_built_since(variant, encode, arrived))
        return None

    def _reusable(self, built: _Built, now: float) -> bool:
        return built.revision == self.metrics.revision and now - built.started < REUSE_FOR

    async def _answer_built_since(self, variant: _Variant, encode: _Encoder, arrived: float) -> Answer:
        """An answer built after `arrived`, or one still reusable: a build in flight is shared, and
        one that began before a change is followed by another."""
        while True:
            built = self._built.get(variant)
            if built is not None and (built.started >= arrived or self._reusable(built, time.monotonic())):
                return built.answer
            building = self._building.get(variant)
            if building is None:
                building = self._building[variant] = self._build(variant, encode)
            await asyncio.shield(building)  # a scraper that leaves cancels its wait, not the others' build

    def _build(self, variant: _Variant, encode: _Encoder) -> asyncio.Future[_Built]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_Built] = loop.create_future()
        # Its waiters may all have left (shutdown): a failed build is theirs to log, never the loop's
        # "exception was never retrieved".
        done.add_done_callback(lambda future: future.cancelled() or future.exception())
        started, revision = time.monotonic(), self.metrics.revision
        content_type, gzipped = variant

        def render() -> Answer:
            body = encode(self.registry)
            if gzipped:
                packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
                return Answer(200, packer.compress(body) + packer.flush(), content_type, headers=_GZIP_HEADERS)
            return Answer(200, body, content_type, headers=_VARY_HEADERS)

        def finish(answer: Answer | None, error: Exception | None) -> None:
            del self._building[variant]
            if answer is None:
                done.set_exception(error or RuntimeError("no exposition"))
                return
            built = self._built[variant] = _Built(answer, started, revision)
            done.set_result(built)

        def in_thread() -> None:
            answer, error = None, None
            try:
                answer = render()
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(finish, answer, error)

        # A daemon thread of its own (a few a second at most): it never holds up the exit, where a
        # pool's worker would be joined. prometheus_client's registry is made to be collected from
        # another thread (its own HTTP server does), each value under its lock.
        threading.Thread(target=in_thread, name="metrics-exposition", daemon=True).start()
        return done
