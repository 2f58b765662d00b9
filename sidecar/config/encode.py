"""ContainerSpecs back to the containers-file schema: the encoder beside `containers_from_document`.

`inject` writes what the loader resolved (named ports as numbers, Knative's
defaults made explicit), so the sidecar reads back exactly the probes the
manifest had, whatever the manifest's quirks. A host is the exception: it is
written exactly where the source wrote one (`host_defaulted` is False), 127.0.0.1
too, and left out elsewhere, so that the sidecar's own --probe-host places the rest.

    handler = HttpGetSpec(port=8080, path="/ready", host_defaulted=True)  # loaded from a probe without a host
    spec = ContainerSpec("web", handler)
    entry = container_entry(spec)
    # {"name": "web", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}
    compact_json(containers_document([spec]))  # '{"containers":[{"name":"web",...}]}'
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from probes.spec import ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from sidecar.model import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_TIMEOUT_SECONDS,
    ContainerSpec,
    ProbeTiming,
)


def containers_document(specs: Iterable[ContainerSpec]) -> dict[str, Any]:
    return {"containers": [container_entry(spec) for spec in specs]}


def compact_json(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def container_entry(spec: ContainerSpec) -> dict[str, Any]:
    """One `containers:` entry; the spec must be observed (a containers file can't say "unobserved")."""
    if spec.handler is None:
        raise ValueError(f"container {spec.name!r} has no readiness check to write")
    entry: dict[str, Any] = {"name": spec.name}
    if not spec.required:
        entry["required"] = False
    entry["readinessProbe"] = probe_document(spec.handler, spec.timing)
    if spec.liveness is not None:
        entry["livenessProbe"] = probe_document(spec.liveness, ProbeTiming(timeout=spec.liveness_timeout))
    if spec.startup is not None:
        entry["startupProbe"] = probe_document(spec.startup, ProbeTiming(timeout=spec.startup_timeout))
    return entry


def probe_document(handler: HandlerSpec, timing: ProbeTiming) -> dict[str, Any]:
    """A corev1.Probe with only the fields that differ from the loader's defaults."""
    doc = handler_document(handler)
    for key, value, default in (
        ("initialDelaySeconds", timing.initial_delay, 0.0),
        ("timeoutSeconds", timing.timeout, DEFAULT_TIMEOUT_SECONDS),
        ("periodSeconds", timing.period, 0.0),  # absent: aggressive mode, as in the source
        ("successThreshold", timing.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
        ("failureThreshold", timing.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
    ):
        if value != default:
            doc[key] = _whole_seconds(key, value)
    return doc


def handler_document(handler: HandlerSpec) -> dict[str, Any]:
    if isinstance(handler, HttpGetSpec):
        action: dict[str, Any] = {"path": handler.path, "port": handler.port}
        if not handler.host_defaulted:
            action["host"] = handler.host
        if handler.scheme != "http":
            action["scheme"] = handler.scheme.upper()
        if handler.headers:
            action["httpHeaders"] = [{"name": name, "value": value} for name, value in handler.headers]
        return {"httpGet": action}
    if isinstance(handler, TcpSocketSpec):
        tcp: dict[str, Any] = {"port": handler.port}
        if not handler.host_defaulted:
            tcp["host"] = handler.host
        return {"tcpSocket": tcp}
    if isinstance(handler, GrpcSpec):
        # corev1's GRPCAction has no host: the kubelet always dials the pod IP, the sidecar where --probe-host says.
        grpc: dict[str, Any] = {"port": handler.port}
        if handler.service:
            grpc["service"] = handler.service
        return {"grpc": grpc}
    if isinstance(handler, ExecSpec):
        # The loader expands $(VAR) in a containers file's commands, so a `$` the command
        # really holds is written as `$$`: it reads back as written, never expanded twice.
        return {"exec": {"command": [arg.replace("$", "$$") for arg in handler.command]}}
    raise TypeError(f"unknown handler {handler!r}")


def _whole_seconds(key: str, value: float | int) -> int:
    # Manifest timings are int32 seconds; a fraction could only come from --probe flags.
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{key} {value} is not a whole number of seconds")
    return int(value)
