"""`run --demo`: a target of every probe type, started as child processes.

Nothing but this package is needed, so a fresh `pip install` shows readiness
changing live: web turns ready after 2 s, tcp after 1 s, file after 3 s, and grpc
flips every 15 s.

    demo = await start_demo()
    try:
        ...  # run the sidecar on demo.config
    finally:
        await demo.close()  # no child outlives this
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sidecar
from probes.spec import ExecSpec, GrpcSpec, HttpGetSpec, TcpSocketSpec
from sidecar.model import ContainerSpec, ProbeTiming, SidecarConfig

# A child is a fresh interpreter importing aiohttp or grpc: ~0.3-1 s here, more on
# a loaded CI machine.
PORT_LINE_TIMEOUT = 20.0
# SIGTERM lets an app close its listener cleanly; past this, SIGKILL.
TERMINATE_GRACE = 2.0
# An exec probe forks per attempt: probe it the kubelet way, once a second, rather
# than at the aggressive interval (and the demo shows both modes side by side).
FILE_PROBE_TIMING = ProbeTiming(period=1.0)

_PORT_LINE = re.compile(rb"PORT (\d+)\s*")
# Listening on a wildcard address is reached through loopback.
_CONNECT_HOST = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class DemoStartError(RuntimeError):
    """A demo app did not come up; its own stderr (inherited) says why."""


# Slow enough to watch each change in the log, quick enough not to bore.
DEFAULT_WEB_READY_AFTER = 2.0
DEFAULT_GRPC_FLIP_EVERY = 15.0
DEFAULT_TCP_LISTEN_AFTER = 1.0
DEFAULT_FILE_AFTER = 3.0


@dataclass(slots=True)
class DemoApp:
    container: str
    module: str  # under sidecar.demo
    process: asyncio.subprocess.Process
    port: int = 0  # known once the app announced it


class Demo:
    """The running demo targets and the config that watches them.

        demo = await start_demo(grpc_flip_every=1.0)
        demo.config.containers   # web, grpc, tcp, file
        await demo.close()
    """

    def __init__(self, workdir: Path, host: str) -> None:
        self.workdir = workdir
        self.ready_file = workdir / "ready"
        self.host = host  # where the probes connect
        self.apps: list[DemoApp] = []
        self.config = SidecarConfig(containers=(), sources=("--demo",))
        self._file_task: asyncio.Task[None] | None = None
        self._closed = False

    async def launch(self, container: str, module: str, *args: str) -> DemoApp:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"sidecar.demo.{module}", "--exit-on-stdin-close", *args,
            # Our stdin pipe is the app's lifeline: if we die, even by SIGKILL, it sees
            # EOF and exits. Its own session keeps a terminal's Ctrl-C for us, so the
            # apps stop in order, through close().
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=_child_env(),
        )
        app = DemoApp(container, module, process)
        self.apps.append(app)
        return app

    def create_ready_file_later(self, after: float) -> None:
        async def create() -> None:
            await asyncio.sleep(after)
            self.ready_file.touch()

        self._file_task = asyncio.create_task(create(), name="demo-ready-file")

    async def close(self) -> None:
        """Stop every app (SIGTERM, then SIGKILL) and remove the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._file_task is not None:
            self._file_task.cancel()
        try:
            async with asyncio.TaskGroup() as group:
                for app in self.apps:
                    group.create_task(_stop(app.process))
        except BaseException:
            # Cancelled mid-way: no waiting left, but no child may survive either.
            for app in self.apps:
                _kill(app.process)
            raise
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _child_env() -> dict[str, str]:
    # The apps must import this same `sidecar`, even when we run from a checkout
    # that is not on the child's default path.
    package_root = str(Path(sidecar.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


async def _read_port(app: DemoApp) -> int:
    assert app.process.stdout is not None  # launched with stdout=PIPE
    try:
        async with asyncio.timeout(PORT_LINE_TIMEOUT):
            line = await app.process.stdout.readline()
    except TimeoutError:
        raise DemoStartError(
            f"demo app {app.module} did not announce its port within {PORT_LINE_TIMEOUT:g}s"
        ) from None
    match = _PORT_LINE.fullmatch(line)
    if match:
        return int(match.group(1))
    if not line:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TERMINATE_GRACE):
                await app.process.wait()
        raise DemoStartError(
            f"demo app {app.module} exited (code {app.process.returncode}) before announcing its port"
        )
    raise DemoStartError(f"demo app {app.module} printed {line[:80]!r} instead of its port")


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        async with asyncio.timeout(TERMINATE_GRACE):
            await process.wait()
    except TimeoutError:
        _kill(process)
        await process.wait()


def _containers(demo: Demo) -> tuple[ContainerSpec, ...]:
    port = {app.container: app.port for app in demo.apps}
    host = demo.host
    return (
        ContainerSpec("web", HttpGetSpec(port=port["web"], path="/healthz", host=host)),
        ContainerSpec("grpc", GrpcSpec(port=port["grpc"], host=host)),
        ContainerSpec("tcp", TcpSocketSpec(port=port["tcp"], host=host)),
        ContainerSpec("file", ExecSpec(("test", "-f", str(demo.ready_file))), FILE_PROBE_TIMING),
    )


async def start_demo(
    bind_host: str = "127.0.0.1",
    *,
    web_ready_after: float = DEFAULT_WEB_READY_AFTER,
    grpc_flip_every: float = DEFAULT_GRPC_FLIP_EVERY,
    tcp_listen_after: float = DEFAULT_TCP_LISTEN_AFTER,
    file_after: float = DEFAULT_FILE_AFTER,
) -> Demo:
    """Start the three demo apps and the ready-file timer; return them with their config.

    On any failure, whatever was started is stopped again before the error propagates.
    """
    workdir = Path(tempfile.mkdtemp(prefix="readiness-sidecar-demo-"))
    demo = Demo(workdir, _CONNECT_HOST.get(bind_host, bind_host))
    try:
        common = ("--host", bind_host, "--port", "0")
        # All three start before any is waited on: start-up costs the slowest, not the sum.
        await demo.launch("web", "http_app", *common, "--ready-after", str(web_ready_after))
        await demo.launch("grpc", "grpc_app", *common, "--flip-every", str(grpc_flip_every))
        await demo.launch("tcp", "tcp_app", *common, "--listen-after", str(tcp_listen_after))
        for app in demo.apps:
            app.port = await _read_port(app)
        demo.create_ready_file_later(file_after)
        demo.config = SidecarConfig(containers=_containers(demo), sources=("--demo",))
    except BaseException:
        await demo.close()
        raise
    return demo
