"""The gRPC health port: `grpc.health.v1.Health` over the aggregate state.

Service "" is the aggregate and every container is a service of its own name, so
kubelet `grpc` probes and Watch clients ask the same question as GET /ready.
Statuses are read from the state on each call. Watch streams are followed by one task
that waits on the state's change notification and writes each change to every stream
it changes, so a change reaches them within milliseconds and nothing polls.

The calls travel on `serve.grpc_h2` (asyncio and h2), the messages are
`probes.grpc_wire`'s: no grpcio, no protobuf.

    server = GrpcHealthServer(state)
    port = await server.start("0.0.0.0", 8551)
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

from probes.grpc_wire import (
    CHECK_PATH,
    INTERNAL,
    LIST_PATH,
    NOT_FOUND,
    NOT_SERVING,
    SERVICE_UNKNOWN,
    SERVING,
    WATCH_PATH,
    WireError,
    check_message,
    decode_request,
    encode_list_response,
    encode_response,
)
from probes.spec import join_host_port
from sidecar.runtime.state import AggregateState
from sidecar.serve.grpc_h2 import DEFAULT_LIMITS, Call, ConnectionLimits, GrpcServer

# A HealthCheckRequest is one short service name; anything bigger is not a health check.
MAX_REQUEST_BYTES = 4096

_RESPONSES = {status: encode_response(status) for status in (SERVING, NOT_SERVING, SERVICE_UNKNOWN)}


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

    def __init__(self, state: AggregateState, *, limits: ConnectionLimits = DEFAULT_LIMITS) -> None:
        self.state = state
        self.limits = limits
        self._server: GrpcServer | None = None
        self._stopping = False
        # Open Watch streams by service, each with the status it was last sent.
        self._watches: dict[str, dict[Call, int]] = {}
        self._follower: asyncio.Task[None] | None = None

    @property
    def open_watches(self) -> int:
        """Watch streams currently open."""
        return sum(len(calls) for calls in self._watches.values())

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, bind: str, port: int) -> int:
        """Listen on bind:port (0 picks a free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("gRPC health server already started")
        host = bind.removeprefix("[").removesuffix("]")
        server = GrpcServer(
            {CHECK_PATH: self._check, WATCH_PATH: self._watch, LIST_PATH: self._list},
            max_request_bytes=MAX_REQUEST_BYTES,
            limits=self.limits,
        )
        try:
            bound = await server.start(host, port)
        except OSError as exc:
            address = join_host_port(host, port)
            raise OSError(f"gRPC health server cannot listen on {address}: {exc.strerror or exc}") from exc
        self._stopping = False
        self._server = server
        self._follower = asyncio.create_task(self._follow_changes(), name="grpc-health-watch")
        return bound

    async def stop(self, grace: float = 0.5) -> None:
        """Stop serving: Watch streams end cleanly, other calls get `grace` seconds."""
        if self._server is None:
            return
        server, self._server = self._server, None
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
        self._stopping = True
        self._push_changes()  # NOT_SERVING to every known service
        watches, self._watches = self._watches, {}
        for calls in watches.values():
            for call in calls:
                call.finish()
        await server.stop(grace)
        if follower is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await follower

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
                return SERVICE_UNKNOWN
            ready = container.ready
        return SERVING if ready and not self._stopping else NOT_SERVING

    # -- handlers: each runs inline, when its request arrived ---------------------------

    def _check(self, call: Call) -> None:
        service = _service_of(call)
        if service is None:
            return
        status = self.status_of(service)
        if status is None:
            call.fail(NOT_FOUND, "unknown service")
        else:
            call.reply(_RESPONSES[status])

    def _list(self, call: Call) -> None:
        try:
            check_message(call.request or b"")
        except WireError:
            call.fail(INTERNAL, "malformed HealthListRequest")
            return
        names = ["", *self.state.containers]
        call.reply(encode_list_response((name, self._status_or_unknown(name)) for name in names))

    def _watch(self, call: Call) -> None:
        """The current status now, then each change once (`_push_changes`); ends when the server stops.

        A client cancelling (or leaving) calls `on_gone`, and nothing outlives the call.
        """
        service = _service_of(call)
        if service is None:
            return
        status = self._status_or_unknown(service)
        self._watches.setdefault(service, {})[call] = status
        call.on_gone = partial(self._forget_watch, service, call)
        call.send(_RESPONSES[status])

    def _forget_watch(self, service: str, call: Call) -> None:
        calls = self._watches.get(service)
        if calls is not None:
            calls.pop(call, None)
            if not calls:
                del self._watches[service]

    # -- Watch streams ------------------------------------------------------------------

    def _status_or_unknown(self, service: str) -> int:
        status = self.status_of(service)
        return SERVICE_UNKNOWN if status is None else status

    async def _follow_changes(self) -> None:
        while True:
            # Taken before reading the statuses: a change while we write sets it, and the
            # loop reads again at once, so no change is ever lost.
            changed = self.state.changed
            self._push_changes()
            await changed.wait()

    def _push_changes(self) -> None:
        """Send each open Watch stream its service's status, if it is not the one it was last sent."""
        for service, calls in self._watches.items():
            status = self._status_or_unknown(service)
            message = _RESPONSES[status]
            for call, last in list(calls.items()):
                if last != status:
                    calls[call] = status
                    call.send(message)


def _service_of(call: Call) -> str | None:
    """HealthCheckRequest.service, or None once the call failed for a malformed request."""
    try:
        return decode_request(call.request or b"")
    except WireError:
        call.fail(INTERNAL, "malformed HealthCheckRequest")
        return None
