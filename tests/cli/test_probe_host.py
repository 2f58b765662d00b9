"""`--probe-host pod-ip` for `check` and `run`, on loopback: 127.0.0.2 stands in for the pod IP.

An app bound only to its pod IP refuses 127.0.0.1, so the sidecar's default misses it; the
kubelet, which probes the pod IP (kubernetes pkg/kubelet/prober/prober.go, `runProbe`, and
pkg/probe/http/request.go, `GetProbeUrl`), reaches it. The netns version of this, with a
real pod IP seen from the node, is tests/system/test_pod_ip_netns.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from probes.spec import join_host_port
from sidecar.contract import CONFIG_ENV, POD_IP_ENV, PROBE_HOST_ANNOTATION, PROBE_HOST_ENV
from tests.conftest import sidecar_cmd
from tests.k8s.test_inject_annotations import env_of, inject_cli, sidecar_of
from tests.sidecar_process import SidecarProcess

# Every 127/8 address is the loopback interface's on Linux: a second address with no setup.
STAND_IN_POD_IP = "127.0.0.2"


class PodIpApp:
    """An aiohttp app listening on one address only, remembering each request's Host header."""

    def __init__(self, address: str = STAND_IN_POD_IP) -> None:
        self.address = address
        self.hosts: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _ready(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[PodIpApp]:
    served = PodIpApp()
    await served.start()
    yield served
    await served.stop()


@pytest.fixture(params=[STAND_IN_POD_IP, "::1"])
async def any_family_app(request: pytest.FixtureRequest) -> AsyncIterator[PodIpApp]:
    """The app on 127.0.0.2 or on ::1 (an IPv6 pod IP's stand-in: brackets in targets and Host)."""
    served = PodIpApp(request.param)
    await served.start()
    yield served
    await served.stop()


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = sidecar_cmd(*args)
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, env=env, timeout=60)


def one_row(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    rows = json.loads(proc.stdout)["containers"]
    assert len(rows) == 1, rows
    row: dict[str, object] = rows[0]
    return row


async def test_check_misses_an_app_bound_to_the_pod_ip_by_default_and_reaches_it_with_pod_ip(
    any_family_app: PodIpApp, sidecar_env: dict[str, str]
) -> None:
    app = any_family_app
    env = {**sidecar_env, POD_IP_ENV: app.address}
    probe = f"web=http://:{app.port}/ready"
    default = await cli(env, "check", "--json", "--probe", probe)
    assert default.returncode == 1, default.stderr
    assert one_row(default)["message"] == f"connect ECONNREFUSED 127.0.0.1:{app.port}"

    pod_ip = await cli(env, "check", "--json", "--probe-host", "pod-ip", "--probe", probe)
    assert pod_ip.returncode == 0, pod_ip.stderr
    authority = join_host_port(app.address, app.port)  # [::1]:port for IPv6
    assert one_row(pod_ip)["target"] == f"http://{authority}/ready"
    # The kubelet's Host: the URL's host:port unless httpHeaders set one (newProbeRequest,
    # pkg/probe/http/request.go: req.Host = headers.Get("Host"), else Go uses URL.Host).
    assert app.hosts == [authority]


async def test_the_env_var_sets_it_too_and_a_host_header_and_an_explicit_host_are_kept(
    app: PodIpApp, sidecar_env: dict[str, str]
) -> None:
    env = {**sidecar_env, POD_IP_ENV: STAND_IN_POD_IP, PROBE_HOST_ENV: "pod-ip"}
    header = await cli(env, "check", "--json", "--probe", f"web=http://:{app.port}/ready;header=Host:app.example")
    assert header.returncode == 0, header.stderr
    assert app.hosts == ["app.example"]

    explicit = await cli(env, "check", "--json", "--probe", f"web=http://127.0.0.1:{app.port}/ready")
    assert explicit.returncode == 1
    assert one_row(explicit)["message"] == f"connect ECONNREFUSED 127.0.0.1:{app.port}"


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(
    ("pod_ip", "flags", "line"),
    [
        (
            None,
            ("--probe-host", "pod-ip"),
            "--probe-host pod-ip: env POD_IP is not set; set it from the downward API (fieldRef status.podIP)",
        ),
        (
            "10.0.0.5/24",
            ("--probe-host", "pod-ip"),
            '--probe-host pod-ip: env POD_IP "10.0.0.5/24" is not an IPv4 or IPv6 address',
        ),
        ("10.0.0.5", ("--probe-host", "10.0.0.5"), "--probe-host: '10.0.0.5' must be one of localhost, pod-ip"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2_with_nothing_on_stdout(
    command: str, pod_ip: str | None, flags: tuple[str, ...], line: str, sidecar_env: dict[str, str]
) -> None:
    env = {k: v for k, v in sidecar_env.items() if k != POD_IP_ENV}
    if pod_ip is not None:
        env[POD_IP_ENV] = pod_ip
    run_only = ("--health-port", "0", "--grpc-port", "off", "--metrics-port", "off") if command == "run" else ()
    proc = await cli(env, command, *flags, *run_only, "--probe", "web=tcp://:1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line + "\n")


async def test_run_with_pod_ip_gets_ready_and_shows_the_pod_ip_target_in_status_and_the_log(app: PodIpApp) -> None:
    target = f"http://{STAND_IN_POD_IP}:{app.port}/ready"
    car = await SidecarProcess.start(
        "--health-port",
        "0",
        "--grpc-port",
        "off",
        "--metrics-port",
        "off",
        "--probe-host",
        "pod-ip",
        "--probe",
        f"web=http://:{app.port}/ready",
        env={POD_IP_ENV: STAND_IN_POD_IP},
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(car.base + "/ready?wait=5s") as ready:
                assert ready.status == 200, await ready.text()
            async with session.get(car.base + "/status") as status:
                containers = (await status.json())["containers"]
        assert [(c["name"], c["target"]) for c in containers] == [("web", target)]
        assert f"web: probing httpGet {target}" in await car.wait_for_log(lambda line: "probing" in line)
    finally:
        await car.stop()


async def test_what_inject_writes_follows_the_setting_in_the_pod(app: PodIpApp, sidecar_env: dict[str, str]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "readinessProbe": {"httpGet": {"port": app.port, "path": "/ready"}},
                }
            ]
        },
    }
    injected = await asyncio.to_thread(
        subprocess.run,
        sidecar_cmd("inject"),
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        env=sidecar_env,
        timeout=60,
    )
    assert injected.returncode == 0, injected.stderr
    pod = json.loads(injected.stdout)
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "readiness-sidecar")
    config = next(e["value"] for e in sidecar["env"] if e["name"] == CONFIG_ENV)
    # No host written for a probe that named none: the sidecar's --probe-host decides.
    assert "host" not in json.loads(config)["containers"][0]["readinessProbe"]["httpGet"]

    env = {**sidecar_env, CONFIG_ENV: config, POD_IP_ENV: STAND_IN_POD_IP}
    default = await cli(env, "check", "--json")
    pod_ip = await cli(env, "check", "--json", "--probe-host", "pod-ip")
    assert (default.returncode, pod_ip.returncode) == (1, 0), (default.stdout, pod_ip.stderr)
    assert one_row(pod_ip)["target"] == f"http://{STAND_IN_POD_IP}:{app.port}/ready"


async def test_an_injected_sidecar_under_pod_ip_keeps_an_explicit_loopback_host_on_loopback(
    app: PodIpApp, sidecar_env: dict[str, str]
) -> None:
    # The kubelet keeps an explicit host and sends only the rest to the pod IP (kubernetes
    # pkg/kubelet/prober/prober.go, runProbe; pkg/probe/http/request.go, GetProbeUrl).
    loopback = PodIpApp("127.0.0.1")
    await loopback.start()
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hosts", "annotations": {PROBE_HOST_ANNOTATION: "pod-ip"}},
        "spec": {
            "containers": [
                {
                    "name": "proxy",
                    "image": "example.com/proxy:1",
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": loopback.port, "host": "127.0.0.1"}},
                },
                {
                    "name": "db",
                    "image": "example.com/db:1",
                    "readinessProbe": {"tcpSocket": {"port": loopback.port, "host": "127.0.0.1"}},
                },
                {
                    "name": "web",
                    "image": "example.com/web:1",
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": app.port}},
                },
            ]
        },
    }
    try:
        injected = await asyncio.to_thread(inject_cli, manifest, sidecar_env)
        assert injected.returncode == 0, injected.stderr
        sidecar_env_vars = env_of(sidecar_of(json.loads(injected.stdout)))
        car = await SidecarProcess.start(
            "--health-port",
            "0",
            "--grpc-port",
            "off",
            "--metrics-port",
            "off",
            "--probe-host",
            sidecar_env_vars[PROBE_HOST_ENV],
            env={CONFIG_ENV: sidecar_env_vars[CONFIG_ENV], POD_IP_ENV: STAND_IN_POD_IP},
        )
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(car.base + "/ready?wait=5s") as ready:
                    assert ready.status == 200, await ready.text()
                async with session.get(car.base + "/status") as status:
                    containers = (await status.json())["containers"]
        finally:
            await car.stop()
    finally:
        await loopback.stop()
    assert {c["name"]: c["target"] for c in containers} == {
        "proxy": f"http://127.0.0.1:{loopback.port}/ready",
        "db": f"tcp://127.0.0.1:{loopback.port}",
        "web": f"http://{STAND_IN_POD_IP}:{app.port}/ready",
    }
    assert loopback.hosts and app.hosts, "each app got its own probe"
