"""--probe-host pod-ip in a real pod network: an app bound only to the pod IP, seen from the node.

The kubelet probes a container at the pod IP from the node (kubernetes
pkg/kubelet/prober/prober.go, `runProbe`: httpGet and tcpSocket default their host to
`status.PodIP`, grpc always uses it); the sidecar, inside the pod, probes 127.0.0.1 unless
told `--probe-host pod-ip`. So an app that binds only the pod IP is ready to the kubelet
and refused to the default sidecar. The pod is a dual-stack network namespace
(tests/system/test_ipv6_netns.py's `_pod_network`); the app is `http.server` bound to one of
its addresses, IPv4 or IPv6, with the demo gRPC and TCP apps beside it, and two sidecars run
beside them, one with the default and one with pod-ip and POD_IP set as the downward API
would. The node reads both over the pod IP.
Needs root and iproute2; otherwise `require_peer` skips (laptop) or fails (CI).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probes import build_probe
from probes.spec import HttpGetSpec, join_host_port
from sidecar.contract import POD_IP_ENV, READY_PATH, STATUS_PATH
from sidecar.model import DEFAULT_FAILURE_THRESHOLD
from tests.sidecar_process import PORTS_TO_STDOUT
from tests.system.test_ipv6_netns import _pod_network
from tests.system.test_pod_netns_e2e import START_TIMEOUT, PodProcesses, _ok, _wait_for

# The apps, every one bound to the pod IP only: `http.server`, and the demo gRPC and TCP apps.
HTTP_PORT, GRPC_PORT, TCP_PORT = 18090, 18091, 18092
PROBES = (f"web=http://:{HTTP_PORT}/", f"api=grpc://:{GRPC_PORT}", f"raw=tcp://:{TCP_PORT}")
# The two sidecars share the pod's network namespace: each its own health port, nothing else.
DEFAULT_HEALTH_PORT = 8550
POD_IP_HEALTH_PORT = 8560


@pytest.fixture(params=["ipv4", "ipv6"])
async def pod(
    request: pytest.FixtureRequest, sidecar_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[PodProcesses, str]]:
    """(the pod's processes, the pod IP the apps bind): the IPv4 or the IPv6 address of a dual-stack pod."""
    networks = _pod_network(ipv4=True)
    network, pod_v4 = next(networks)
    assert pod_v4 is not None
    processes = PodProcesses(network, sidecar_env, tmp_path)
    try:
        yield processes, pod_v4 if request.param == "ipv4" else network.pod_ip
    finally:
        await processes.kill_all()
        networks.close()


async def _start_sidecar(pod: PodProcesses, name: str, health_port: int, pod_ip: str | None = None) -> None:
    """`run` probing PROBES; with `pod_ip`, --probe-host pod-ip and POD_IP set to it."""
    # `env` execs the sidecar, so the pid `ip netns exec` started is still the sidecar's.
    with_pod_ip = ("env", f"{POD_IP_ENV}={pod_ip}") if pod_ip else ()
    flags = ("--probe-host", "pod-ip") if pod_ip else ()
    probes = [arg for probe in PROBES for arg in ("--probe", probe)]
    process = await pod.start(
        name,
        *with_pod_ip,
        sys.executable,
        "-m",
        "sidecar",
        "run",
        *PORTS_TO_STDOUT,
        *flags,
        "--health-port",
        str(health_port),
        "--grpc-port",
        "off",
        "--metrics-port",
        "off",
        *probes,
        read_stdout=True,
    )
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT):
        line = await process.stdout.readline()
    assert json.loads(line)["health"] == health_port, pod.logs()


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as answer:
        return answer.status, await answer.json()


async def _status_from_node(session: aiohttp.ClientSession, pod: PodProcesses, port: int) -> dict[str, Any]:
    """/status as the node sees it at the pod IP, once every container has settled (ready, or
    failed as often as its threshold asks: the reason is then the target's, not a start-up race)."""
    url = f"http://{join_host_port(pod.pod.pod_ip, port)}{STATUS_PATH}"
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            _, status = await _get_json(session, url)
            containers = status["containers"]
            if all(c["ready"] or c["consecutive_failures"] >= DEFAULT_FAILURE_THRESHOLD for c in containers):
                return {c["name"]: c for c in containers}
            await asyncio.sleep(0.05)


async def test_apps_bound_only_to_the_pod_ip_are_ready_with_pod_ip_and_refused_by_default(
    pod: tuple[PodProcesses, str],
) -> None:
    processes, pod_ip = pod
    await processes.start("web", sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", pod_ip)
    await processes.start_demo_app(
        "api", "grpc_app", "--host", pod_ip, "--port", str(GRPC_PORT), "--flip-every", "3600"
    )
    await processes.start_demo_app("raw", "tcp_app", "--host", pod_ip, "--port", str(TCP_PORT), "--listen-after", "0")
    # The kubelet's view first: from the node, the HTTP app answers at the pod IP.
    result, _ = await _wait_for(build_probe(HttpGetSpec(port=HTTP_PORT, host=pod_ip)), _ok, START_TIMEOUT)
    assert result.outcome.ok, f"the app never answered at {pod_ip}: {result.message}\n{processes.logs()}"

    await _start_sidecar(processes, "default", DEFAULT_HEALTH_PORT)
    await _start_sidecar(processes, "pod-ip", POD_IP_HEALTH_PORT, pod_ip)
    async with aiohttp.ClientSession() as session:
        default = await _status_from_node(session, processes, DEFAULT_HEALTH_PORT)
        with_pod_ip = await _status_from_node(session, processes, POD_IP_HEALTH_PORT)
        ready_url = f"http://{join_host_port(processes.pod.pod_ip, POD_IP_HEALTH_PORT)}{READY_PATH}"
        ready, _ = await _get_json(session, ready_url)

    assert {name: (c["ready"], c["message"]) for name, c in default.items()} == {
        "web": (False, f"connect ECONNREFUSED 127.0.0.1:{HTTP_PORT}"),
        "api": (False, "grpc UNAVAILABLE: connect refused"),
        "raw": (False, f"connect ECONNREFUSED 127.0.0.1:{TCP_PORT}"),
    }, processes.logs()
    assert ready == 200 and all(c["ready"] for c in with_pod_ip.values()), (with_pod_ip, processes.logs())
    canonical = str(ipaddress.ip_address(pod_ip))  # the sidecar normalises POD_IP: 059b becomes 59b
    assert {name: c["target"] for name, c in with_pod_ip.items()} == {
        "web": f"http://{join_host_port(canonical, HTTP_PORT)}/",
        "api": f"grpc://{join_host_port(canonical, GRPC_PORT)}",
        "raw": f"tcp://{join_host_port(canonical, TCP_PORT)}",
    }
