"""The health port: /ready, /ready/<container>, /healthz, /status, /wait-for-drain, and
/live/<container> and /startup/<container> for the liveness and startup checks that
`inject --rewrite-liveness` routes through us.
Every route comes from `sidecar.contract`, the same constants inject writes into pods.

/ready is the hot path (kubelet, load balancers, wrk): its answer is built only when the
state's revision changes. A long-poll (`?wait=`) is held by the server, not by a task:
the server is a StateObserver, and the hook that learns of the change writes the one
answer to every waiting connection, inline, before the state's record() returns.

    server = HealthHttpServer(state, drainer, RoutedChecks(config.containers, logger, state))
    state.observe(server)        # the app's wiring: how long-polls learn of changes
    port = await server.start("0.0.0.0", 8550)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable
from functools import partial

from sidecar import __version__
from sidecar.contract import (
    DRAIN_PATH,
    HEALTHZ_PATH,
    LIVE_PATH,
    READY_CONTAINER_PATH,
    READY_PATH,
    STARTUP_PATH,
    STATUS_PATH,
    WAIT_CAPPED_HEADER,
    WAIT_PARAM,
)
from sidecar.durations import parse_duration
from sidecar.model import LIVENESS, STARTUP
from sidecar.runtime.attempt import RoutedChecks
from sidecar.runtime.drain import Drainer
from sidecar.runtime.state import AggregateState, ContainerState, StateObserver, Transition
from sidecar.serve.http_server import GetOnlyServer, Request
from sidecar.serve.http_wire import JSON, Answer, json_answer
from sidecar.serve.views import container_status, pod_status, ready_summary

MAX_WAIT_SECONDS = 300.0  # a long-poll longer than any sane kubelet timeout is a mistake
_WAIT_CAPPED_LINE = f"{WAIT_CAPPED_HEADER}: {MAX_WAIT_SECONDS:g}\r\n".encode()
MAX_REQUEST_BYTES = 1024  # every endpoint is a GET: no body is ever needed
SHUTDOWN_GRACE = 1.0  # in-flight requests get this long once the drain is over

# The body's yes/no key for each routed check: {"alive": true} on /live, {"started": true} on /startup.
_VERDICT_KEYS = {LIVENESS: "alive", STARTUP: "started"}

# What a held /ready waits for, beside the container names /ready/<name> waits on (never None).
_AGGREGATE: Hashable = None


class HealthHttpServer(StateObserver):
    def __init__(self, state: AggregateState, drainer: Drainer, routed: RoutedChecks) -> None:
        self.state = state
        self.drainer = drainer
        self.routed = routed
        self._ready_cache: tuple[int, Answer | None] = (-1, None)
        self._server = GetOnlyServer(
            {
                READY_PATH: self.ready,
                READY_CONTAINER_PATH: self.ready_container,
                HEALTHZ_PATH: self.healthz,
                STATUS_PATH: self.status,
                DRAIN_PATH: self.wait_for_drain,
                LIVE_PATH: partial(self.routed_check, LIVENESS),
                STARTUP_PATH: partial(self.routed_check, STARTUP),
            },
            max_body=MAX_REQUEST_BYTES,
            shutdown_grace=SHUTDOWN_GRACE,
        )

    async def start(self, bind: str, port: int) -> int:
        if self not in self.state.observers:
            raise RuntimeError("HealthHttpServer must observe its state (state.observe(server)): "
                               "long-polls are answered from its hooks")
        return await self._server.start(bind, port)

    async def stop(self) -> None:
        """Held long-polls are answered now (as their wait's end would); in-flight requests get SHUTDOWN_GRACE."""
        await self._server.stop()

    @property
    def held_long_polls(self) -> int:
        return len(self._server.held)

    # -- answers ------------------------------------------------------------------------

    def _ready_answer(self) -> Answer:
        revision, answer = self._ready_cache
        state = self.state
        if revision != state.revision or answer is None:
            # Inside the draining hook state.ready is not yet recomputed; draining is never ready.
            ready = state.ready and not state.draining
            doc = {
                "ready": ready,
                "draining": state.draining,
                "status": pod_status(state),
                "containers": {n: ready_summary(c) for n, c in state.containers.items()},
            }
            answer = Answer(200 if ready else 503, json.dumps(doc, separators=(",", ":")).encode(), JSON)
            self._ready_cache = (state.revision, answer)
        return answer

    def _container_answer(self, c: ContainerState) -> Answer:
        doc = {"container": c.spec.name, **ready_summary(c)}
        return json_answer(doc, status=200 if c.ready else 503)

    def _answer_or_hold(
        self, request: Request, key: Hashable, predicate: Callable[[], bool], answer: Callable[[], Answer]
    ) -> Answer | None:
        """The answer now, or hold the long-poll (`?wait=`) until predicate() or the wait ends."""
        raw = request.query_value(WAIT_PARAM)
        if raw is None or predicate() or self.state.draining:
            return answer()  # draining never ends in ready: answer at once
        try:
            asked = parse_duration(raw)
        except ValueError as exc:
            return json_answer({"error": f"{WAIT_PARAM}: {exc}"}, status=400)
        wait = min(asked, MAX_WAIT_SECONDS)
        if asked > MAX_WAIT_SECONDS:
            request.answer_headers = _WAIT_CAPPED_LINE  # held to the cap, and its answer says so
        if wait <= 0:
            return answer()
        request.hold(key, wait, answer)
        return None

    # -- StateObserver: the changes a held long-poll waits for --------------------------------

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        if transition.now_ready:
            self._server.held.release(container.spec.name, lambda: self._container_answer(container))

    def aggregate_changed(self, state: AggregateState) -> None:
        if state.ready:
            self._server.held.release(_AGGREGATE, self._ready_answer)

    def draining_changed(self, state: AggregateState) -> None:
        if not state.draining:
            return
        for key in self._server.held.waited_for():
            if key is _AGGREGATE:
                self._server.held.release(key, self._ready_answer)
            else:
                self._server.held.release(key, partial(self._container_answer, state.containers[str(key)]))

    # -- handlers -------------------------------------------------------------------------

    def ready(self, request: Request) -> Answer | None:
        return self._answer_or_hold(request, _AGGREGATE, lambda: self.state.ready, self._ready_answer)

    def ready_container(self, request: Request) -> Answer | None:
        name = request.param
        c = self.state.containers.get(name)
        if c is None:
            return json_answer({"error": f"unknown container {name!r}"}, status=404)
        return self._answer_or_hold(request, name, lambda: c.ready, lambda: self._container_answer(c))

    def healthz(self, request: Request) -> Answer:
        dead = list(self.state.dead_schedulers)
        if dead:
            return json_answer({"alive": False, "dead_schedulers": dead}, status=503)
        return json_answer({"alive": True})

    def status(self, request: Request) -> Answer:
        state = self.state
        doc = {
            "ready": state.ready,
            "draining": state.draining,
            "status": pod_status(state),
            "uptime_seconds": round(state.uptime(), 3),
            "version": __version__,
            # Live asyncio tasks in the process: a debug figure that tests/reliability
            # watches for leaks. Cheap: one pass over a WeakSet. (This request has none.)
            "tasks": len(asyncio.all_tasks()),
            "containers": [container_status(c, state.started_mono) for c in state.containers.values()],
        }
        return json_answer(doc)

    def wait_for_drain(self, request: Request) -> None:
        request.respond_later(self._drained_answer())

    async def _drained_answer(self) -> Answer:
        return json_answer({"drain": await self.drainer.wait_for_drain()})

    def routed_check(self, kind: str, request: Request) -> Answer | None:
        """Run the container's liveness or startup check once, now: the kubelet owns period and thresholds."""
        name = request.param
        if not self.routed.has(name, kind):
            return json_answer({"error": f"no {kind} check for container {name!r}"}, status=404)
        request.respond_later(self._routed_answer(name, kind))
        return None

    async def _routed_answer(self, name: str, kind: str) -> Answer:
        result = await self.routed.check(name, kind)
        verdict = _VERDICT_KEYS[kind]
        doc = {"container": name, verdict: result.outcome.ok, "result": result.outcome.value, "reason": result.message}
        return json_answer(doc, status=200 if result.outcome.ok else 503)
