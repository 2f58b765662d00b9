"""A gRPC app whose health flips SERVING <-> NOT_SERVING every --flip-every seconds.

    python -m sidecar.demo.grpc_app --port 8081 --flip-every 15
    grpc_health_probe -addr localhost:8081    # SERVING, 15 s later NOT_SERVING, ...

It starts SERVING. The overall service "" is the one that flips.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from probes.spec import join_host_port
from sidecar.demo.lifecycle import (
    TimingFlag,
    announce_port,
    log,
    positive_seconds,
    run_demo_app,
    wait_for_stop,
)

APP = "grpc_app"
DEFAULT_PORT = 8081
DEFAULT_FLIP_EVERY = 15.0
SERVICE = ""  # the whole server, which is what a kubelet grpc probe asks by default

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def flip_forever(servicer: health.aio.HealthServicer, every: float) -> None:
    serving = True
    while True:
        await asyncio.sleep(every)
        serving = not serving
        await servicer.set(SERVICE, _SERVING if serving else _NOT_SERVING)
        log(APP, "now " + ("SERVING" if serving else "NOT_SERVING"))


async def serve(host: str, port: int, flip_every: float, exit_on_stdin_close: bool) -> None:
    # grpc turns SO_REUSEPORT on by default; off, a second copy on a taken port fails
    # loudly instead of silently sharing it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        bound_port = server.add_insecure_port(join_host_port(host, port))
    except RuntimeError:
        raise OSError(f"cannot listen on {join_host_port(host, port)}") from None
    await servicer.set(SERVICE, _SERVING)
    await server.start()
    announce_port(bound_port)
    log(APP, f"listening on {host}:{bound_port}; SERVING, flipping every {flip_every:g}s")
    flipper = asyncio.create_task(flip_forever(servicer, flip_every))
    try:
        await wait_for_stop(exit_on_stdin_close)
    finally:
        flipper.cancel()
        await server.stop(grace=None)


TIMING = TimingFlag("--flip-every", positive_seconds, DEFAULT_FLIP_EVERY, "seconds between health flips, > 0")


def main() -> None:
    run_demo_app(APP, __doc__, DEFAULT_PORT, TIMING, serve)


if __name__ == "__main__":
    main()
