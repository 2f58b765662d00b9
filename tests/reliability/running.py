"""`readiness-sidecar run` as a real process, started without an event loop, so module-scoped
fixtures can share one sidecar across tests.

    car = RunningSidecar.start("--probe", "web=http://127.0.0.1:8080/", subreaper=True)
    car.base            # "http://127.0.0.1:<health port>"
    car.terminate(); car.wait(10)
    car.stop()          # SIGKILL what is left; always safe

With `subreaper=True` the sidecar adopts its orphaned descendants, exactly as it does as
PID 1 of a container, so a zombie or an orphan it fails to reap shows up as its child.
Every process it starts carries TAG_ENV=car.tag in its environment: `car.descendants()`
finds them all, wherever they moved to.

`loop` picks the event loop (run --loop); LOOPS lists the ones installed here: both
where the `test` extra is installed, as in CI; the image installs no extra, so asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from probes.spec import join_host_port
from tests.conftest import REPO
from tests.reliability import procfs
from tests.sidecar_process import parse_ports, run_command, sidecar_environ

# prctl(PR_SET_CHILD_SUBREAPER) survives execve, so the sidecar itself is the subreaper.
_AS_SUBREAPER = (
    "import ctypes, os, sys\n"
    "assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'sidecar', *sys.argv[1:]])\n"
)
TAG_ENV = "RELIABILITY_SIDECAR_TAG"
LOOPS = ("asyncio", "uvloop") if importlib.util.find_spec("uvloop") else ("asyncio",)


@dataclass
class RunningSidecar:
    proc: subprocess.Popen[bytes]
    health_port: int
    grpc_port: int | None
    metrics_port: int | None
    tag: str
    host: str = "127.0.0.1"  # where to reach it: the bind address, or loopback for a wildcard
    log: list[str] = field(default_factory=list)
    _pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://{join_host_port(self.host, self.health_port)}"

    @classmethod
    def start(
        cls,
        *args: str,
        subreaper: bool = False,
        bind: str = "127.0.0.1",
        loop: str = "asyncio",
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
        timeout: float = 20.0,
        python: str | None = None,
        base_env: Mapping[str, str] | None = None,
        cpus: str | None = None,
    ) -> RunningSidecar:
        """`python` and `base_env` run another install (benchmarks/baseline.py's), `env` is added on top;
        `cpus` pins it (taskset -c)."""
        tag = uuid.uuid4().hex
        extra = {TAG_ENV: tag, **(env or {})}
        full_env = {**base_env, **extra} if base_env is not None else sidecar_environ(extra)
        launcher = ("-c", _AS_SUBREAPER) if subreaper else ("-m", "sidecar")
        proc = subprocess.Popen(
            run_command(("--loop", loop, *args), bind=bind, launcher=launcher, python=python, cpus=cpus),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, cwd=cwd, start_new_session=True,
        )
        log: list[str] = []
        ports_line: list[bytes] = []
        started = threading.Event()

        def read_ports() -> None:
            assert proc.stdout is not None
            ports_line.append(proc.stdout.readline())  # b"" at EOF: the process is gone
            started.set()

        def pump() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                log.append(raw.decode(errors="replace"))

        threading.Thread(target=read_ports, daemon=True).start()
        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        if not started.wait(timeout) or not ports_line[0]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            thread.join(5)
            raise AssertionError("sidecar did not start:\n" + "".join(log))
        ports = parse_ports(ports_line[0])
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
        return cls(proc, ports.health, ports.grpc, ports.metrics, tag, host, log, thread)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        if self._pump is not None:
            self._pump.join(timeout)
        return code

    def descendants(self) -> list[procfs.Proc]:
        """Every process the sidecar started, directly or not, still alive or a zombie."""
        return [p for p in procfs.tagged(TAG_ENV, self.tag) if p.pid != self.pid]

    def stop(self) -> None:
        """Kill the sidecar and whatever it left behind."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for leftover in self.descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover.pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(5)

    def log_text(self) -> str:
        return "".join(self.log)

    def get(self, path: str, port: int | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        """One blocking GET on a new connection (health port unless told otherwise)."""
        connection = http.client.HTTPConnection(self.host, port or self.health_port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def containers(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.status()["containers"]}

    def total_attempts(self) -> int:
        return sum(c["attempts"] for c in self.status()["containers"])

    def metrics(self) -> Metrics:
        assert self.metrics_port is not None
        code, body = self.get("/metrics", self.metrics_port)
        assert code == 200
        return Metrics.parse(body.decode())


@dataclass(frozen=True)
class Metrics:
    """One scrape: sample values by name and labels."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return cls(text, samples)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def refused_containers_file(directory: Path, count: int) -> Path:
    """A containers file of `count` tcpSocket probes at a loopback port nothing listens on: every attempt is
    refused at once, the cheapest attempt there is, so `count` can be in the thousands."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = int(holder.getsockname()[1])  # closed again when the holder goes
    probe = {"tcpSocket": {"host": "127.0.0.1", "port": port}}
    containers = [{"name": f"c{i}", "readinessProbe": probe} for i in range(count)]
    path = directory / f"containers-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"containers": containers}))
    return path


_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n"


async def healthz_seconds(port: int) -> float:
    """One GET /healthz on a fresh connection, as the kubelet asks it: seconds to the whole answer (a 200)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_HEALTHZ)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    return time.perf_counter() - started


def wait_until(condition: Callable[[], object], timeout: float, what: str, every: float = 0.02) -> None:
    """Poll a blocking condition until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
