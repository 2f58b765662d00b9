"""The health port: /ready, /ready/<container>, /healthz, /status, /wait-for-drain, and
/live/<container> for the liveness checks that `inject --rewrite-liveness` routes through us.
Every route comes from `sidecar.contract`, the same constants inject writes into pods.

/ready is the hot path (kubelet, load balancers, wrk): its body is rebuilt only
when the state's revision changes, and a long-poll waits on the state's event.

    server = HealthHttpServer(state, drainer, LivenessChecks(config.containers, logger))
    port = await server.start("0.0.0.0", 8550)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sidecar import __version__
from sidecar.contract import (
    DRAIN_PATH,
    HEALTHZ_PATH,
    LIVE_PATH,
    READY_CONTAINER_PATH,
    READY_PATH,
    STATUS_PATH,
    WAIT_PARAM,
)
from sidecar.durations import parse_duration
from sidecar.http_site import HttpSite, get_only_app
from sidecar.runtime.attempt import LivenessChecks
from sidecar.runtime.drain import Drainer
from sidecar.runtime.state import AggregateState
from sidecar.serve.views import container_status, ready_summary

MAX_WAIT_SECONDS = 300.0  # a long-poll longer than any sane kubelet timeout is a mistake
MAX_REQUEST_BYTES = 1024  # every endpoint is a GET: no body is ever needed
SHUTDOWN_GRACE = 1.0  # in-flight requests get this long once the drain is over

JSON = "application/json"
# The one path parameter: a container name.
_CONTAINER = "container"


def _json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type=JSON)


class HealthHttpServer:
    def __init__(self, state: AggregateState, drainer: Drainer, liveness: LivenessChecks) -> None:
        self.state = state
        self.drainer = drainer
        self.liveness = liveness
        self._ready_cache: tuple[int, int, bytes] = (-1, 503, b"")
        self.app = get_only_app(MAX_REQUEST_BYTES)
        for path, handler in (
            (READY_PATH, self.ready),
            (READY_CONTAINER_PATH, self.ready_container),
            (HEALTHZ_PATH, self.healthz),
            (STATUS_PATH, self.status),
            (DRAIN_PATH, self.wait_for_drain),
            (LIVE_PATH, self.live_container),
        ):
            self.app.router.add_get(path, handler)
        self._site = HttpSite(self.app, shutdown_grace=SHUTDOWN_GRACE)

    async def start(self, bind: str, port: int) -> int:
        return await self._site.start(bind, port)

    async def stop(self) -> None:
        await self._site.stop()

    # -- handlers -------------------------------------------------------------------

    async def _hold(self, request: web.Request, predicate: Callable[[], bool]) -> web.Response | None:
        """The long-poll: hold until predicate() or ?wait= ends. Returns an error response
        for a bad wait value, else None."""
        raw = request.query.get(WAIT_PARAM)
        if raw is None or predicate() or self.state.draining:
            return None  # draining never ends in ready: answer at once
        try:
            wait = min(parse_duration(raw), MAX_WAIT_SECONDS)
        except ValueError as exc:
            return _json_response({"error": f"{WAIT_PARAM}: {exc}"}, status=400)
        await self.state.wait_for(lambda: predicate() or self.state.draining, wait)
        return None

    def _ready_body(self) -> tuple[int, bytes]:
        revision, status, body = self._ready_cache
        if revision != self.state.revision:
            state = self.state
            status = 200 if state.ready else 503
            doc = {
                "ready": state.ready,
                "draining": state.draining,
                "containers": {n: ready_summary(c) for n, c in state.containers.items()},
            }
            body = json.dumps(doc, separators=(",", ":")).encode()
            self._ready_cache = (state.revision, status, body)
        return status, body

    async def ready(self, request: web.Request) -> web.Response:
        error = await self._hold(request, lambda: self.state.ready)
        if error is not None:
            return error
        status, body = self._ready_body()
        return web.Response(body=body, status=status, content_type=JSON)

    async def ready_container(self, request: web.Request) -> web.Response:
        name = request.match_info[_CONTAINER]
        c = self.state.containers.get(name)
        if c is None:
            return _json_response({"error": f"unknown container {name!r}"}, status=404)
        error = await self._hold(request, lambda: c.ready)
        if error is not None:
            return error
        doc = {"container": name, **ready_summary(c)}
        return _json_response(doc, status=200 if c.ready else 503)

    async def healthz(self, request: web.Request) -> web.Response:
        dead = list(self.state.dead_schedulers)
        if dead:
            return _json_response({"alive": False, "dead_schedulers": dead}, status=503)
        return _json_response({"alive": True})

    async def status(self, request: web.Request) -> web.Response:
        state = self.state
        doc = {
            "ready": state.ready,
            "draining": state.draining,
            "uptime_seconds": round(state.uptime(), 3),
            "version": __version__,
            # Live asyncio tasks in the process, this request's included: a debug figure
            # that tests/reliability watches for leaks. Cheap: one pass over a WeakSet.
            "tasks": len(asyncio.all_tasks()),
            "containers": [container_status(c, state.started_mono) for c in state.containers.values()],
        }
        return _json_response(doc, status=200)

    async def wait_for_drain(self, request: web.Request) -> web.Response:
        outcome = await self.drainer.wait_for_drain()
        return _json_response({"drain": outcome})

    async def live_container(self, request: web.Request) -> web.Response:
        """Run the container's liveness check once, now: the kubelet owns period and thresholds."""
        name = request.match_info[_CONTAINER]
        if name not in self.liveness:
            return _json_response({"error": f"no liveness check for container {name!r}"}, status=404)
        result = await self.liveness.check(name)
        doc = {"container": name, "alive": result.outcome.ok, "result": result.outcome.value, "reason": result.message}
        return _json_response(doc, status=200 if result.outcome.ok else 503)
