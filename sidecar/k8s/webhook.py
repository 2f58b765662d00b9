"""The mutating admission webhook's server, HTTPS only (there is no plain-HTTP listener).

POST /mutate answers AdmissionReview v1 (see sidecar.k8s.admission); GET /healthz is for the kubelet.

    server = WebhookServer(InjectOptions(), TlsFiles("/certs/tls.crt", "/certs/tls.key"), logger)
    port = await server.start("0.0.0.0", 8443)
    await server.stop()
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from sidecar.contract import HEALTHZ_PATH, LOGGER_NAME, MUTATE_PATH
from sidecar.http_site import HttpSite
from sidecar.k8s.admission import review_reply
from sidecar.k8s.inject import InjectOptions
from sidecar.k8s.tls_reload import ReloadingTlsContext, TlsFiles

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
        self.app.router.add_post(MUTATE_PATH, self.mutate)
        self.app.router.add_get(HEALTHZ_PATH, self.healthz)
        # The review's one log line replaces the access log.
        self._site = HttpSite(self.app, shutdown_grace=SHUTDOWN_GRACE, ssl_context=self.tls.listening)
        self._watcher: asyncio.Task[None] | None = None

    async def start(self, bind: str, port: int) -> int:
        """Listen (TLS only) and start watching the cert files; the bound port (useful with port 0)."""
        bound = await self._site.start(bind, port)
        self._watcher = asyncio.create_task(self.tls.watch(self.cert_check_seconds), name="tls-cert-watch")
        return bound

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await self._site.stop()

    async def mutate(self, request: web.Request) -> web.Response:
        body = await request.read()  # raises 413 past MAX_REVIEW_BYTES
        reply = review_reply(body, self.options)
        self.logger.info("admission %s", reply.summary)
        return web.json_response(reply.review)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")
