"""The ceiling for /ready: a bare aiohttp "ok" handler, run as its own process.

    python -m benchmarks.bare_server --loop uvloop    # prints "port N", serves until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _serve() -> None:
    app = web.Application()
    app.router.add_get("/ready", _ok)
    # The same server options as the sidecar's health port, so only the handler differs.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, reuse_address=True, backlog=1024)
    await site.start()
    print(f"port {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_serve())
    else:
        asyncio.run(_serve())


if __name__ == "__main__":
    main()
