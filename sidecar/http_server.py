"""The health port: /ready, /ready/<container>, /healthz, /status, /wait-for-drain (DESIGN §5),
and /live/<container> for liveness checks that `inject --rewrite-liveness` routes through us.

/ready is the hot path (kubelet, load balancers, wrk): its body is rebuilt only
when the state's revision changes, and a long-poll waits on the state's event.

    server = HealthHttpServer(state, drainer, liveness=lambda: [])
    port = await server.start("0.0.0.0", 8550)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from probes import HandlerSpec, ProbeResult, build_probe
from sidecar import __version__
from sidecar.drain import Drainer
from sidecar.durations import parse_duration
from sidecar.request_limits import refuse_bodies_over
from sidecar.state import AggregateState, ContainerState

MAX_WAIT_SECONDS = 300.0  # a long-poll longer than any sane kubelet timeout is a mistake
MAX_REQUEST_BYTES = 1024  # every endpoint is a GET: no body is ever needed
SHUTDOWN_GRACE = 1.0  # in-flight requests get this long once the drain is over

JSON = "application/json"


def _container_summary(c: ContainerState) -> dict[str, Any]:
    doc: dict[str, Any] = {"ready": c.ready, "status": c.status}
    if not c.spec.required:
        doc["required"] = False
    if not c.ready:
        doc["reason"] = c.reason
    return doc


def _container_status(c: ContainerState, started_mono: float) -> dict[str, Any]:
    spec, result = c.spec, c.last_result
    return {
        "name": spec.name,
        "probe": spec.handler.kind if spec.handler else None,
        "target": spec.handler.target if spec.handler else None,
        "required": spec.required,
        "status": c.status,
        "ready": c.ready,
        "consecutive_successes": c.consecutive_successes,
        "consecutive_failures": c.consecutive_failures,
        "attempts": c.attempts,
        "last_result": result.outcome.value if result else None,
        "message": c.reason,
        "latency_ms": round(result.duration * 1000, 3) if result else None,
        "last_transition_time": _rfc3339(c.since_wall) if c.since_mono != started_mono else None,
        "time_to_first_ready_seconds": (
            round(c.time_to_first_ready, 6) if c.time_to_first_ready is not None else None
        ),
        "timing": {
            "initial_delay_seconds": spec.timing.initial_delay,
            "timeout_seconds": spec.timing.timeout,
            "period_seconds": spec.timing.period,
            "aggressive": spec.timing.aggressive,
            "success_threshold": spec.timing.success_threshold,
            "failure_threshold": spec.timing.failure_threshold,
        },
    }


def _rfc3339(wall: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def _json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type=JSON)


class HealthHttpServer:
    def __init__(
        self,
        state: AggregateState,
        drainer: Drainer,
        dead_schedulers: Callable[[], list[str]],
    ) -> None:
        self.state = state
        self.drainer = drainer
        self.dead_schedulers = dead_schedulers
        self._ready_cache: tuple[int, int, bytes] = (-1, 503, b"")
        self._runner: web.AppRunner | None = None
        # One /live attempt per container at a time, shared by concurrent callers: anything that
        # reaches this port may call it, and each attempt starts a connection or a process.
        self._live_checks: dict[str, asyncio.Task[ProbeResult]] = {}
        self.app = web.Application(
            client_max_size=MAX_REQUEST_BYTES, middlewares=[refuse_bodies_over(MAX_REQUEST_BYTES)]
        )
        self.app.router.add_get("/ready", self.ready)
        self.app.router.add_get("/ready/{container}", self.ready_container)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/status", self.status)
        self.app.router.add_get("/wait-for-drain", self.wait_for_drain)
        self.app.router.add_get("/live/{container}", self.live_container)

    async def start(self, bind: str, port: int) -> int:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, bind, port, reuse_address=True, backlog=1024)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -------------------------------------------------------------------

    async def _hold(self, request: web.Request, predicate: Callable[[], bool]) -> web.Response | None:
        """The long-poll: hold until predicate() or ?wait= ends. Returns an error response
        for a bad wait value, else None."""
        raw = request.query.get("wait")
        if raw is None or predicate() or self.state.draining:
            return None  # draining never ends in ready: answer at once
        try:
            wait = min(parse_duration(raw), MAX_WAIT_SECONDS)
        except ValueError as exc:
            return _json_response({"error": f"wait: {exc}"}, status=400)
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
                "containers": {n: _container_summary(c) for n, c in state.containers.items()},
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
        name = request.match_info["container"]
        c = self.state.containers.get(name)
        if c is None:
            return _json_response({"error": f"unknown container {name!r}"}, status=404)
        error = await self._hold(request, lambda: c.ready)
        if error is not None:
            return error
        doc = {"container": name, **_container_summary(c)}
        return _json_response(doc, status=200 if c.ready else 503)

    async def healthz(self, request: web.Request) -> web.Response:
        dead = self.dead_schedulers()
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
            "containers": [_container_status(c, state.started_mono) for c in state.containers.values()],
        }
        return _json_response(doc, status=200)

    async def wait_for_drain(self, request: web.Request) -> web.Response:
        outcome = await self.drainer.wait_for_drain()
        return _json_response({"drain": outcome})

    async def live_container(self, request: web.Request) -> web.Response:
        """Run the container's liveness check once, now: the kubelet owns period and thresholds."""
        name = request.match_info["container"]
        c = self.state.containers.get(name)
        if c is None or c.spec.liveness is None:
            return _json_response({"error": f"no liveness check for container {name!r}"}, status=404)
        check = self._live_checks.get(name)
        if check is None or check.done():
            check = asyncio.create_task(_attempt_once(c.spec.liveness, c.spec.liveness_timeout), name=f"live {name}")
            self._live_checks[name] = check
        # A caller that goes away must not cancel the attempt the others are waiting on.
        result = await asyncio.shield(check)
        doc = {"container": name, "alive": result.outcome.ok, "result": result.outcome.value, "reason": result.message}
        return _json_response(doc, status=200 if result.outcome.ok else 503)


async def _attempt_once(handler: HandlerSpec, timeout: float) -> ProbeResult:
    probe = build_probe(handler)
    try:
        return await probe.attempt(timeout)
    finally:
        await probe.close()
