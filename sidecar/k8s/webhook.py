"""The mutating admission webhook's server, HTTPS only (there is no plain-HTTP listener).

POST /mutate answers AdmissionReview v1 (see sidecar.k8s.admission); GET /healthz is for the kubelet.
Its metrics (sidecar.k8s.webhook_metrics) are served on a port of their own, plain HTTP, for Prometheus.
Each review logs one line: uid, pod, result, patch operations and duration (JSON fields too).

    server = WebhookServer(InjectOptions(), TlsFiles("/certs/tls.crt", "/certs/tls.key"), logger)
    port = await server.start("0.0.0.0", 8443)
    metrics_port = await server.start_metrics("0.0.0.0", 8553)
    await server.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.contract import HEALTHZ_PATH, LOGGER_NAME, METRICS_PATH, MUTATE_PATH
from sidecar.http_site import HttpSite
from sidecar.k8s.admission import InjectionCache, Reply, review_reply
from sidecar.k8s.inject import InjectOptions
from sidecar.k8s.tls_reload import ReloadingTlsContext, TlsFiles
from sidecar.k8s.webhook_metrics import WebhookMetrics

# Above etcd's default 1.5 MiB object limit plus the review around it, so no pod the API server could store is
# refused. A bigger body gets 413 from aiohttp: the API server counts that as a failed call and, with
# `failurePolicy: Ignore`, admits the pod uninjected. Nothing bigger is ever held in memory.
MAX_REVIEW_BYTES = 2 * 1024 * 1024
# The kubelet refreshes a mounted Secret within about a minute; checking every 2 s adds little to that.
CERT_CHECK_SECONDS = 2.0
# The API server gives a webhook call `timeoutSeconds` (5 in the example); in-flight reviews get that long.
SHUTDOWN_GRACE = 5.0
# A review's body arrives within this long once its head has: the API server sends it at once, and its own
# timeoutSeconds (at most 30) has long passed by then. Bounds a client that trickles a body (408).
BODY_READ_SECONDS = 10.0
# A scrape in flight at shutdown gets this long; Prometheus retries at its next interval anyway.
METRICS_SHUTDOWN_GRACE = 1.0


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
        self.injections = InjectionCache()
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.tls = ReloadingTlsContext(files, self.logger)  # ConfigError now, not at the first handshake
        self.cert_check_seconds = cert_check_seconds
        self.app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        self.app.router.add_post(MUTATE_PATH, self.mutate)
        self.app.router.add_get(HEALTHZ_PATH, self.healthz)
        # The review's one log line replaces the access log.
        self._site = HttpSite(self.app, shutdown_grace=SHUTDOWN_GRACE, ssl_context=self.tls.listening)
        self._watcher: asyncio.Task[None] | None = None
        self.metrics = WebhookMetrics()
        self._metrics_site: HttpSite | None = None

    async def start(self, bind: str, port: int) -> int:
        """Listen (TLS only) and start watching the cert files; the bound port (useful with port 0)."""
        bound = await self._site.start(bind, port)
        self._watcher = asyncio.create_task(self.tls.watch(self.cert_check_seconds), name="tls-cert-watch")
        return bound

    async def start_metrics(self, bind: str, port: int) -> int:
        """Serve GET /metrics, plain HTTP, on bind:port; the bound port. OSError if it can't listen."""
        app = web.Application()
        app.router.add_get(METRICS_PATH, self.scrape)
        site = HttpSite(app, shutdown_grace=METRICS_SHUTDOWN_GRACE)
        bound = await site.start(bind, port)
        self._metrics_site = site
        return bound

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await self._site.stop()
        if self._metrics_site is not None:
            await self._metrics_site.stop()

    async def mutate(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(BODY_READ_SECONDS):
                body = await request.read()
        except TimeoutError:
            self.logger.debug("admission request body from %s not whole in %.0fs", request.remote, BODY_READ_SECONDS)
            raise web.HTTPRequestTimeout() from None
        except web.HTTPRequestEntityTooLarge:  # past MAX_REVIEW_BYTES: aiohttp answers 413
            self.metrics.too_large()
            raise
        except ConnectionError as exc:
            # The client hung up mid-body (aiohttp raises ClientConnectionResetError): nobody to answer, nothing
            # to review. Left to aiohttp it is an ERROR with a traceback per aborted upload.
            self.logger.debug("admission request abandoned by %s: %s", request.remote, type(exc).__name__)
            raise web.HTTPBadRequest() from None  # aiohttp's write of it meets the closed socket and stays quiet
        reply = review_reply(body, self.options, self.injections)
        seconds = time.perf_counter() - started
        self.metrics.observe(reply, seconds)
        self._log(reply, seconds)
        return web.Response(body=reply.body(), content_type="application/json", charset="utf-8")

    def _log(self, reply: Reply, seconds: float) -> None:
        ms = round(seconds * 1000, 2)
        fields = {"uid": reply.uid, "pod": reply.pod, "result": reply.result, "patch_ops": reply.patch_ops,
                  "duration_ms": ms}  # fmt: skip
        if reply.error_kind is not None:
            fields["error"] = reply.error_kind
        self.logger.info("admission %s in %.2f ms", reply.summary, ms, extra={"fields": fields})

    async def scrape(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")
