"""Per-pod settings by annotation, the same through `inject` (the CLI, as a subprocess) and the
webhook (a real TLS server), and what the sidecar they configure then does with them."""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import socket
import subprocess
from typing import Any

import aiohttp
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sidecar.config.istio import APP_PROBERS_ENV, STATUS_ANNOTATION
from sidecar.contract import (
    CONFIG_ENV,
    DRAIN_PATH,
    DRAIN_SECONDS_ANNOTATION,
    EXEC_PROBES_ANNOTATION,
    GRPC_PORT_ANNOTATION,
    HEALTH_PORT_ANNOTATION,
    IMAGE_ENV,
    LIVE_PATH,
    METRICS_PORT_ANNOTATION,
    POD_IP_ENV,
    PROBE_HOST_ANNOTATION,
    PROBE_HOST_ENV,
    PROBE_MODE_ANNOTATION,
    SIDECAR_NAME,
)
from sidecar.k8s.inject import InjectOptions
from sidecar.k8s.options import DEFAULT_IMAGE, DEFAULT_IMAGE_WARNING
from sidecar.k8s.pod_settings import DRAIN_SECONDS_ENV, GRPC_PORT_ENV, HEALTH_PORT_ENV, METRICS_PORT_ENV
from sidecar.k8s.tls_reload import TlsFiles
from sidecar.k8s.webhook import WebhookServer
from sidecar.runtime.settings import RunSettings, env_name
from tests.conftest import REPO, sidecar_cmd
from tests.k8s import test_webhook
from tests.k8s.test_webhook import admission_review, canonical, patched
from tests.sidecar_process import SidecarProcess

# The webhook tests' fixtures: a trustme CA, its cert files, a client trusting it, a server and a session.
ca, tls_files, client_tls = test_webhook.ca, test_webhook.tls_files, test_webhook.client_tls
port, session = test_webhook.port, test_webhook.session

IMAGE = "registry.example/readiness-sidecar:0.1.0"
KUBERNETES_VERSION = "1.33.0"


def pod(annotations: dict[str, str] | None = None, *, exec_probe: bool = False) -> dict[str, Any]:
    """A Pod with an httpGet readiness probe on a named port, a tcp liveness probe and an exec-probed worker."""
    worker_probe = {"exec": {"command": ["cat", "/tmp/ready"]}} if exec_probe else {"tcpSocket": {"port": 9000}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", **({"annotations": annotations} if annotations else {})},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "example.com/web:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 8080}},
                },
                {
                    "name": "worker",
                    "image": "example.com/worker:1",
                    "ports": [{"containerPort": 9000}],
                    "readinessProbe": worker_probe,
                },
            ]
        },
    }


def inject_cli(obj: dict[str, Any], env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sidecar_cmd("inject", "--image", IMAGE, *flags),
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        cwd=REPO,
    )


def injected_by_cli(obj: dict[str, Any], env: dict[str, str], *flags: str) -> dict[str, Any]:
    done = inject_cli(obj, env, *flags)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sidecar_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    (found,) = [c for key in ("containers", "initContainers") for c in spec.get(key, []) if c["name"] == SIDECAR_NAME]
    return found  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def admit(session: aiohttp.ClientSession, port: int, obj: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"https://127.0.0.1:{port}/mutate", json=admission_review(copy.deepcopy(obj))) as resp:
        assert resp.status == 200, await resp.text()
        response: dict[str, Any] = (await resp.json())["response"]
    return response


# -- each setting, through the CLI ----------------------------------------------------------------


def test_health_port_moves_the_sidecars_env_ports_probes_drain_hooks_and_live_rewrites(
    sidecar_env: dict[str, str],
) -> None:
    obj = injected_by_cli(pod({HEALTH_PORT_ANNOTATION: "9550"}), sidecar_env, "--rewrite-liveness")
    sidecar = sidecar_of(obj)
    assert env_of(sidecar)[HEALTH_PORT_ENV] == "9550"
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {
        "rs-health": 9550,
        "rs-grpc": 8551,
        "rs-metrics": 8552,
    }
    assert sidecar["readinessProbe"]["httpGet"]["port"] == 9550
    assert sidecar["livenessProbe"]["httpGet"]["port"] == 9550
    web, worker = obj["spec"]["containers"][:2]
    for container in (web, worker):
        assert container["lifecycle"]["preStop"] == {"httpGet": {"path": DRAIN_PATH, "port": 9550}}
    assert web["livenessProbe"]["httpGet"] == {"path": LIVE_PATH.format(container="web"), "port": 9550}
    assert "8550" not in json.dumps(obj), "nothing left on the default health port"
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_grpc_and_metrics_ports_move_or_turn_off(sidecar_env: dict[str, str]) -> None:
    obj = injected_by_cli(pod({GRPC_PORT_ANNOTATION: "9551", METRICS_PORT_ANNOTATION: "off"}), sidecar_env)
    sidecar = sidecar_of(obj)
    assert env_of(sidecar)[GRPC_PORT_ENV] == "9551"
    assert env_of(sidecar)[METRICS_PORT_ENV] == "off"
    assert HEALTH_PORT_ENV not in env_of(sidecar), "only what differs from run's defaults"
    assert [(p["name"], p["containerPort"]) for p in sidecar["ports"]] == [("rs-health", 8550), ("rs-grpc", 9551)]


def test_drain_seconds_sets_the_sidecars_drain_and_sizes_the_grace_period_from_it(sidecar_env: dict[str, str]) -> None:
    long = injected_by_cli(pod({DRAIN_SECONDS_ANNOTATION: "1m30s"}), sidecar_env)
    assert env_of(sidecar_of(long))[DRAIN_SECONDS_ENV] == "90"
    assert long["spec"]["terminationGracePeriodSeconds"] == 100, "90 s of drain, then 10 s to stop"
    short = injected_by_cli(pod({DRAIN_SECONDS_ANNOTATION: "2.5s"}), sidecar_env)
    assert env_of(sidecar_of(short))[DRAIN_SECONDS_ENV] == "2.5"
    assert short["spec"]["terminationGracePeriodSeconds"] == 13
    kept = pod({DRAIN_SECONDS_ANNOTATION: "5s"})
    kept["spec"]["terminationGracePeriodSeconds"] = 60
    assert injected_by_cli(kept, sidecar_env)["spec"]["terminationGracePeriodSeconds"] == 60, "long enough: kept"


def test_exec_probes_annotation_wins_over_the_flag(sidecar_env: dict[str, str]) -> None:
    to_sidecar = injected_by_cli(pod({EXEC_PROBES_ANNOTATION: "sidecar"}, exec_probe=True), sidecar_env)
    config = json.loads(env_of(sidecar_of(to_sidecar))[CONFIG_ENV])
    assert config["containers"][1]["readinessProbe"] == {"exec": {"command": ["cat", "/tmp/ready"]}}
    assert "readinessProbe" not in to_sidecar["spec"]["containers"][1]
    flagged = pod({EXEC_PROBES_ANNOTATION: "kubelet"}, exec_probe=True)
    kept = injected_by_cli(flagged, sidecar_env, "--exec-probes", "sidecar")
    assert kept["spec"]["containers"][1]["readinessProbe"] == {"exec": {"command": ["cat", "/tmp/ready"]}}
    config = json.loads(env_of(sidecar_of(kept))[CONFIG_ENV])
    assert config["containers"][1]["readinessProbe"] == {"tcpSocket": {"port": 9000}}, "the port check instead"


def test_probe_host_pod_ip_gives_the_sidecar_the_pod_ip_from_the_downward_api(sidecar_env: dict[str, str]) -> None:
    obj = injected_by_cli(pod({PROBE_HOST_ANNOTATION: "pod-ip"}), sidecar_env)
    env = env_of(sidecar_of(obj))
    assert env[PROBE_HOST_ENV] == "pod-ip"
    assert env[POD_IP_ENV] == {"fieldRef": {"fieldPath": "status.podIP"}}
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    default = env_of(sidecar_of(injected_by_cli(pod({PROBE_HOST_ANNOTATION: "localhost"}), sidecar_env)))
    assert PROBE_HOST_ENV not in default and POD_IP_ENV not in default


def hosts_pod(annotations: dict[str, str]) -> dict[str, Any]:
    """A Pod whose probes name 127.0.0.1 explicitly (httpGet, tcpSocket, a tcp liveness probe) or no host."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hosts", "annotations": annotations},
        "spec": {
            "containers": [
                {
                    "name": "loopback",
                    "image": "example.com/proxy:1",
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080, "host": "127.0.0.1"}},
                    "livenessProbe": {"tcpSocket": {"port": 8080, "host": "127.0.0.1"}},
                },
                {
                    "name": "db",
                    "image": "example.com/db:1",
                    "readinessProbe": {"tcpSocket": {"port": 5432, "host": "127.0.0.1"}},
                },
                {
                    "name": "web",
                    "image": "example.com/web:1",
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 9090}},
                    "livenessProbe": {"tcpSocket": {"port": 9090}},
                },
                {"name": "cache", "image": "example.com/cache:1", "ports": [{"containerPort": 6379}]},
            ]
        },
    }


@pytest.mark.parametrize("probe_host", ["pod-ip", "localhost"])
def test_inject_writes_a_host_exactly_where_the_manifest_names_one_whatever_the_probe_host(
    probe_host: str, sidecar_env: dict[str, str]
) -> None:
    # The kubelet sends a probe without a host to the pod IP and keeps an explicit one
    # (kubernetes pkg/kubelet/prober/prober.go, runProbe; pkg/probe/http/request.go): an
    # explicit 127.0.0.1 must reach the sidecar, or under pod-ip it probes the pod IP instead.
    obj = injected_by_cli(hosts_pod({PROBE_HOST_ANNOTATION: probe_host}), sidecar_env, "--rewrite-liveness")
    config = {c["name"]: c for c in json.loads(env_of(sidecar_of(obj))[CONFIG_ENV])["containers"]}
    assert config["loopback"]["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080, "host": "127.0.0.1"}
    assert config["loopback"]["livenessProbe"]["tcpSocket"] == {"port": 8080, "host": "127.0.0.1"}
    assert config["db"]["readinessProbe"]["tcpSocket"] == {"port": 5432, "host": "127.0.0.1"}
    assert config["web"]["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9090}
    assert config["web"]["livenessProbe"]["tcpSocket"] == {"port": 9090}
    assert config["cache"]["readinessProbe"]["tcpSocket"] == {"port": 6379}, "Knative's default check names none"


def test_an_istio_pods_probers_keep_the_host_their_author_wrote_or_none(sidecar_env: dict[str, str]) -> None:
    # Istio keeps each original action whole in ISTIO_KUBE_APP_PROBERS, host included or left
    # out (istio/istio pkg/kube/inject/app_probe.go, kubeProbeToInternalProber).
    probers = {
        "/app-health/loopback/readyz": {"httpGet": {"path": "/ready", "port": 8080, "host": "127.0.0.1"}},
        "/app-health/web/readyz": {"tcpSocket": {"port": 9090}},
    }
    status = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-init"]})
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "meshed", "annotations": {PROBE_HOST_ANNOTATION: "pod-ip", STATUS_ANNOTATION: status}},
        "spec": {
            "containers": [
                *(
                    {
                        "name": name,
                        "image": f"example.com/{name}:1",
                        "readinessProbe": {"httpGet": {"path": f"/app-health/{name}/readyz", "port": 15020}},
                    }
                    for name in ("loopback", "web")
                ),
                {
                    "name": "istio-proxy",
                    "image": "docker.io/istio/proxyv2:1.24.0",
                    "env": [{"name": APP_PROBERS_ENV, "value": json.dumps(probers)}],
                },
            ]
        },
    }
    config = {
        c["name"]: c
        for c in json.loads(env_of(sidecar_of(injected_by_cli(manifest, sidecar_env)))[CONFIG_ENV])["containers"]
    }
    assert config["loopback"]["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080, "host": "127.0.0.1"}
    assert config["web"]["readinessProbe"]["tcpSocket"] == {"port": 9090}


def test_a_deployments_template_annotations_are_the_ones_read(sidecar_env: dict[str, str]) -> None:
    template = pod({HEALTH_PORT_ANNOTATION: "9550"})
    metadata = {"labels": {"app": "web"}, "annotations": template["metadata"]["annotations"]}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": metadata, "spec": template["spec"]},
        },
    }
    done = inject_cli(deployment, sidecar_env)
    assert done.returncode == 0, done.stderr
    sidecar = sidecar_of(json.loads(done.stdout)["spec"]["template"])
    assert sidecar["readinessProbe"]["httpGet"]["port"] == 9550


def test_the_env_inject_writes_is_what_run_reads_with_the_same_parsers() -> None:
    """The names are run's own (RunSettings' env vars), and the values parse back to the annotations'."""
    assert tuple(env_name(setting) for setting in ("health_port", "grpc_port", "metrics_port", "drain_seconds")) == (
        HEALTH_PORT_ENV,
        GRPC_PORT_ENV,
        METRICS_PORT_ENV,
        DRAIN_SECONDS_ENV,
    )
    settings = RunSettings.from_raw(
        {"health_port": "9550", "grpc_port": "off", "metrics_port": "9552", "drain_seconds": "90"}
    )
    assert (settings.health_port, settings.grpc_port, settings.metrics_port, settings.drain_seconds) == (
        9550,
        None,
        9552,
        90.0,
    )
    if "probe_host" in RunSettings.fields():  # `run --probe-host` (the pod-IP work) reads what inject writes
        assert env_name("probe_host") == PROBE_HOST_ENV
        RunSettings.from_raw({"probe_host": "pod-ip"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_injected_sidecar_listens_where_the_annotations_say(sidecar_env: dict[str, str]) -> None:
    health, grpc = free_port(), free_port()
    annotations = {HEALTH_PORT_ANNOTATION: str(health), GRPC_PORT_ANNOTATION: str(grpc), METRICS_PORT_ANNOTATION: "off"}
    sidecar = sidecar_of(injected_by_cli(pod(annotations), sidecar_env))
    env = {name: value for name, value in env_of(sidecar).items() if isinstance(value, str)}
    car = await SidecarProcess.start(env=env)
    try:
        assert (car.health_port, car.grpc_port, car.metrics_port) == (health, grpc, None)
        async with aiohttp.ClientSession() as client, client.get(f"{car.base}/status") as resp:
            status = await resp.json()
        assert [c["name"] for c in status["containers"]] == ["web", "worker"]
    finally:
        await car.kill()


# -- bad values: one line, exit 2 -------------------------------------------------------------------

BAD_VALUES = [
    (HEALTH_PORT_ANNOTATION, "http", "port 'http' is not a number"),
    (HEALTH_PORT_ANNOTATION, "0", "port 0 would be a free port the kubelet cannot know; give a number 1-65535"),
    (HEALTH_PORT_ANNOTATION, "off", "port 'off' is not a number"),
    (GRPC_PORT_ANNOTATION, "70000", "port 70000 out of range 0-65535 (0 picks a free port)"),
    (DRAIN_SECONDS_ANNOTATION, "soon", "bad duration 'soon' (use e.g. 500ms, 2s, 1m)"),
    (EXEC_PROBES_ANNOTATION, "both", 'must be kubelet or sidecar, got "both"'),
    (PROBE_HOST_ANNOTATION, "127.0.0.1", 'must be localhost or pod-ip, got "127.0.0.1"'),
    (
        METRICS_PORT_ANNOTATION,
        "8080",
        'the sidecar\'s rs-metrics port 8080 is declared by container "web"; choose another',
    ),
    (GRPC_PORT_ANNOTATION, "8550", "port 8550 is the sidecar's rs-health too"),
]


@pytest.mark.parametrize(("annotation", "value", "problem"), BAD_VALUES, ids=[f"{a}={v}" for a, v, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_file_object_and_annotation_and_exit_2(
    sidecar_env: dict[str, str], annotation: str, value: str, problem: str
) -> None:
    done = inject_cli(pod({annotation: value}), sidecar_env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"<stdin>: Pod/web: annotations[{annotation}]: {problem}\n"


def test_an_unquoted_number_is_refused_because_annotations_are_strings(sidecar_env: dict[str, str]) -> None:
    text = yaml.safe_dump(pod()).replace(
        "  name: web\n", f"  name: web\n  annotations:\n    {HEALTH_PORT_ANNOTATION}: 9550\n", 1
    )
    done = subprocess.run(
        sidecar_cmd("inject", "--image", IMAGE), input=text, capture_output=True, text=True, env=sidecar_env, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"<stdin>: Pod/web: annotations[{HEALTH_PORT_ANNOTATION}]: must be a string (quote it), got an integer\n"
    )


# -- the webhook: the same result, the same refusal ---------------------------------------------------

EVERY_SETTING = {
    HEALTH_PORT_ANNOTATION: "9550",
    GRPC_PORT_ANNOTATION: "9551",
    METRICS_PORT_ANNOTATION: "off",
    DRAIN_SECONDS_ANNOTATION: "45s",
    EXEC_PROBES_ANNOTATION: "sidecar",
    PROBE_HOST_ANNOTATION: "pod-ip",
    PROBE_MODE_ANNOTATION: "kubelet",
}


async def test_the_webhook_gives_what_inject_gives_for_every_annotation(
    tls_files: TlsFiles, session: aiohttp.ClientSession, sidecar_env: dict[str, str]
) -> None:
    server = WebhookServer(InjectOptions(image=IMAGE), tls_files)
    port = await server.start("127.0.0.1", 0)
    try:
        original = pod(EVERY_SETTING, exec_probe=True)
        response = await admit(session, port, original)
    finally:
        await server.stop()
    assert response["allowed"] is True
    by_webhook = patched(original, response)
    by_cli = injected_by_cli(original, sidecar_env)
    assert canonical(by_webhook) == canonical(by_cli)
    env = env_of(sidecar_of(by_cli))
    assert (env[HEALTH_PORT_ENV], env[GRPC_PORT_ENV], env[METRICS_PORT_ENV], env[DRAIN_SECONDS_ENV]) == (
        "9550",
        "9551",
        "off",
        "45",
    )
    assert env[PROBE_HOST_ENV] == "pod-ip"
    assert by_cli["spec"]["terminationGracePeriodSeconds"] == 55


@pytest.mark.parametrize("mode", ["kubelet", "aggressive"])
async def test_probe_mode_annotation_is_honoured_by_inject_and_the_webhook_alike(
    session: aiohttp.ClientSession, port: int, sidecar_env: dict[str, str], mode: str
) -> None:
    original = pod({PROBE_MODE_ANNOTATION: mode})
    original["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = 7
    by_cli = injected_by_cli(original, sidecar_env)
    config = json.loads(env_of(sidecar_of(by_cli))[CONFIG_ENV])
    # Aggressive mode drops the period (docs/behaviour.md#probe-modes); kubelet mode keeps it.
    assert config["containers"][0]["readinessProbe"].get("periodSeconds") == (7 if mode == "kubelet" else None)
    response = await admit(session, port, original)
    by_webhook = patched(original, response)
    assert json.loads(env_of(sidecar_of(by_webhook))[CONFIG_ENV]) == config


@pytest.mark.parametrize(("annotation", "value", "problem"), BAD_VALUES[:3], ids=[a for a, _, _ in BAD_VALUES[:3]])
async def test_the_webhook_denies_a_bad_value_with_the_same_line(
    session: aiohttp.ClientSession, port: int, annotation: str, value: str, problem: str
) -> None:
    response = await admit(session, port, pod({annotation: value}))
    assert response["allowed"] is False
    assert "patch" not in response
    assert response["status"] == {"code": 400, "message": f"admission: Pod/web: annotations[{annotation}]: {problem}"}


async def test_the_webhook_still_admits_a_pod_whose_probe_it_cannot_inject(
    session: aiohttp.ClientSession, port: int
) -> None:
    broken = pod()
    broken["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "nope"
    response = await admit(session, port, broken)
    assert response["allowed"] is True and "patch" not in response
    assert response["warnings"][0].startswith("readiness-sidecar: not injected: admission: Pod/web: ")


# -- the webhook's image: the same flag and env as inject -----------------------------------------------


async def webhook_start_lines(tls_files: TlsFiles, env: dict[str, str], *flags: str) -> list[str]:
    """The webhook CLI's log up to the line after "listening" (or its end), then SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        *sidecar_cmd("webhook", "--bind", "127.0.0.1", "--port", "0", "--cert", tls_files.cert,
                     "--key", tls_files.key, *flags),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(15):
            while not any("webhook listening on" in line for line in lines):
                line = (await proc.stderr.readline()).decode()
                assert line, "webhook exited early:\n" + "".join(lines)
                lines.append(line)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            lines.extend((await proc.stderr.read()).decode().splitlines(keepends=True))
            assert await proc.wait() == 0, "".join(lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return lines


async def test_the_webhook_takes_the_image_from_the_env_and_warns_about_the_default(
    tls_files: TlsFiles, sidecar_env: dict[str, str]
) -> None:
    from_env = await webhook_start_lines(tls_files, {**sidecar_env, IMAGE_ENV: "registry.example/from-env:1"})
    assert any("injecting registry.example/from-env:1" in line for line in from_env), from_env
    assert not any(DEFAULT_IMAGE_WARNING in line for line in from_env)
    by_default = await webhook_start_lines(tls_files, sidecar_env)
    assert any(f"injecting {DEFAULT_IMAGE}" in line for line in by_default), by_default
    assert sum(DEFAULT_IMAGE_WARNING in line for line in by_default) == 1


def test_a_knative_sidecar_port_may_not_be_queue_proxys(sidecar_env: dict[str, str]) -> None:
    """queue-proxy shares the pod's network namespace; Knative reserves its ports
    (knative/serving pkg/apis/serving/k8s_validation.go, reservedPorts)."""
    service = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {
            "template": {
                "metadata": {"annotations": {METRICS_PORT_ANNOTATION: "9091"}},
                "spec": {"containers": [{"image": "x", "ports": [{"containerPort": 8080}]}]},
            }
        },
    }
    done = inject_cli(service, sidecar_env)
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        done.stderr
        == f"<stdin>: Service/hello: annotations[{METRICS_PORT_ANNOTATION}]: port 9091 is Knative queue-proxy's\n"
    )
