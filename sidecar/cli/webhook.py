"""`readiness-sidecar webhook`: serve the mutating admission webhook until SIGTERM or SIGINT (exit 0).

Cert files that do not load, or a port that can't be had: one line, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from probes.spec import join_host_port
from sidecar import __version__
from sidecar.cli.parser import inject_options
from sidecar.contract import HEALTHZ_PATH, MUTATE_PATH
from sidecar.errors import cannot_listen
from sidecar.k8s.options import DEFAULT_IMAGE_WARNING
from sidecar.k8s.tls_reload import TlsFiles
from sidecar.k8s.webhook import WebhookServer
from sidecar.serve.logs import setup_logging
from sidecar.signals import on_stop_signals


def webhook_command(args: argparse.Namespace) -> int:
    logger = setup_logging()
    server = WebhookServer(inject_options(args), TlsFiles(args.cert, args.key), logger)
    return asyncio.run(_serve(server, args.bind, args.port, logger))


async def _serve(server: WebhookServer, bind: str, port: int, logger: logging.Logger) -> int:
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        try:
            try:
                bound = await server.start(bind, port)
            except OSError as exc:
                raise cannot_listen(f"--bind {bind} --port {port}", join_host_port(bind, port), exc) from None
            logger.info(
                "readiness-sidecar %s webhook listening on https://%s (POST %s, GET %s), injecting %s",
                __version__, join_host_port(bind, bound), MUTATE_PATH, HEALTHZ_PATH, server.options.image_or_default,
            )
            if server.options.image is None:
                logger.warning("%s", DEFAULT_IMAGE_WARNING)
            await stop.wait()
            logger.info("webhook stopping")
        finally:
            await server.stop()
    return 0
