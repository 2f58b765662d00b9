"""An HTTP app that starts slow: /healthz is 503 until --ready-after seconds pass.

    python -m sidecar.demo.http_app --port 8080 --ready-after 2
    curl -i localhost:8080/healthz           # 503, then 200
    curl -X POST localhost:8080/toggle       # flip it by hand
"""

from __future__ import annotations

import time

from aiohttp import web

from sidecar.demo.lifecycle import (
    TimingFlag,
    announce_port,
    log,
    non_negative_seconds,
    run_demo_app,
    wait_for_stop,
)

APP = "http_app"
DEFAULT_PORT = 8080
DEFAULT_READY_AFTER = 2.0


class HealthSwitch:
    """Ready once `ready_after` seconds have passed, unless toggled by hand.

        switch = HealthSwitch(ready_after=2.0)
        switch.ready          # False for 2 s, then True
        switch.toggle()       # from now on, the opposite of what it was
    """

    def __init__(self, ready_after: float) -> None:
        self.ready_at = time.monotonic() + ready_after
        self.override: bool | None = None

    @property
    def ready(self) -> bool:
        if self.override is not None:
            return self.override
        return time.monotonic() >= self.ready_at

    def toggle(self) -> bool:
        self.override = not self.ready
        return self.override


SWITCH = web.AppKey("switch", HealthSwitch)


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello from the readiness-sidecar demo http app\n")


async def healthz(request: web.Request) -> web.Response:
    if request.app[SWITCH].ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="starting\n")


async def toggle(request: web.Request) -> web.Response:
    now_ready = request.app[SWITCH].toggle()
    log(APP, f"toggled: /healthz now {200 if now_ready else 503}")
    return web.Response(text=f"ready={str(now_ready).lower()}\n")


def build_app(switch: HealthSwitch) -> web.Application:
    app = web.Application()
    app[SWITCH] = switch
    app.router.add_get("/", hello)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/toggle", toggle)
    return app


async def serve(host: str, port: int, ready_after: float, exit_on_stdin_close: bool) -> None:
    switch = HealthSwitch(ready_after)
    # No access log: an aggressive prober hits /healthz hundreds of times a second.
    runner = web.AppRunner(build_app(switch), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        announce_port(bound_port)
        log(APP, f"listening on {host}:{bound_port}; /healthz turns 200 after {ready_after:g}s")
        await wait_for_stop(exit_on_stdin_close)
    finally:
        await runner.cleanup()


TIMING = TimingFlag(
    "--ready-after", non_negative_seconds, DEFAULT_READY_AFTER, "seconds from start until /healthz answers 200"
)


def main() -> None:
    run_demo_app(APP, __doc__, DEFAULT_PORT, TIMING, serve)


if __name__ == "__main__":
    main()
