"""The gRPC health port: `grpc.health.v1.Health` over the aggregate state.

Service "" is the aggregate and every container is a service of its own name, so
kubelet `grpc` probes and Watch clients ask the same question as GET /ready.
Statuses are read from the state on each call; Watch streams wait on the state's
change notification, so a change reaches them within milliseconds.

    server = GrpcHealthServer(state)
    port = await server.start("0.0.0.0", 8551)
    await server.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from probes.spec import join_host_port
from sidecar.runtime.state import AggregateState

# A HealthCheckRequest is one short service name; anything bigger is not a health check.
MAX_REQUEST_BYTES = 4096

_SERVICE = "grpc.health.v1.Health"
_SERVING: int = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
_SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

_SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    # grpc enables SO_REUSEPORT by default: a second sidecar on the same port would
    # then bind silently and steal half the probes instead of failing at start-up.
    ("grpc.so_reuseport", 0),
)


class GrpcHealthServer:
    """Serves Check, Watch and List of `grpc.health.v1.Health` for an AggregateState.

        server = GrpcHealthServer(state)
        port = await server.start("127.0.0.1", 0)
        await server.stop(grace=0.5)

    Statuses:
    - "" (the aggregate): SERVING iff `state.ready`, which is False while draining.
    - a container's name: SERVING iff that container is ready; draining does not
      change it. An unobserved container (no handler, left to the kubelet) answers
      SERVICE_UNKNOWN: it exists, so NOT_FOUND would be wrong, but we know nothing of it.
    - any other name: Check fails with NOT_FOUND; Watch streams SERVICE_UNKNOWN and
      stays open, as the reference servicer does.
    Once `stop()` begins, every known service reports NOT_SERVING and open Watch
    streams send that and end with OK, instead of being cut off at the grace deadline.
    """

    def __init__(self, state: AggregateState) -> None:
        self.state = state
        self._server: Any = None  # grpc.aio.Server while started
        self._stopping = False
        self._stopped = asyncio.Event()  # set by stop(): open Watch streams end
        self._open_watches = 0

    @property
    def open_watches(self) -> int:
        """Watch streams currently open."""
        return self._open_watches

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, bind: str, port: int) -> int:
        """Listen on bind:port (0 picks a free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("gRPC health server already started")
        server = grpc.aio.server(options=_SERVER_OPTIONS)
        server.add_generic_rpc_handlers((self._handlers(),))
        address = join_host_port(bind.removeprefix("[").removesuffix("]"), port)
        try:
            bound = int(server.add_insecure_port(address))
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            raise OSError(f"gRPC health server cannot listen on {address}: {exc}") from exc
        await server.start()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._server = server
        return bound

    async def stop(self, grace: float = 0.5) -> None:
        """Stop serving: Watch streams end cleanly, other calls get `grace` seconds."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping = True
        self._stopped.set()
        await server.stop(grace)

    # -- statuses ---------------------------------------------------------------------

    def status_of(self, service: str) -> int | None:
        """The ServingStatus of `service`, or None if no such service exists."""
        if service == "":
            ready = self.state.ready
        else:
            container = self.state.containers.get(service)
            if container is None:
                return None
            if not container.spec.observed and not self._stopping:
                return _SERVICE_UNKNOWN
            ready = container.ready
        return _SERVING if ready and not self._stopping else _NOT_SERVING

    # -- handlers ---------------------------------------------------------------------

    def _handlers(self) -> Any:
        request = health_pb2.HealthCheckRequest.FromString
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self._check,
                    request_deserializer=request,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self._watch,
                    request_deserializer=request,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                ),
                "List": grpc.unary_unary_rpc_method_handler(
                    self._list,
                    request_deserializer=health_pb2.HealthListRequest.FromString,
                    response_serializer=health_pb2.HealthListResponse.SerializeToString,
                ),
            },
        )

    async def _check(self, request: Any, context: Any) -> Any:
        status = self.status_of(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def _list(self, request: Any, context: Any) -> Any:
        names = ["", *self.state.containers]
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=self.status_of(name)) for name in names
            }
        )

    async def _watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """The current status first, then each change once; ends when the server stops.

        A client cancelling raises CancelledError at the await, and nothing outlives the call.
        """
        service: str = request.service
        self._open_watches += 1
        try:
            last: int | None = None
            while True:
                # Taken before reading the status: a change while we write sets it, and
                # the loop reads again at once, so no change is ever lost.
                changed = self.state.changed
                status = self.status_of(service)
                if status is None:
                    status = _SERVICE_UNKNOWN
                if status != last:
                    last = status
                    yield health_pb2.HealthCheckResponse(status=status)
                if self._stopping:
                    return
                await _first_of(changed, self._stopped)
        finally:
            self._open_watches -= 1


async def _first_of(*events: asyncio.Event) -> None:
    """Return once any of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
