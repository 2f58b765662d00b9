"""`readiness-sidecar check`: every container's probe once, all in parallel; exit 0 ready, 1 not.

Kept light: a TCP or HTTP check imports neither aiohttp, grpc nor yaml (a test pins it),
since `check` is a Docker HEALTHCHECK and a kubelet exec probe.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sidecar.cli.parser import raw_run_settings
from sidecar.config.loader import load_config
from sidecar.contract import LOGGER_NAME
from sidecar.runtime.attempt import check_exit_code, check_once
from sidecar.runtime.settings import RunSettings
from sidecar.serve.views import check_json, check_table


def check_command(args: argparse.Namespace) -> int:
    raw, origin = raw_run_settings(args)
    settings = RunSettings.from_raw(raw, origin=origin)
    config = load_config(probe_flags=args.probe, config_file=args.config, probe_host=settings.probe_host)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    logger = logging.getLogger(LOGGER_NAME)
    rows = asyncio.run(check_once(config, logger, all_containers=args.all_containers))
    print(check_json(rows) if args.json else check_table(rows))
    return check_exit_code(rows)
