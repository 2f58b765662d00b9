"""`load_config`: every config source, merged into one SidecarConfig.

Sources, highest precedence first:

1. `--probe NAME=SPEC` flags (see `sidecar.config.quick_probe`).
2. `-f/--config FILE`: a containers file, or a manifest holding exactly one pod
   template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
   ReplicationController, PodTemplate, Knative Service/Configuration/Revision, or
   a `List` of them).
3. env `READINESS_SIDECAR_CONFIG`: the text of a containers file (YAML or JSON).
   Set but blank counts as unset.
4. env `SERVING_READINESS_PROBE`: Knative queue-proxy's format, unchanged: one
   corev1.Probe as JSON, or a JSON array of them, named container-0, container-1...
   Set but blank means "always ready": a valid source with no containers.

Every source given is used, and they are MERGED BY CONTAINER NAME: when two
sources name the same container, the higher-precedence one wins. A container keeps
the position it has in the lowest-precedence source that names it, so
`--probe db=tcp://:5432` overrides one container of a manifest without reordering
it; new names are appended. Within one source a name may appear only once.

A containers file:

    containers:
    - name: web
      ports: [{name: http, containerPort: 8080}]
      readinessProbe: {httpGet: {port: http, path: /ready}, periodSeconds: 0}
    - name: worker
      required: false  # reported and measured, never gates readiness
      readinessProbe: {exec: {command: [cat, /tmp/ready]}}

Where probes that name no host go is decided once, here: 127.0.0.1, or with
`probe_host="pod-ip"` (--probe-host) the address in env `POD_IP`, as the kubelet's
probes go to the pod IP. An explicit host (httpGet.host, tcpSocket.host, a host in a
--probe URL) is kept either way. See docs/behaviour.md#which-address-probes-use.

Every mistake in any source is a ConfigError that renders as one line naming the
source, the object, the container and the field.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence

from probes.spec import DEFAULT_HOST
from sidecar.config.containers import LoadedContainers, containers_from_document, containers_from_pod
from sidecar.config.documents import load_documents, read_manifest
from sidecar.config.pod_template import find_pod_specs
from sidecar.config.probe import ContainerContext, convert_probe
from sidecar.config.quick_probe import FLAG_SOURCE, flag_context, parse_probe_flag
from sidecar.contract import (
    CONFIG_ENV,
    KNATIVE_PROBE_ENV,
    POD_IP_ENV,
    PROBE_HOST_CHOICES,
    PROBE_HOST_LOCALHOST,
    PROBE_HOST_POD_IP,
)
from sidecar.errors import ConfigError, ErrorContext, one_line, quote, type_words
from sidecar.model import ContainerSpec, SidecarConfig

# Knative's queue-proxy does not name the probes it gets; these are ours.
KNATIVE_CONTAINER_NAME = "container-{index}"

# A message naming every pod template in a big List would not fit one line.
MAX_LISTED_TEMPLATES = 4


def load_config(
    *,
    probe_flags: Sequence[str] = (),
    config_file: str | None = None,
    environ: Mapping[str, str] = os.environ,
    probe_host: str = PROBE_HOST_LOCALHOST,
) -> SidecarConfig:
    """Read, validate and merge every source given; ConfigError for any mistake.

    `probe_host` is one of PROBE_HOST_CHOICES: where a probe that names no host goes.
    """
    host = default_probe_host(probe_host, environ)
    loaded: list[LoadedContainers] = []  # highest precedence first
    if probe_flags:
        loaded.append(_from_flags(probe_flags, host))
    if config_file is not None:
        loaded.append(_from_file(config_file, host))
    config_text = environ.get(CONFIG_ENV)
    if config_text is not None and config_text.strip():
        loaded.append(_from_config_env(config_text, host))
    knative_text = environ.get(KNATIVE_PROBE_ENV)
    if knative_text is not None:
        loaded.append(_from_knative_env(knative_text, host))
    if not loaded:
        raise ConfigError(
            "no containers configured",
            problem=f"use {FLAG_SOURCE}, -f, {CONFIG_ENV} or {KNATIVE_PROBE_ENV}",
        )
    return _merge(loaded)


def default_probe_host(probe_host: str, environ: Mapping[str, str]) -> str:
    """The address a probe that names no host goes to: 127.0.0.1 for "localhost", env
    POD_IP for "pod-ip", which must hold one IPv4 or IPv6 address; ConfigError naming both."""
    if probe_host not in PROBE_HOST_CHOICES:
        raise ConfigError("--probe-host", problem=f"{quote(probe_host)} must be one of {', '.join(PROBE_HOST_CHOICES)}")
    if probe_host == PROBE_HOST_LOCALHOST:
        return DEFAULT_HOST
    source = f"--probe-host {PROBE_HOST_POD_IP}"
    text = environ.get(POD_IP_ENV)
    if text is None or not text.strip():
        problem = f"env {POD_IP_ENV} is not set; set it from the downward API (fieldRef status.podIP)"
        raise ConfigError(source, problem=problem)
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        # status.podIPs gives "10.0.0.5,fd00::5": one of them is the pod's IP, which we can't pick.
        hint = " (one address: fieldRef status.podIP, not status.podIPs)" if "," in text else ""
        raise ConfigError(
            source, problem=f"env {POD_IP_ENV} {quote(text)} is not an IPv4 or IPv6 address{hint}"
        ) from None
    return str(address)


def _merge(loaded: list[LoadedContainers]) -> SidecarConfig:
    merged: dict[str, ContainerSpec] = {}
    warnings: dict[str, str] = {}
    for source in reversed(loaded):  # lowest first: an override keeps the slot
        for spec in source.containers:
            merged[spec.name] = spec
            warnings.pop(spec.name, None)
            if spec.name in source.warnings:
                warnings[spec.name] = source.warnings[spec.name]
    return SidecarConfig(
        containers=tuple(merged.values()),
        sources=tuple(source.label for source in loaded),
        warnings=tuple(warnings[name] for name in merged if name in warnings),
    )


def _from_flags(flags: Sequence[str], host: str) -> LoadedContainers:
    specs: dict[str, ContainerSpec] = {}
    for flag in flags:
        spec = parse_probe_flag(flag, default_host=host)
        if spec.name in specs:
            raise flag_context(flag).error("", f"duplicate container name {quote(spec.name)}")
        specs[spec.name] = spec
    label = FLAG_SOURCE if len(flags) == 1 else f"{FLAG_SOURCE} x{len(flags)}"
    return LoadedContainers(label, tuple(specs.values()))


def _from_file(path: str, host: str) -> LoadedContainers:
    manifest = read_manifest(path, sys.stdin.buffer)  # "-" reads stdin
    source, docs = manifest.source, manifest.docs
    ctx = ErrorContext(source)
    if not docs:
        raise ctx.error("", "is empty: expected a containers file or a manifest with a pod template")
    if len(docs) == 1 and isinstance(docs[0], dict) and "kind" not in docs[0]:
        return containers_from_document(docs[0], ctx, source, default_host=host)
    refs = [ref for doc in docs for ref in find_pod_specs(doc, source)]
    if not refs:
        raise ctx.error(
            "",
            "holds no pod template (Pod, Deployment, Knative Service, ...) and is not a"
            " containers file (a mapping with `containers:`)",
        )
    if len(refs) > 1:
        labels = [ref.label for ref in refs[:MAX_LISTED_TEMPLATES]]
        if len(refs) > MAX_LISTED_TEMPLATES:
            labels.append("...")
        raise ctx.error(
            "",
            f"holds {len(refs)} pod templates ({', '.join(labels)}); the sidecar watches one pod",
        )
    return containers_from_pod(refs[0], source, default_host=host)


def _from_config_env(text: str, host: str) -> LoadedContainers:
    docs = load_documents(text, CONFIG_ENV)
    ctx = ErrorContext(CONFIG_ENV)
    if len(docs) != 1:
        raise ctx.error("", f"expected one YAML or JSON document with `containers:`, got {len(docs)}")
    return containers_from_document(docs[0], ctx, CONFIG_ENV, default_host=host)


def _from_knative_env(text: str, host: str) -> LoadedContainers:
    ctx = ErrorContext(KNATIVE_PROBE_ENV)
    if not text.strip():
        return LoadedContainers(KNATIVE_PROBE_ENV)  # Knative: no probe, always ready
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:  # ValueError covers JSONDecodeError
        raise ctx.error("", f"invalid JSON: {one_line(str(err))}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ctx.error("", f"expected a probe object or an array of them, got {type_words(data)}")
    specs = []
    for index, raw in enumerate(data):
        name = KNATIVE_CONTAINER_NAME.format(index=index)
        container_ctx = ctx.within(f"container {quote(name)}")
        handler, timing = convert_probe(raw, container_ctx, "", ContainerContext(host=host))
        specs.append(ContainerSpec(name, handler, timing))
    return LoadedContainers(KNATIVE_PROBE_ENV, tuple(specs))
