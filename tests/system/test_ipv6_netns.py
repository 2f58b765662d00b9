"""The default --bind in IPv6-only and dual-stack pods, probed from the node as the kubelet does.

A network namespace is the pod: a veth pair with a ULA (fd..::/64, nodad) on both ends and,
for dual-stack, an IPv4 /30 as well; no IPv4 but loopback in the IPv6-only pod. `run` starts
inside it with no --bind, and the node reaches /ready, gRPC Health Check and /metrics over the
pod's addresses. Needs root and iproute2; otherwise `require_peer` skips (laptop) or fails (CI).
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from probes import build_probe
from probes.spec import GrpcSpec, HttpGetSpec, join_host_port
from sidecar.contract import GRPC_PORT, HEALTH_PORT, METRICS_PORT
from tests.sidecar_process import PORTS_TO_STDOUT
from tests.system.test_pod_netns_e2e import (
    START_TIMEOUT,
    PodNetwork,
    PodProcesses,
    _free_subnet_octet,
    _ip,
    _ip_ok,
    _kill_everything_in,
    _new_namespace,
)

TARGET_PORT = 18080


def _pod_network(*, ipv4: bool) -> Iterator[tuple[PodNetwork, str | None]]:
    """(the pod, with pod_ip its IPv6 address; its IPv4 address or None). Always torn down."""
    namespace, host_veth, pod_veth, suffix = _new_namespace("v6", "rs6")
    try:
        prefix = f"fd00:5253:{suffix[:4]}:{suffix[4:]}"
        pod = PodNetwork(namespace, host_veth, f"{prefix}::1", f"{prefix}::2")
        _ip_ok("link", "add", host_veth, "type", "veth", "peer", "name", pod_veth, "netns", namespace)
        _ip_ok("-6", "addr", "add", f"{pod.host_ip}/64", "dev", host_veth, "nodad")
        _ip_ok("link", "set", host_veth, "up")
        _ip_ok("-n", namespace, "-6", "addr", "add", f"{pod.pod_ip}/64", "dev", pod_veth, "nodad")
        pod_v4 = None
        if ipv4:
            octet = _free_subnet_octet()
            _ip_ok("addr", "add", f"10.231.{octet}.1/30", "dev", host_veth)
            pod_v4 = f"10.231.{octet}.2"
            _ip_ok("-n", namespace, "addr", "add", f"{pod_v4}/30", "dev", pod_veth)
        _ip_ok("-n", namespace, "link", "set", pod_veth, "up")
        _ip_ok("-n", namespace, "link", "set", "lo", "up")
        yield pod, pod_v4
    finally:
        _kill_everything_in(namespace)
        _ip("link", "del", host_veth)
        _ip("netns", "del", namespace)


@pytest.fixture(params=["ipv6-only", "dual-stack"])
async def pod(
    request: pytest.FixtureRequest, sidecar_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[PodProcesses, str | None]]:
    networks = _pod_network(ipv4=request.param == "dual-stack")
    network, pod_v4 = next(networks)
    processes = PodProcesses(network, sidecar_env, tmp_path)
    try:
        yield processes, pod_v4
    finally:
        await processes.kill_all()
        networks.close()


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, answer.read().decode()


async def _reachable_from_node(host: str) -> None:
    ready = await asyncio.to_thread(_get, f"http://{join_host_port(host, HEALTH_PORT)}/ready")
    assert ready[0] == 200, ready
    status, text = await asyncio.to_thread(_get, f"http://{join_host_port(host, METRICS_PORT)}/metrics")
    assert status == 200 and "readiness" in text
    check = await build_probe(GrpcSpec(port=GRPC_PORT, host=host)).attempt(5.0)
    assert check.outcome.value == "success", check


async def test_default_bind_is_reachable_over_every_address_the_pod_has(
    pod: tuple[PodProcesses, str | None],
) -> None:
    processes, pod_v4 = pod
    await processes.start("target", sys.executable, "-m", "http.server", str(TARGET_PORT), "--bind", "127.0.0.1")
    sidecar = await processes.start(
        "sidecar", sys.executable, "-m", "sidecar", "run", *PORTS_TO_STDOUT,
        "--probe", f"web=http://127.0.0.1:{TARGET_PORT}/", read_stdout=True,
    )
    assert sidecar.stdout is not None
    async with asyncio.timeout(START_TIMEOUT):
        ports = json.loads(await sidecar.stdout.readline())
    assert ports == {"health": HEALTH_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT}, processes.logs()
    probe = build_probe(HttpGetSpec(port=HEALTH_PORT, path="/ready", host=processes.pod.pod_ip))
    async with asyncio.timeout(START_TIMEOUT):
        while (await probe.attempt(1.0)).outcome.value != "success":  # noqa: ASYNC110 - another process, over the network
            await asyncio.sleep(0.05)
    await _reachable_from_node(processes.pod.pod_ip)
    if pod_v4 is not None:
        await _reachable_from_node(pod_v4)
