"""--probe-host: where a probe that names no host goes, decided once by load_config.

The kubelet fills in the pod IP for a probe without a host: httpGet
(kubernetes pkg/probe/http/request.go, `GetProbeUrl`: `if host == "" { host = podIP }`),
tcpSocket (pkg/kubelet/prober/prober.go, `runProbe`: `if host == "" { host = status.PodIP }`),
and grpc always (prober.go: `host := status.PodIP`; GRPCAction has no host field). With
pod-ip the sidecar does the same with POD_IP; an explicit host is kept, exec is untouched.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from probes.spec import DEFAULT_HOST, HttpGetSpec, TcpSocketSpec
from sidecar.config.encode import compact_json, containers_document, handler_document
from sidecar.config.loader import default_probe_host, load_config
from sidecar.contract import (
    CONFIG_ENV,
    KNATIVE_PROBE_ENV,
    POD_IP_ENV,
    PROBE_HOST_ENV,
    PROBE_HOST_LOCALHOST,
    PROBE_HOST_POD_IP,
)
from sidecar.errors import ConfigError
from sidecar.model import SidecarConfig
from sidecar.runtime.settings import RunSettings, env_name

POD_IP = "10.244.1.17"
POD_IPV6 = "fd00:10:244::17"


def load(*, environ: Mapping[str, str] = {}, probe_host: str = PROBE_HOST_POD_IP, **kwargs: object) -> SidecarConfig:
    return load_config(environ={POD_IP_ENV: POD_IP, **environ}, probe_host=probe_host, **kwargs)  # type: ignore[arg-type]


def targets(config: SidecarConfig) -> dict[str, str]:
    return {spec.name: spec.handler.target for spec in config.containers if spec.handler is not None}


CONTAINERS_FILE = {
    "containers": [
        {"name": "web", "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}}},
        {"name": "web-host", "readinessProbe": {"httpGet": {"port": 8080, "host": "127.0.0.1"}}},
        {"name": "db", "readinessProbe": {"tcpSocket": {"port": 5432}}},
        {"name": "db-host", "readinessProbe": {"tcpSocket": {"port": 5432, "host": "db.local"}}},
        {"name": "api", "readinessProbe": {"grpc": {"port": 9090, "service": "api"}}},
        {"name": "job", "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}}},
        {"name": "plain", "ports": [{"containerPort": 7070}]},
        {
            "name": "live",
            "readinessProbe": {"tcpSocket": {"port": 1}},
            "livenessProbe": {"httpGet": {"port": 8081, "path": "/live"}},
        },
    ]
}


def test_pod_ip_is_the_host_of_every_probe_that_names_none_and_an_explicit_host_is_kept() -> None:
    config = load(environ={CONFIG_ENV: json.dumps(CONTAINERS_FILE)})
    assert targets(config) == {
        "web": f"http://{POD_IP}:8080/ready",
        "web-host": "http://127.0.0.1:8080/",
        "db": f"tcp://{POD_IP}:5432",
        "db-host": "tcp://db.local:5432",
        "api": f"grpc://{POD_IP}:9090/api",
        "job": "exec:cat /tmp/ready",
        "plain": f"tcp://{POD_IP}:7070",  # the TCP default on the first port names no host either
        "live": f"tcp://{POD_IP}:1",
    }
    live = {spec.name: spec for spec in config.containers}["live"].liveness
    assert live == HttpGetSpec(port=8081, path="/live", host=POD_IP)


def written_hosts(config: SidecarConfig) -> dict[str, str | None]:
    """Each container's host as the encoder writes it back: None where the source wrote none."""
    hosts: dict[str, str | None] = {}
    for spec in config.containers:
        for kind, handler in (("", spec.handler), ("/liveness", spec.liveness)):
            if isinstance(handler, HttpGetSpec | TcpSocketSpec):
                action = next(iter(handler_document(handler).values()))
                hosts[spec.name + kind] = action.get("host")
    return hosts


@pytest.mark.parametrize("probe_host", [PROBE_HOST_POD_IP, PROBE_HOST_LOCALHOST])
def test_each_spec_knows_whether_its_host_was_written_and_the_encoder_writes_just_that(probe_host: str) -> None:
    # inject's encoder must not turn an explicit 127.0.0.1 into "no host": under pod-ip the
    # sidecar would send that probe to the pod IP, where the kubelet keeps an explicit host.
    flags = ["flag=tcp://:1", "flag-loop=http://127.0.0.1:2/"]
    config = load(environ={CONFIG_ENV: json.dumps(CONTAINERS_FILE)}, probe_flags=flags, probe_host=probe_host)
    assert written_hosts(config) == {
        "web": None,
        "web-host": "127.0.0.1",
        "db": None,
        "db-host": "db.local",
        "plain": None,
        "live": None,
        "live/liveness": None,
        "flag": None,
        "flag-loop": "127.0.0.1",
    }
    reloaded = load(environ={CONFIG_ENV: compact_json(containers_document(config.containers))}, probe_host=probe_host)
    assert targets(reloaded) == targets(config)
    assert written_hosts(reloaded) == written_hosts(config)
    # The same target is the same check, however it was written (lint's `covers` compares specs).
    assert TcpSocketSpec(port=1, host_defaulted=True) == TcpSocketSpec(port=1, host=DEFAULT_HOST)


def test_localhost_the_default_keeps_127_0_0_1_and_ignores_pod_ip() -> None:
    config = load_config(environ={CONFIG_ENV: json.dumps(CONTAINERS_FILE), POD_IP_ENV: "not an address"})
    assert targets(config)["web"] == f"http://{DEFAULT_HOST}:8080/ready"
    assert targets(config)["api"] == f"grpc://{DEFAULT_HOST}:9090/api"
    assert targets(load(probe_host=PROBE_HOST_LOCALHOST, environ={CONFIG_ENV: json.dumps(CONTAINERS_FILE)})) == (
        targets(config)
    )


def test_probe_flags_an_empty_host_is_the_pod_ip_and_a_written_one_is_kept() -> None:
    config = load(
        probe_flags=[
            "web=http://:8080/ready",
            "tls=https://:8443",
            "db=tcp://:5432",
            "api=grpc://:9090/api",
            "loop=tcp://127.0.0.1:5432",
            "v6=http://[::1]:8080/",
            "cmd=exec:true",
        ]
    )
    assert targets(config) == {
        "web": f"http://{POD_IP}:8080/ready",
        "tls": f"https://{POD_IP}:8443/",
        "db": f"tcp://{POD_IP}:5432",
        "api": f"grpc://{POD_IP}:9090/api",
        "loop": "tcp://127.0.0.1:5432",
        "v6": "http://[::1]:8080/",
        "cmd": "exec:true",
    }


def test_an_ipv6_pod_ip_is_bracketed_in_targets_and_normalised() -> None:
    config = load(environ={POD_IP_ENV: "fd00:10:244:0::0017"}, probe_flags=["web=http://:8080/", "api=grpc://:9090"])
    assert targets(config) == {"web": f"http://[{POD_IPV6}]:8080/", "api": f"grpc://[{POD_IPV6}]:9090"}
    web = config.containers[0].handler
    assert isinstance(web, HttpGetSpec) and web.host == POD_IPV6  # brackets only where host:port is joined


def test_a_manifest_and_knative_env_get_the_pod_ip_where_no_host_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pod.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: Pod
            metadata: {name: web}
            spec:
              containers:
              - name: app
                ports: [{name: http, containerPort: 8080}]
                readinessProbe: {httpGet: {port: http, path: /ready, httpHeaders: [{name: Host, value: app.example}]}}
              - name: side
                ports: [{containerPort: 9000}]
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    config = load(config_file="pod.yaml")
    assert targets(config) == {"app": f"http://{POD_IP}:8080/ready", "side": f"tcp://{POD_IP}:9000"}
    app = config.containers[0].handler
    assert isinstance(app, HttpGetSpec) and app.headers == (("Host", "app.example"),)  # as written, for the probe

    # Knative's queue-proxy env, as Knative writes it: host 127.0.0.1 explicitly, so it stays.
    probes = '[{"tcpSocket":{"port":8080,"host":"127.0.0.1"}},{"httpGet":{"port":8081}}]'
    knative = load(environ={KNATIVE_PROBE_ENV: probes})
    assert targets(knative) == {"container-0": "tcp://127.0.0.1:8080", "container-1": f"http://{POD_IP}:8081/"}


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, "env POD_IP is not set; set it from the downward API (fieldRef status.podIP)"),
        ({POD_IP_ENV: "  "}, "env POD_IP is not set; set it from the downward API (fieldRef status.podIP)"),
        ({POD_IP_ENV: "pod.local"}, 'env POD_IP "pod.local" is not an IPv4 or IPv6 address'),
        ({POD_IP_ENV: "10.0.0.300"}, 'env POD_IP "10.0.0.300" is not an IPv4 or IPv6 address'),
        ({POD_IP_ENV: "[fd00::1]"}, 'env POD_IP "[fd00::1]" is not an IPv4 or IPv6 address'),
        (
            {POD_IP_ENV: "10.0.0.5,fd00::5"},
            'env POD_IP "10.0.0.5,fd00::5" is not an IPv4 or IPv6 address'
            " (one address: fieldRef status.podIP, not status.podIPs)",
        ),
    ],
)
def test_pod_ip_missing_or_not_an_address_is_one_line_naming_pod_ip_and_the_flag(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        default_probe_host(PROBE_HOST_POD_IP, environ)
    assert str(caught.value) == f"--probe-host pod-ip: {problem}"
    assert "\n" not in str(caught.value)


def test_pod_ip_is_read_even_when_no_probe_would_use_it() -> None:
    # Decided at load, not at the first probe: a pod-ip sidecar without POD_IP fails at start.
    with pytest.raises(ConfigError, match="POD_IP is not set"):
        load_config(probe_flags=["cmd=exec:true"], environ={}, probe_host=PROBE_HOST_POD_IP)


def test_the_setting_is_one_of_two_words_and_its_env_var_is_the_contract_s() -> None:
    assert env_name("probe_host") == PROBE_HOST_ENV
    assert RunSettings().probe_host == PROBE_HOST_LOCALHOST
    assert RunSettings.from_raw({"probe_host": " Pod-IP "}).probe_host == PROBE_HOST_POD_IP
    with pytest.raises(ConfigError) as caught:
        RunSettings.from_raw({"probe_host": "10.0.0.5"}, origin={"probe_host": PROBE_HOST_ENV})
    assert str(caught.value) == "READINESS_SIDECAR_PROBE_HOST: '10.0.0.5' must be one of localhost, pod-ip"
