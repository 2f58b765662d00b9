"""A pod as the kubelet sees it (docs/testing.md#pods-network-namespaces-and-a-veth): a network namespace with a veth.

The demo apps and the sidecar run inside the namespace and talk over its own
loopback; the test stands on the host side of the veth and probes the pod's
address, as a kubelet would. Addresses are 10.231.X.1/30 (host) and
10.231.X.2/30 (pod): they exist only on our veth, so nothing else is contacted.
Needs root and iproute2; otherwise `require_peer` skips (laptop) or fails (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from probes import Probe, ProbeResult, build_probe
from probes.spec import GrpcSpec, HttpGetSpec
from tests.conftest import REPO, require_peer

# Fixed ports are fine: the namespace is ours alone.
HTTP_APP_PORT = 8080
GRPC_APP_PORT = 8081
HEALTH_PORT = 8550
GRPC_HEALTH_PORT = 8551
# Python start-up plus imports, in a fresh interpreter, on a busy CI machine.
START_TIMEOUT = 20.0
# Failure threshold 3 at the aggressive re-probe interval, after at most one steady
# period (1 s) before the first failing attempt: well under this.
CHANGE_TIMEOUT = 5.0
POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class PodNetwork:
    namespace: str
    host_veth: str
    host_ip: str
    pod_ip: str


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def _ip_ok(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _free_subnet_octet() -> int:
    """An X whose 10.231.X.0/30 no interface here uses (parallel runs pick their own)."""
    in_use = _ip("-o", "addr", "show").stdout
    for _ in range(50):
        octet = random.randrange(256)
        if f"10.231.{octet}." not in in_use:
            return octet
    raise RuntimeError("no free 10.231.X.0/30 subnet")


def _kill_everything_in(namespace: str) -> None:
    for pid in _ip("netns", "pids", namespace).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _new_namespace(name_tag: str, veth_tag: str) -> tuple[str, str, str, str]:
    """A fresh network namespace (root and iproute2, else require_peer), and names for its veth
    pair: (namespace, host veth, pod veth, the random suffix they share)."""
    if os.geteuid() != 0:
        require_peer("network namespaces need root")
    if shutil.which("ip") is None:
        require_peer("`ip` (iproute2) is not installed")
    suffix = secrets.token_hex(3)
    namespace = f"rs-{name_tag}-{suffix}"
    created = _ip("netns", "add", namespace)
    if created.returncode != 0:
        require_peer(f"`ip netns add` failed: {created.stderr.strip()}")
    return namespace, f"{veth_tag}h{suffix}", f"{veth_tag}p{suffix}", suffix


@pytest.fixture
def pod_network() -> Iterator[PodNetwork]:
    """A fresh pod network: namespace, veth pair, addresses, lo up. Always torn down."""
    namespace, host_veth, pod_veth, _ = _new_namespace("e2e", "rs")
    try:
        octet = _free_subnet_octet()
        pod = PodNetwork(namespace, host_veth, f"10.231.{octet}.1", f"10.231.{octet}.2")
        _ip_ok("link", "add", host_veth, "type", "veth", "peer", "name", pod_veth,
               "netns", namespace)
        _ip_ok("addr", "add", f"{pod.host_ip}/30", "dev", host_veth)
        _ip_ok("link", "set", host_veth, "up")
        _ip_ok("-n", namespace, "addr", "add", f"{pod.pod_ip}/30", "dev", pod_veth)
        _ip_ok("-n", namespace, "link", "set", pod_veth, "up")
        _ip_ok("-n", namespace, "link", "set", "lo", "up")
        yield pod
    finally:
        _kill_everything_in(namespace)  # a last net under PodProcesses' own cleanup
        _ip("link", "del", host_veth)  # takes the pod end with it
        _ip("netns", "del", namespace)


@dataclass
class PodProcesses:
    """Processes run inside the pod's namespace, each in its own process group."""

    pod: PodNetwork
    env: dict[str, str]
    log_dir: Path
    running: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    async def start(
        self, name: str, *argv: str, read_stdout: bool = False
    ) -> asyncio.subprocess.Process:
        log = (self.log_dir / f"{name}.log").open("ab")
        try:
            # `ip netns exec` execs the command, so the pid (and group) is the app's.
            process = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.pod.namespace, *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if read_stdout else log, stderr=log,
                env=self.env, cwd=REPO, start_new_session=True,
            )
        finally:
            log.close()
        self.running[name] = process
        return process

    async def start_demo_app(self, name: str, module: str, *args: str) -> None:
        process = await self.start(
            name, sys.executable, "-m", f"sidecar.demo.{module}", *args, read_stdout=True
        )
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await process.stdout.readline()
        assert line.startswith(b"PORT "), f"{name} did not start:\n{self.logs()}"

    async def kill(self, name: str) -> None:
        process = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    async def kill_all(self) -> None:
        for name in list(self.running):
            await self.kill(name)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture
async def pod(
    pod_network: PodNetwork, sidecar_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[PodProcesses]:
    processes = PodProcesses(pod_network, sidecar_env, tmp_path)
    try:
        yield processes
    finally:
        await processes.kill_all()


async def _wait_for(
    probe: Probe, wanted: Callable[[ProbeResult], bool], timeout: float
) -> tuple[ProbeResult, float]:
    """Probe until `wanted(result)`, as a kubelet polls; the last result and seconds taken."""
    start = time.monotonic()
    while True:
        result = await probe.attempt(timeout=1.0)
        elapsed = time.monotonic() - start
        if wanted(result) or elapsed >= timeout:
            return result, elapsed
        await asyncio.sleep(POLL_INTERVAL)


def _ok(result: ProbeResult) -> bool:
    return result.outcome.ok


def _http_503(result: ProbeResult) -> bool:
    return result.message == "HTTP 503"


def _grpc_not_serving(result: ProbeResult) -> bool:
    return result.message == "grpc NOT_SERVING"


async def test_pod_readiness_follows_its_containers_as_seen_from_the_node(
    pod: PodProcesses,
) -> None:
    http_app = ("web", "http_app", "--port", str(HTTP_APP_PORT), "--ready-after", "1")
    await pod.start_demo_app(*http_app)
    await pod.start_demo_app("grpc", "grpc_app", "--port", str(GRPC_APP_PORT), "--flip-every", "3600")
    await pod.start(
        "sidecar", sys.executable, "-m", "sidecar", "run",
        "--probe", f"web=http://127.0.0.1:{HTTP_APP_PORT}/healthz",
        "--probe", f"grpc=grpc://127.0.0.1:{GRPC_APP_PORT}",
        "--health-port", str(HEALTH_PORT), "--grpc-port", str(GRPC_HEALTH_PORT),
        "--metrics-port", "off", "--bind", "0.0.0.0",
    )
    pod_ip = pod.pod.pod_ip
    ready = build_probe(HttpGetSpec(port=HEALTH_PORT, path="/ready", host=pod_ip))
    grpc_ready = build_probe(GrpcSpec(port=GRPC_HEALTH_PORT, host=pod_ip, service=""))
    result, took = await _wait_for(ready, _ok, START_TIMEOUT)
    assert result.message == "HTTP 200", f"never ready ({result.message}):\n{pod.logs()}"
    result, _ = await _wait_for(grpc_ready, _ok, CHANGE_TIMEOUT)
    assert result.message == "grpc SERVING", pod.logs()
    print(f"pod ready {took:.2f}s after start")

    await pod.kill("web")
    result, took = await _wait_for(ready, _http_503, CHANGE_TIMEOUT)
    assert result.message == "HTTP 503", f"still {result.message} {took:.1f}s after kill:\n{pod.logs()}"
    result, _ = await _wait_for(grpc_ready, _grpc_not_serving, CHANGE_TIMEOUT)
    assert result.message == "grpc NOT_SERVING", pod.logs()
    print(f"pod unready {took:.2f}s after the app was killed")

    await pod.start_demo_app(*http_app)
    result, took = await _wait_for(ready, _ok, CHANGE_TIMEOUT)
    assert result.message == "HTTP 200", f"not ready again ({result.message}):\n{pod.logs()}"
    result, _ = await _wait_for(grpc_ready, _ok, CHANGE_TIMEOUT)
    assert result.message == "grpc SERVING", pod.logs()
    print(f"pod ready again {took:.2f}s after the app came back (its ready-after is 1s)")
