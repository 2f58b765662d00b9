"""The one `run` harness (tests/sidecar_process.py), fed a containers file and on free ports.

    sidecar = await start_sidecar(containers, workdir, flags=("--aggressive-interval", "1ms"))
    sidecar.health_port, sidecar.metrics_port, sidecar.pid
    text = await metrics_text(sidecar)
    await sidecar.stop()
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.sidecar_process import REPO, SidecarProcess

__all__ = ["REPO", "SidecarProcess", "container", "metrics_text", "start_sidecar"]

# Enough log to explain a sidecar that died; transitions are logged per trial, so never keep all.
_LOG_TAIL_LINES = 200
_configs = itertools.count()


def container(name: str, handler: Mapping[str, Any], **timing: Any) -> dict[str, Any]:
    """One entry of a containers file: `timing` holds readinessProbe fields (periodSeconds=1, ...)."""
    return {"name": name, "readinessProbe": {**handler, **timing}}


async def start_sidecar(
    containers: Sequence[Mapping[str, Any]],
    workdir: Path,
    *,
    flags: Sequence[str] = (),
    loop: str = "auto",
    cpus: str | None = None,
    timeout: float = 30.0,
) -> SidecarProcess:
    config = workdir / f"containers-{os.getpid()}-{next(_configs)}.json"
    config.write_text(json.dumps({"containers": list(containers)}))
    sidecar = await SidecarProcess.start(
        "-f", str(config), "--health-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--drain-seconds", "0", "--loop", loop, *flags,
        cpus=cpus, timeout=timeout, log_lines=_LOG_TAIL_LINES,
    )
    if sidecar.metrics_port is None:
        await sidecar.kill()
        raise RuntimeError("the benchmark needs the metrics port")
    return sidecar


async def metrics_text(sidecar: SidecarProcess) -> str:
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(f"http://127.0.0.1:{sidecar.metrics_port}/metrics") as response,
    ):
        return await response.text()
