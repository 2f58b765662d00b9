"""A real `readiness-sidecar run` subprocess on free ports, fed a containers file.

    sidecar = await SidecarProcess.start(containers, workdir, flags=("--aggressive-interval", "1ms"))
    sidecar.health_port, sidecar.metrics_port, sidecar.pid
    text = await sidecar.metrics_text()
    await sidecar.stop()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
LOOP_ENV = "READINESS_SIDECAR_LOOP"
_LISTENING = re.compile(r"listening health=\S+:(\d+) grpc=(?:\S+:(\d+)|off) metrics=(?:\S+:(\d+)|off)")
# Enough log to explain a sidecar that died; transitions are logged per trial, so never keep all.
_LOG_TAIL_LINES = 200


def container(name: str, handler: Mapping[str, Any], **timing: Any) -> dict[str, Any]:
    """One entry of a containers file: `timing` holds readinessProbe fields (periodSeconds=1, ...)."""
    return {"name": name, "readinessProbe": {**handler, **timing}}


class SidecarProcess:
    _counter = itertools.count()

    def __init__(self, proc: asyncio.subprocess.Process, health_port: int, metrics_port: int) -> None:
        self.proc = proc
        self.health_port = health_port
        self.metrics_port = metrics_port
        self.log_tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    @classmethod
    async def start(
        cls,
        containers: Sequence[Mapping[str, Any]],
        workdir: Path,
        *,
        flags: Sequence[str] = (),
        loop: str = "auto",
        cpus: str | None = None,
        timeout: float = 30.0,
    ) -> SidecarProcess:
        config = workdir / f"containers-{os.getpid()}-{next(cls._counter)}.json"
        config.write_text(json.dumps({"containers": list(containers)}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("READINESS_SIDECAR_", "SERVING_"))}
        env["PYTHONPATH"] = str(REPO)
        env[LOOP_ENV] = loop
        prefix = ["taskset", "-c", cpus] if cpus else []
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", "sidecar", "run", "-f", str(config),
            "--bind", "127.0.0.1", "--health-port", "0", "--grpc-port", "0", "--metrics-port", "0",
            "--drain-seconds", "0", *flags,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )
        assert proc.stderr is not None
        log: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await proc.stderr.readline()).decode(errors="replace")
                    if not line:
                        raise RuntimeError("sidecar exited at start:\n" + "".join(log[-20:]))
                    log.append(line)
                    if match := _LISTENING.search(line):
                        break
            if match.group(3) is None:
                raise RuntimeError("the benchmark needs the metrics port")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        sidecar = cls(proc, int(match.group(1)), int(match.group(3) or 0))
        sidecar.log_tail.extend(log)
        sidecar._pump = asyncio.create_task(sidecar._drain_stderr())
        return sidecar

    async def _drain_stderr(self) -> None:
        # A full pipe would block the sidecar's logging, and with it the sidecar.
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log_tail.append(line.decode(errors="replace"))

    async def metrics_text(self) -> str:
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response,
        ):
            return await response.text()

    def alive(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump
