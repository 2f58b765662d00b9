"""`readiness-sidecar check`: every container's probe once, all in parallel; exit 0 ready, 1 not.

With --wait, rounds repeat until every required container is ready or the time is up, as
`kubectl wait --timeout` does. Kept light: a TCP or HTTP check imports neither aiohttp,
grpc nor yaml (a test pins it), since `check` is a Docker HEALTHCHECK and a kubelet exec probe.

    readiness-sidecar check -q --probe self=http://127.0.0.1:8550/healthz  # ready: 1 of 1 containers ready
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from sidecar.cli.help_text import PROG
from sidecar.cli.output import structured
from sidecar.cli.parser import raw_run_settings
from sidecar.config.loader import load_config
from sidecar.contract import LOGGER_NAME
from sidecar.durations import format_duration, parse_finite_duration
from sidecar.errors import ConfigError
from sidecar.model import SidecarConfig
from sidecar.runtime.attempt import CheckRow, check_exit_code, check_once
from sidecar.runtime.settings import RunSettings
from sidecar.serve.views import check_document, check_summary, check_table

# The pause between --wait's rounds, from one round's start to the next. A refused connect
# fails in microseconds, so without it a waiter would spin a core; a quarter second keeps
# what it adds to a start-up (an init container, compose's depends_on) below notice, and is
# four attempts a second per container, a load any app can take while it starts.
WAIT_RECHECK_SECONDS = 0.25


def check_command(args: argparse.Namespace) -> int:
    raw, origin = raw_run_settings(args)
    settings = RunSettings.from_raw(raw, origin=origin)
    wait = _wait_seconds(args.wait)
    config = load_config(probe_flags=args.probe, config_file=args.config, probe_host=settings.probe_host)
    if not args.quiet:  # -q is one line in all: the summary names unobserved containers too
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    logger = logging.getLogger(LOGGER_NAME)
    rows = asyncio.run(_check_until_ready(config, logger, all_containers=args.all_containers, wait=wait))
    hidden = 0 if args.all_containers else sum(not c.required for c in config.containers)
    if args.quiet:
        print(check_summary(rows, hidden))
    elif args.output == "text":
        print(check_table(rows))
        print(check_summary(rows, hidden))
    else:
        print(structured(check_document(rows), args.output))
    code = check_exit_code(rows)
    if code and wait and not args.quiet:
        print(f"{PROG} check: still not ready after --wait {format_duration(wait)}", file=sys.stderr)
    return code


def _wait_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        return parse_finite_duration(text)
    except ValueError as exc:
        raise ConfigError("--wait", problem=str(exc)) from None


async def _check_until_ready(
    config: SidecarConfig, logger: logging.Logger, *, all_containers: bool, wait: float
) -> list[CheckRow]:
    """Rounds of one attempt per container until every required one is ready or `wait` seconds
    have passed: the last round's rows. A round begun in time finishes, so the wait can end
    up to one probe timeout late."""
    deadline = time.monotonic() + wait
    while True:
        started = time.monotonic()
        rows = await check_once(config, logger, all_containers=all_containers)
        left = deadline - time.monotonic()
        if check_exit_code(rows) == 0 or left <= 0:
            return rows
        await asyncio.sleep(min(left, max(0.0, started + WAIT_RECHECK_SECONDS - time.monotonic())))
