"""The one `run` harness (tests/sidecar_process.py), fed a containers file and on free ports.

    sidecar = await start_sidecar(containers, workdir, flags=("--aggressive-interval", "1ms"))
    sidecar.health_port, sidecar.metrics_port, sidecar.pid
    text = await metrics_text(sidecar)
    await sidecar.stop()

Which code runs is a `SidecarInstall`: this checkout by default, or another revision's
venv (benchmarks/baseline.py) for `python -m benchmarks --baseline-rev REV`.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from tests.sidecar_process import REPO, SidecarProcess, sidecar_environ

__all__ = ["REPO", "THIS_CHECKOUT", "SidecarInstall", "SidecarProcess", "container", "metrics_text", "start_sidecar"]

# Enough log to explain a sidecar that died; transitions are logged per trial, so never keep all.
_LOG_TAIL_LINES = 200
_configs = itertools.count()


@dataclass(frozen=True, slots=True)
class SidecarInstall:
    """The code a sidecar under test runs: an interpreter and the environment it imports with."""

    label: str  # "this", or the baseline's short commit
    python: str = sys.executable
    environ: Mapping[str, str] | None = None  # the whole environment; None: this checkout first on the path

    def environment(self) -> dict[str, str]:
        """The environment its commands run with (`check`, `run --help`)."""
        return dict(self.environ) if self.environ is not None else sidecar_environ()


THIS_CHECKOUT = SidecarInstall("this")


def with_bytecode_cache(install: SidecarInstall, directory: Path) -> SidecarInstall:
    """The same install, compiled once to bytecode under `directory` and run from it from then on.

    An installed sidecar runs from bytecode (pip compiles at install); a checkout run with
    PYTHONDONTWRITEBYTECODE compiles every module at every start (~20 ms of `check`'s start-up
    here). PYTHONPYCACHEPREFIX keeps the bytecode out of the trees under test.
    """
    environ = install.environment()
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    environ["PYTHONPYCACHEPREFIX"] = str(directory)
    return replace(install, environ=environ)


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
    install: SidecarInstall = THIS_CHECKOUT,
) -> SidecarProcess:
    config = workdir / f"containers-{os.getpid()}-{next(_configs)}.json"
    config.write_text(json.dumps({"containers": list(containers)}))
    sidecar = await SidecarProcess.start(
        "-f", str(config), "--health-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--drain-seconds", "0", "--loop", loop, *flags,
        cpus=cpus, timeout=timeout, log_lines=_LOG_TAIL_LINES, python=install.python, environ=install.environ,
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
