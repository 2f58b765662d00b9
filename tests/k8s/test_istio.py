"""inject in an Istio mesh, on Istio's own injection fixtures, in both orders (docs/istio.md).

The fixtures (../shared/peer-manifests/istio, see its SOURCES.md) are istio/istio's
pkg/kube/inject/testdata/inject: each input as users write it, and `.injected` as
`istioctl kube-inject` leaves it. What Istio does to a pod is pinned in
istio/istio pkg/kube/inject/app_probe.go (which probes and hooks it rewrites, and the JSON it
keeps in ISTIO_KUBE_APP_PROBERS) and pilot/cmd/pilot-agent/status/server.go (how pilot-agent
answers /app-health and /app-lifecycle paths).
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sidecar.app import Sidecar
from sidecar.config import istio
from sidecar.config.documents import dump_documents, load_documents
from sidecar.config.loader import load_config
from sidecar.config.pod_template import find_pod_specs
from sidecar.contract import CONFIG_ENV, DRAIN_PATH, HEALTH_PORT, HEALTHZ_PATH, READY_PATH
from sidecar.k8s.inject import InjectOptions, inject_documents, sidecar_entry
from sidecar.k8s.lint import lint_documents
from sidecar.runtime.settings import RunSettings
from tests.conftest import PEER_MANIFESTS, sidecar_cmd
from tests.serve.test_contract_routes import http_gets

FIXTURES = PEER_MANIFESTS / "istio"
INPUTS = sorted(FIXTURES.glob("*.yaml"))
PAIRS = [(path, path.with_name(path.name + ".injected")) for path in INPUTS]
KUBERNETES_VERSION = "1.33.0"  # native sidecars (istio-proxy is one here) are GA
OPTION_SETS = {
    "defaults": InjectOptions(),
    "native+liveness": InjectOptions(native_sidecar=True, rewrite_liveness=True),
}
SETTINGS = RunSettings(health_port=0, grpc_port=None, metrics_port=None, bind="127.0.0.1", drain_seconds=0.2)
ISTIO_NAMES = ("istio-init", "istio-proxy")


def inject_docs(text: str, name: str, options: InjectOptions | None = None) -> tuple[list[Any], list[str]]:
    return inject_documents(load_documents(text, name), name, options or InjectOptions())


def pod_specs(docs: list[Any], name: str = "x.yaml") -> list[dict[str, Any]]:
    return [ref.pod_spec for doc in docs for ref in find_pod_specs(doc, name)]


def sidecar_config(pod_spec: dict[str, Any]) -> str | None:
    entry = sidecar_entry(pod_spec)
    if entry is None:
        return None
    (value,) = [env["value"] for env in entry["env"] if env["name"] == CONFIG_ENV]
    assert isinstance(value, str)
    return value


def containers_named(pod_spec: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {
        c["name"]: c for key in ("containers", "initContainers") for c in pod_spec.get(key) or [] if c["name"] in names
    }


def app_probers(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """istio-proxy's ISTIO_KUBE_APP_PROBERS ({} if Istio found no probe to take over)."""
    proxy = containers_named(pod_spec, ("istio-proxy",))["istio-proxy"]
    values = [env["value"] for env in proxy["env"] if env["name"] == istio.APP_PROBERS_ENV]
    probers: dict[str, Any] = json.loads(values[0]) if values else {}
    return probers


def kubelet_http_gets(pod_spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(container, probe or hook, httpGet) for every httpGet the kubelet sends, but Istio's own."""
    return [(c, where, action) for c, where, action in http_gets(pod_spec) if c not in ISTIO_NAMES]


# -- inject after Istio: the .injected fixtures ---------------------------------------------


@pytest.mark.parametrize("path", [injected for _, injected in PAIRS], ids=lambda p: p.name)
def test_inject_accepts_every_istio_injected_fixture_and_leaves_istio_containers_to_istio(
    path: Path, sidecar_env: dict[str, str]
) -> None:
    result = subprocess.run(
        sidecar_cmd("inject", "-f", str(path)), capture_output=True, text=True, env=sidecar_env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    # Istio's proxy is neither watched nor linted: no line names it.
    assert "istio-proxy" not in result.stderr and "istio-init" not in result.stderr, result.stderr


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize(("plain", "injected"), PAIRS, ids=[p.name for p, _ in PAIRS])
def test_both_orders_give_the_sidecar_the_apps_own_probes(plain: Path, injected: Path, options: InjectOptions) -> None:
    before, _ = inject_docs(plain.read_text(), plain.name, options)
    after, _ = inject_docs(injected.read_text(), injected.name, options)
    configs_before = [readiness_config(spec) for spec in pod_specs(before)]
    configs_after = [readiness_config(spec) for spec in pod_specs(after)]
    assert configs_after == configs_before, "the sidecar watches the same targets whichever injector ran first"
    for config in map(json.dumps, configs_after):
        assert "15020" not in config and "/app-health" not in config and "istio" not in config, config
    # --rewrite-liveness: before Istio the sidecar takes liveness and startup over (and Istio then rewrites
    # /live and /startup to pilot-agent); after Istio, pilot-agent already runs them: the config holds neither.
    for config in map(sidecar_config, pod_specs(after)):
        assert config is None or ("livenessProbe" not in config and "startupProbe" not in config)


def readiness_config(pod_spec: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The sidecar's config of a pod, readiness only: what both orders must agree on."""
    config = sidecar_config(pod_spec)
    if config is None:
        return None
    routed = ("livenessProbe", "startupProbe")  # --rewrite-liveness checks
    return [{k: v for k, v in c.items() if k not in routed} for c in json.loads(config)["containers"]]


def test_the_recovered_targets_are_the_originals_with_named_ports_resolved() -> None:
    path = FIXTURES / "named_port.yaml.injected"
    config = load_config(config_file=str(path), environ={})
    (hello,) = config.containers
    # The input's `port: http` is containerPort 80; Istio resolved it in the JSON.
    assert hello.handler is not None and hello.handler.target == "http://127.0.0.1:80/"
    https = load_config(config_file=str(FIXTURES / "https-probes.yaml.injected"), environ={})
    # Istio's rewrite turned the kubelet's probe into plain HTTP to pilot-agent; the original was HTTPS.
    assert next(c.handler.target for c in https.containers if c.handler is not None).startswith("https://")


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize("path", [p for pair in PAIRS for p in pair], ids=lambda p: p.name)
def test_output_is_schema_valid_and_a_second_pass_changes_nothing(path: Path, options: InjectOptions) -> None:
    once, _ = inject_docs(path.read_text(), path.name, options)
    text = dump_documents(once, as_json=False)
    for doc in yaml.safe_load_all(text):
        for obj in doc.get("items", [doc]) if doc is not None else ():
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    twice, warnings = inject_docs(text, path.name, options)
    assert dump_documents(twice, as_json=False) == text
    assert not [w for w in warnings if "not injected" not in w and "left to the kubelet" not in w], warnings


@pytest.mark.parametrize("path", [injected for _, injected in PAIRS], ids=lambda p: p.name)
def test_istio_containers_stay_as_istio_wrote_them_but_for_the_probers_inject_registers(path: Path) -> None:
    original_docs = load_documents(path.read_text(), path.name)
    injected_docs, _ = inject_docs(path.read_text(), path.name)
    for original, injected in zip(pod_specs(original_docs), pod_specs(injected_docs), strict=True):
        if sidecar_entry(injected) is None:
            assert injected == original
            continue
        was, now = containers_named(original, ISTIO_NAMES), containers_named(injected, ISTIO_NAMES)
        assert was["istio-init"] == now["istio-init"]
        old_probers, new_probers = app_probers(original), app_probers(injected)
        assert {k: v for k, v in new_probers.items() if k in old_probers} == old_probers, "Istio's entries kept"
        strip = [copy.deepcopy(c) for c in (was["istio-proxy"], now["istio-proxy"])]
        for proxy in strip:
            proxy["env"] = [env for env in proxy["env"] if env["name"] != istio.APP_PROBERS_ENV]
        assert strip[0] == strip[1], "nothing else of istio-proxy changes"


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_after_istio_every_probe_and_hook_of_ours_goes_through_pilot_agent_to_a_route_the_sidecar_serves(
    options: InjectOptions,
) -> None:
    path = FIXTURES / "hello-probes.yaml.injected"
    docs, _ = inject_docs(path.read_text(), path.name, options)
    (pod_spec,) = pod_specs(docs)
    probers = app_probers(pod_spec)
    gets = kubelet_http_gets(pod_spec)
    # Under STRICT mTLS Envoy takes every port but its own: the kubelet must only ever call pilot-agent.
    assert gets and all(action["port"] == istio.DEFAULT_STATUS_PORT for _, _, action in gets), gets
    ours: list[str] = []
    for container, where, action in gets:
        prober = probers[action["path"]]  # pilot-agent answers 400 for a path it has no prober for
        target = prober.get("httpGet") or {}
        if target.get("port") == HEALTH_PORT:
            ours.append(target["path"])
            kind = istio.PROBE_PATHS.get(where) or istio.HOOK_PATHS[where]
            assert action["path"] == kind.format(c=container)
    assert sorted(p.split("?")[0] for p in ours) == sorted([READY_PATH, HEALTHZ_PATH, DRAIN_PATH]), ours
    answers = asyncio.run(_ask_sidecar(pod_spec, ours))
    for target, status in answers:
        # 503 is an answer (not ready: nothing listens behind the probes); 404 would mean no such route.
        assert status in (200, 503), (target, status)


async def _ask_sidecar(pod_spec: dict[str, Any], paths: list[str]) -> list[tuple[str, int]]:
    """GET each path as pilot-agent would, from a real sidecar started on the config inject wrote."""
    config = sidecar_config(pod_spec)
    assert config is not None
    car = Sidecar(load_config(environ={CONFIG_ENV: config}), SETTINGS)
    ports = await car.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[str, int]:
                async with session.get(f"http://127.0.0.1:{ports.health}{path}") as response:
                    return path, response.status

            return list(await asyncio.wait_for(asyncio.gather(*(get(p) for p in paths)), 10))
    finally:
        await car.stop()


# -- inject before Istio: the plain fixtures -------------------------------------------------


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_before_istio_our_probes_and_hooks_are_http_gets_istio_rewrites(path: Path) -> None:
    docs, _ = inject_docs(path.read_text(), path.name, InjectOptions(rewrite_liveness=True))
    for pod_spec in pod_specs(docs):
        for container, where, action in kubelet_http_gets(pod_spec):
            if action.get("port") == HEALTH_PORT:
                # Istio's injector rewrites the httpGet probes and hooks of every container but istio-proxy
                # (pkg/kube/inject/app_probe.go patchRewriteProbe): a number port and a path it can register.
                assert isinstance(action["port"], int) and action["path"].startswith("/"), (container, where)
    assert all(istio.EXCLUDE_INBOUND_ANNOTATION not in yaml.safe_dump(doc) for doc in docs)


def test_before_istio_a_pod_without_istios_rewrite_keeps_the_health_port_out_of_interception() -> None:
    text = (FIXTURES / "hello-readiness.yaml").read_text()
    doc = yaml.safe_load(text)
    doc["spec"]["template"].setdefault("metadata", {})["annotations"] = {
        istio.REWRITE_PROBES_ANNOTATION: "false",
        istio.EXCLUDE_INBOUND_ANNOTATION: "9000",
    }
    (injected,), _ = inject_documents([doc], "in.yaml", InjectOptions())
    annotations = injected["spec"]["template"]["metadata"]["annotations"]
    assert annotations[istio.EXCLUDE_INBOUND_ANNOTATION] == f"9000,{HEALTH_PORT}", "merged, not replaced"
    (again,), _ = inject_documents([injected], "in.yaml", InjectOptions())
    assert again == injected


# -- lint and the edges ----------------------------------------------------------------------


@pytest.mark.parametrize(("plain", "injected"), PAIRS, ids=[p.name for p, _ in PAIRS])
def test_lint_finds_the_same_in_both_orders(plain: Path, injected: Path) -> None:
    def findings(path: Path) -> list[tuple[str, str, str]]:
        found = lint_documents(load_documents(path.read_text(), path.name), path.name)
        return [(f.obj, f.container, f.rule) for f in found]

    assert findings(injected) == findings(plain)


def test_rewrite_liveness_leaves_istios_liveness_and_startup_probes_to_pilot_agent_and_says_so() -> None:
    path = FIXTURES / "startup_ready_live.yaml.injected"
    docs, warnings = inject_docs(path.read_text(), path.name, InjectOptions(rewrite_liveness=True))
    (pod_spec,) = pod_specs(docs)
    hello = containers_named(pod_spec, ("hello",))["hello"]
    assert hello["livenessProbe"]["httpGet"] == {"path": "/app-health/hello/livez", "port": 15020}
    assert hello["startupProbe"]["httpGet"] == {"path": "/app-health/hello/startupz", "port": 15020}
    for field in ("livenessProbe", "startupProbe"):
        assert any(f'container "hello": {field}: left to Istio' in w for w in warnings), warnings
    config = sidecar_config(pod_spec)
    assert config is not None and "livenessProbe" not in config and "startupProbe" not in config


def test_a_status_annotation_that_is_not_istios_json_is_one_clear_line(
    tmp_path: Path, sidecar_env: dict[str, str]
) -> None:
    doc = next(yaml.safe_load_all((FIXTURES / "hello-readiness.yaml.injected").read_text()))
    doc["spec"]["template"]["metadata"]["annotations"][istio.STATUS_ANNOTATION] = "{not json"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    where = f"annotations[{istio.STATUS_ANNOTATION}]: expected the JSON object"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(sidecar_cmd(*args), capture_output=True, text=True, env=sidecar_env, timeout=30)

    loading = cli("check", "-f", str(path))  # the config loader: exit 2, one line
    assert loading.returncode == 2 and loading.stdout == ""
    (line,) = loading.stderr.splitlines()
    assert f"Deployment/hello: {where}" in line, line
    injecting = cli("inject", "-f", str(path))  # inject's lint pass: an invalid-manifest error, exit 1
    assert injecting.returncode == 1 and injecting.stdout == ""
    assert f"Deployment/hello: invalid-manifest: {where}" in injecting.stderr.splitlines()[0], injecting.stderr
