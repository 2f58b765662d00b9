"""Run `readiness-sidecar run` as a real subprocess and learn its ports from its log line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass

from tests.conftest import REPO

_LISTENING = re.compile(r"listening health=\S+:(\d+) grpc=(?:\S+:(\d+)|off) metrics=(?:\S+:(\d+)|off)")


@dataclass
class SidecarProcess:
    proc: asyncio.subprocess.Process
    health_port: int
    grpc_port: int | None
    metrics_port: int | None
    log: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None, timeout: float = 15.0) -> SidecarProcess:
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("READINESS_SIDECAR_", "SERVING_"))}
        full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "run", "--bind", "127.0.0.1", *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=full_env,
            start_new_session=True,
        )
        log: list[str] = []
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await proc.stderr.readline()).decode()
                    if not line:
                        raise AssertionError("sidecar exited early:\n" + "".join(log))
                    log.append(line)
                    match = _LISTENING.search(line)
                    if match:
                        break
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        sidecar = cls(proc, int(match.group(1)),
                      int(match.group(2)) if match.group(2) else None,
                      int(match.group(3)) if match.group(3) else None, log)
        sidecar._pump = asyncio.create_task(sidecar._read_rest())  # type: ignore[attr-defined]
        return sidecar

    async def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode())

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._pump  # type: ignore[attr-defined]
            return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
