"""Every path `inject` writes into a pod is one the running sidecar serves.

The routes live once, in sidecar.contract; the server registers them and the injector
writes them. This test checks the two ends meet: it injects a real manifest, then asks a
real sidecar (started from the config inject wrote) for every HTTP path the pod now holds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sidecar.app import Sidecar
from sidecar.config.documents import load_documents
from sidecar.config.loader import load_config
from sidecar.config.pod_template import find_pod_specs
from sidecar.contract import (
    CONFIG_ENV,
    DRAIN_PATH,
    HEALTH_PORT,
    HEALTHZ_PATH,
    METRICS_PORT,
    READY_PATH,
    ROUTED_PROBE_PATHS,
    SIDECAR_NAME,
)
from sidecar.k8s.inject import InjectOptions, inject_documents, sidecar_entry
from sidecar.runtime.settings import RunSettings
from tests.conftest import PEER_MANIFESTS, REPO

SETTINGS = RunSettings(health_port=0, grpc_port=None, metrics_port=0, bind="127.0.0.1", drain_seconds=0.5)
# Between them, every kind of path inject writes: readiness, liveness and startup probes and a preStop hook.
MANIFESTS = {
    PEER_MANIFESTS / "k8s-tcp-liveness-readiness.yaml": {"readinessProbe", "livenessProbe", "preStop"},
    REPO / "tests" / "data" / "inject" / "routed-probes.yaml": {
        "readinessProbe", "livenessProbe", "startupProbe", "preStop"
    },
}


def http_gets(pod_spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(container, where, httpGet) for every httpGet in the pod's probes and lifecycle hooks."""
    found = []
    for key in ("containers", "initContainers"):
        for c in pod_spec.get(key) or []:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if (action := (c.get(probe) or {}).get("httpGet")) is not None:
                    found.append((c["name"], probe, action))
            for hook in ("preStop", "postStart"):
                if (action := ((c.get("lifecycle") or {}).get(hook) or {}).get("httpGet")) is not None:
                    found.append((c["name"], hook, action))
    return found


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
async def test_every_path_inject_writes_is_served(manifest: Path) -> None:
    text = await asyncio.to_thread(manifest.read_text)
    docs, _ = inject_documents(load_documents(text, manifest.name), manifest.name, InjectOptions(rewrite_liveness=True))
    (ref,) = find_pod_specs(yaml.safe_load(yaml.safe_dump(docs[0])), manifest.name)
    ours = [(c, where, a) for c, where, a in http_gets(ref.pod_spec) if a.get("port") in (HEALTH_PORT, METRICS_PORT)]
    kinds = {where for _, where, _ in ours}
    assert kinds == MANIFESTS[manifest], f"the manifest exercises these kinds: {ours}"
    assert any(c == SIDECAR_NAME for c, _, _ in ours) and any(c != SIDECAR_NAME for c, _, _ in ours)
    assert all(a["port"] == HEALTH_PORT for _, _, a in ours), "everything inject writes goes to the health port"

    entry = sidecar_entry(ref.pod_spec)
    assert entry is not None
    env = {e["name"]: e["value"] for e in entry["env"]}
    car = Sidecar(load_config(environ={CONFIG_ENV: env[CONFIG_ENV]}), SETTINGS)
    ports = await car.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[str, int, Any]:
                async with session.get(f"http://127.0.0.1:{ports.health}{path}") as response:
                    return path, response.status, json.loads(await response.read())

            answers = await asyncio.wait_for(asyncio.gather(*(get(a["path"]) for _, _, a in ours)), 10)
    finally:
        await car.stop()
    for path, status, body in answers:
        # 503 is an answer (not ready yet, nothing listening behind /live or /startup); 404 would mean no such route.
        assert status in (200, 503), (path, status, body)
        assert "error" not in body, (path, body)
    routed = [(c, ROUTED_PROBE_PATHS[w]) for c, w, _ in ours if w in ROUTED_PROBE_PATHS and c != SIDECAR_NAME]
    assert {path.split("?")[0] for path, _, _ in answers} == {
        READY_PATH, HEALTHZ_PATH, DRAIN_PATH, *(route.format(container=c) for c, route in routed)
    }
