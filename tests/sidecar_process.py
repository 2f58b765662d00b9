"""`readiness-sidecar run` as a real subprocess: the one harness of tests, reliability tests and benchmarks.

The sidecar reports its bound ports itself (`--ports-file -`: one JSON line on stdout),
so nothing here parses its log.

    car = await SidecarProcess.start("--probe", "web=http://127.0.0.1:8080/", "--grpc-port", "off")
    car.base, car.health_port, car.grpc_port   # "http://127.0.0.1:<port>", <port>, None
    car.terminate(); await car.wait(10)
    await car.kill()                           # SIGKILL the group if anything is left; always safe

Synchronous harnesses (tests/reliability) build the same command with `run_command` and
read the same line with `parse_ports`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The first stdout line of `run`: {"health": 8550, "grpc": 8551, "metrics": null}.
PORTS_TO_STDOUT = ("--ports-file", "-")
# Env vars a test must not inherit from whoever runs it.
_CONFIG_ENV_PREFIXES = ("READINESS_SIDECAR_", "SERVING_")


@dataclass(frozen=True)
class Ports:
    health: int
    grpc: int | None
    metrics: int | None


def parse_ports(line: bytes | str) -> Ports:
    """The ports line `run --ports-file -` writes; ValueError for anything else."""
    doc = json.loads(line)
    if not isinstance(doc, dict) or not isinstance(doc.get("health"), int):
        raise ValueError(f"not a ports line: {line!r}")
    return Ports(doc["health"], doc.get("grpc"), doc.get("metrics"))


def sidecar_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without stray config, this checkout first on the path, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_ENV_PREFIXES)}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def run_command(
    args: Iterable[str], *, bind: str = "127.0.0.1", launcher: Sequence[str] = ("-m", "sidecar"),
    cpus: str | None = None, python: str | None = None,
) -> list[str]:
    """argv of `readiness-sidecar run --bind BIND --ports-file - ARGS...` with this interpreter (or `python`)."""
    prefix = ["taskset", "-c", cpus] if cpus else []
    return [*prefix, python or sys.executable, *launcher, "run", "--bind", bind, *PORTS_TO_STDOUT, *args]


class SidecarProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ports: Ports, log: collections.deque[str]) -> None:
        self.proc = proc
        self.health_port = ports.health
        self.grpc_port = ports.grpc
        self.metrics_port = ports.metrics
        self.log = log  # stderr lines, as they come (the newest `log_lines` when bounded)
        self._log_changed = asyncio.Event()
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
        *args: str,
        env: Mapping[str, str] | None = None,
        cpus: str | None = None,
        timeout: float = 30.0,
        log_lines: int | None = None,
        python: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SidecarProcess:
        """Start `run ARGS...` on 127.0.0.1 and return once it listens (its ports line arrived).

        `python` and `environ` (the whole environment, `env` still added on top) run another
        install of the sidecar, as the benchmarks' --baseline-rev does; by default it is this
        interpreter with this checkout first on the path.
        """
        proc = await asyncio.create_subprocess_exec(
            *run_command(args, cpus=cpus, python=python),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=sidecar_environ(env) if environ is None else {**environ, **(env or {})}, start_new_session=True,
        )
        assert proc.stdout is not None
        car = cls(proc, Ports(0, None, None), collections.deque(maxlen=log_lines))
        car._pump = asyncio.create_task(car._read_log())
        try:
            async with asyncio.timeout(timeout):
                line = await proc.stdout.readline()
            if not line:
                await asyncio.wait_for(proc.wait(), timeout)
                await car._pump
                raise RuntimeError(f"sidecar exited ({proc.returncode}) before listening:\n" + "".join(car.log))
            ports = parse_ports(line)
        except BaseException:
            await car.kill()
            raise
        car.health_port, car.grpc_port, car.metrics_port = ports.health, ports.grpc, ports.metrics
        return car

    async def _read_log(self) -> None:
        # A full pipe would block the sidecar's logging, and with it the sidecar: always read.
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace"))
            self._log_changed.set()
            self._log_changed = asyncio.Event()

    async def wait_for_log(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first log line (seen so far or to come) that `predicate` accepts."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._log_changed
                for line in list(self.log):
                    if predicate(line):
                        return line
                await changed.wait()

    def alive(self) -> bool:
        return self.proc.returncode is None

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self._pump is not None:
                await self._pump
            return code

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL the group if it has not exited within `timeout`."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.terminate()
            with contextlib.suppress(TimeoutError):
                await self.wait(timeout)
        await self.kill()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump
