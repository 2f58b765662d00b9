"""`readiness-sidecar webhook`: the mutating admission webhook, HTTPS only (there is no plain-HTTP listener).

POST /mutate answers AdmissionReview v1 (see sidecar.admission); GET /healthz is for the kubelet.

    server = WebhookServer(InjectOptions(), TlsFiles("/certs/tls.crt", "/certs/tls.key"), logger)
    port = await server.start("0.0.0.0", 8443)
    await server.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from sidecar import __version__
from sidecar.admission import review_reply
from sidecar.errors import ConfigError
from sidecar.inject import DEFAULT_IMAGE, InjectOptions
from sidecar.logs import LOGGER_NAME, setup_logging
from sidecar.tls_reload import ReloadingTlsContext, TlsFiles

# Above etcd's default 1.5 MiB object limit plus the review around it, so no pod the API server could store is
# refused. A bigger body gets 413 from aiohttp: the API server counts that as a failed call and, with
# `failurePolicy: Ignore`, admits the pod uninjected. Nothing bigger is ever held in memory.
MAX_REVIEW_BYTES = 2 * 1024 * 1024
# The kubelet refreshes a mounted Secret within about a minute; checking every 2 s adds little to that.
CERT_CHECK_SECONDS = 2.0
# The API server gives a webhook call `timeoutSeconds` (5 in the example); in-flight reviews get that long.
SHUTDOWN_GRACE = 5.0


class WebhookServer:
    def __init__(
        self,
        options: InjectOptions,
        files: TlsFiles,
        logger: logging.Logger | None = None,
        *,
        cert_check_seconds: float = CERT_CHECK_SECONDS,
    ) -> None:
        self.options = options
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.tls = ReloadingTlsContext(files, self.logger)  # ConfigError now, not at the first handshake
        self.cert_check_seconds = cert_check_seconds
        self.app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        self.app.router.add_post("/mutate", self.mutate)
        self.app.router.add_get("/healthz", self.healthz)
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self, bind: str, port: int) -> int:
        """Listen (TLS only) and start watching the cert files; the bound port (useful with port 0)."""
        # The review's one log line replaces the access log.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, bind, port, ssl_context=self.tls.listening, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        self._watcher = asyncio.create_task(self.tls.watch(self.cert_check_seconds), name="tls-cert-watch")
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def mutate(self, request: web.Request) -> web.Response:
        body = await request.read()  # raises 413 past MAX_REVIEW_BYTES
        reply = review_reply(body, self.options)
        self.logger.info("admission %s", reply.summary)
        return web.json_response(reply.review)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def inject_options(args: argparse.Namespace) -> InjectOptions:
    return InjectOptions(
        image=args.image or DEFAULT_IMAGE,
        exec_probes=args.exec_probes,
        native_sidecar=args.native_sidecar,
        rewrite_liveness=args.rewrite_liveness,
    )


def run_webhook_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT (exit 0). Unloadable cert files or a busy port: ConfigError (exit 2)."""
    logger = setup_logging()
    server = WebhookServer(inject_options(args), TlsFiles(args.cert, args.key), logger)
    return asyncio.run(_serve(server, args.bind, args.port, logger))


async def _serve(server: WebhookServer, bind: str, port: int, logger: logging.Logger) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            bound = await server.start(bind, port)
        except OSError as exc:
            raise ConfigError(f"--bind {bind} --port {port}", "", "", f"cannot listen: {exc.strerror or exc}") from None
        host = f"[{bind}]" if ":" in bind else bind
        logger.info(
            "readiness-sidecar %s webhook listening on https://%s:%d (POST /mutate, GET /healthz), injecting %s",
            __version__, host, bound, server.options.image,
        )
        await stop.wait()
        logger.info("webhook stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
    return 0
