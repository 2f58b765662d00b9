"""lint's checks of one container: its three probes, its preStop, its exec command.

Every finding carries the line of the field its message starts with, as deep as that
field is in the text (`field_line`); JSON input and plain dicts have no lines.

    lint = ContainerLint(ref, "pod.yaml", watched_containers(ref, ctx)[0], Deadline(600, "Knative's default"), None)
    findings = lint.run(exec_probes="kubelet")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from probes.spec import DEFAULT_HOST, ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.documents import position
from sidecar.config.pod_template import PodSpecRef, WatchedContainer
from sidecar.config.probe import ContainerContext, convert_probe, pod_container_context
from sidecar.config.schema import PROBE_KINDS, UNKNOWN_FIELD, Probe, handler_keys, probe_actions, to_struct
from sidecar.contract import DRAIN_PATH, HEALTH_PORT, ROUTED_PROBE_PATHS
from sidecar.errors import ConfigError, ErrorContext, join_field, quote
from sidecar.k8s.lint_rules import ERROR, WARNING, Finding
from sidecar.k8s.sidecar_container import READINESS_PROBE
from sidecar.k8s.sidecar_image import runs_in_sidecar
from sidecar.model import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_TIMEOUT_SECONDS,
    KUBELET_PERIOD_SECONDS,
    ROUTED_CHECK_FIELDS,
    ContainerSpec,
)

# In whole seconds, as the API server stores them and lint's messages print them.
KUBELET_TIMEOUT_SECONDS = int(DEFAULT_TIMEOUT_SECONDS)
# A longer initialDelaySeconds is a guess at the slowest start, paid on every start: past
# the kubelet's default failure window (3 x 10 s) a startupProbe sized for that start fits.
LONG_INITIAL_DELAY_SECONDS = DEFAULT_FAILURE_THRESHOLD * KUBELET_PERIOD_SECONDS
# AggressivePolicy.steady_period's default (sidecar/runtime/scheduler.py, which k8s may not
# import): a ready container is probed once a second, and a failure is confirmed in milliseconds.
SIDECAR_STEADY_PERIOD_SECONDS = 1
# How long a failing container stays in the endpoints when the sidecar runs its readiness in
# aggressive mode: the sidecar notices within a steady period, the kubelet's probe of the
# sidecar (periodSeconds 1, failureThreshold 1) within its own window after that.
AGGRESSIVE_READINESS_WINDOW_SECONDS = (
    SIDECAR_STEADY_PERIOD_SECONDS + READINESS_PROBE["periodSeconds"] * READINESS_PROBE["failureThreshold"]
)


@dataclass(frozen=True, slots=True)
class Deadline:
    """A progress deadline, and where it came from (for the message)."""

    seconds: float
    origin: str


class ContainerLint:
    """Every rule that looks at one container."""

    def __init__(
        self,
        ref: PodSpecRef,
        source: str,
        container: WatchedContainer,
        deadline: Deadline | None,
        injected: Mapping[str, ContainerSpec] | None,
        aggressive: bool | None = None,
        health_port: int = HEALTH_PORT,
        host: str = DEFAULT_HOST,
    ) -> None:
        self.ref, self.source, self.container = ref, source, container
        self.health_port = health_port  # where inject's drain hooks and routed checks point in this pod
        self.name, self.entry = container.name, container.entry
        self.deadline, self.injected = deadline, injected
        self.aggressive = aggressive  # the readiness probe's mode; None: periodSeconds decides (Knative)
        self.ctx = ErrorContext(source, ref.label).within(f"container {quote(container.name)}")
        self.findings: list[Finding] = []
        self.host = host  # where a probe that names no host goes in this pod (lint._default_host)
        self.ports = ContainerContext(host=host)
        self.knative_sidecar = False
        self.probes: dict[str, Probe] = {}  # the probes whose fields are valid, by kind

    def add(self, rule: str, message: str, *, severity: str = "") -> None:
        line = field_line(self.ref.obj, join_field(self.container.field, leading_field(message)))
        self.findings.append(Finding(self.source, self.ref.label, self.name, rule, message, line, severity))

    def run(self, *, exec_probes: str) -> list[Finding]:
        try:
            self.ports = pod_container_context(self.ref, self.container, self.ctx, host=self.host)
        except ConfigError as err:
            self.add("invalid-manifest", field_problem(err))
        # In Knative only the serving container has a port to fill in; the others are sidecars.
        self.knative_sidecar = self.ref.knative and self.ports.default is None
        handlers = {kind: self._probe(kind) for kind in PROBE_KINDS if self.entry.get(kind) is not None}
        self._liveness_covered(handlers)
        self._initial_delays()
        self._liveness_window()
        if self.container.in_containers:
            self._custom_prestop()
        readiness = handlers.get("readinessProbe")
        if exec_probes == "sidecar" and self.injected is None and isinstance(readiness, ExecSpec):
            self._exec_in_sidecar(readiness)
        return self.findings

    def _probe(self, kind: str) -> HandlerSpec | None:
        """Check one probe; its handler (ports resolved) if the loader would accept it."""
        raw = self.entry[kind]
        try:
            probe = to_struct(raw, Probe, self.ctx, kind)
        except ConfigError as err:
            rule = "unknown-probe-field" if err.problem.startswith(UNKNOWN_FIELD) else "invalid-probe"
            self.add(rule, field_problem(err))
            return None
        actions = probe_actions(probe)
        if len(actions) > 1:
            listed = ", ".join(actions)
            self.add("multiple-handlers", f"{kind}: has {len(actions)} handlers ({listed}); use exactly one")
            return None
        found = len(self.findings)
        for key, action in actions.items():
            port = getattr(action, "port", None)
            at = f"{kind}.{key}.port"
            named = isinstance(port, str) and not (port.isascii() and port.isdigit())
            if key == "grpc" and named:
                self.add("grpc-named-port", f"{at}: named port {quote(port)}; grpc takes a port number only")
            elif named and port not in self.ports.named:
                self.add("named-port-not-found", f"{at}: named port {quote(port)} not found in ports")
            elif kind == "readinessProbe" and self.knative_sidecar and key != "exec" and not port:
                self.add("sidecar-probe-without-port",
                         f"{at}: required; Knative fills it in for the serving container only")
        if not actions and kind == "readinessProbe" and self.knative_sidecar:
            self.add("sidecar-probe-without-port", f"{kind}: no handler; Knative has no port to default it to here")
        if len(self.findings) > found:
            return None
        self.probes[kind] = probe
        self._timing(kind, probe)
        try:
            handler, _ = convert_probe(raw, self.ctx, kind, self.ports)
        except ConfigError as err:
            self.add("invalid-probe", field_problem(err))
            return None
        return handler

    def _timing(self, kind: str, probe: Probe) -> None:
        routed = self._routed_check(kind)
        # A probe inject pointed at the sidecar is answered within the original check's timeout.
        timeout = int(routed[1]) if routed else probe.timeout_seconds or KUBELET_TIMEOUT_SECONDS
        period: int | None = probe.period_seconds or KUBELET_PERIOD_SECONDS
        if kind == "readinessProbe":
            # In aggressive mode no period applies: the pod's annotations decide in a core pod,
            # a missing periodSeconds in Knative.
            aggressive = self.aggressive if self.aggressive is not None else not probe.period_seconds
            period = None if aggressive else period
        if period is not None and timeout >= period:
            self.add(
                "timeout-not-below-period",
                f"{kind}: timeoutSeconds {timeout} >= periodSeconds {period}; attempts overlap or are skipped",
            )
        if kind != "readinessProbe" and (probe.success_threshold or 1) != 1:
            self.add(
                "success-threshold-not-one",
                f"{kind}.successThreshold: must be 1, got {probe.success_threshold}; the API server rejects it",
            )
        if kind == "startupProbe" and self.deadline is not None:
            delay = probe.initial_delay_seconds or 0
            period = probe.period_seconds or KUBELET_PERIOD_SECONDS
            failures = probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD
            worst = delay + failures * period + failures * timeout
            if worst >= self.deadline.seconds:
                # A Knative revision that misses its deadline fails; a Deployment only gets a
                # condition and keeps rolling out (kubernetes pkg/controller/deployment/progress.go).
                outcome = (
                    "the rollout fails before startup can succeed"
                    if self.ref.knative
                    else "the rollout is reported failed (Progressing=False, ProgressDeadlineExceeded)"
                    " before startup can succeed, though it goes on"
                )
                self.add(
                    "startup-exceeds-progress-deadline",
                    f"startupProbe: worst case {worst} s (initialDelaySeconds {delay} + failureThreshold {failures}"
                    f" x (periodSeconds {period} + timeoutSeconds {timeout})) >= progress deadline"
                    f" {self.deadline.seconds:g} s ({self.deadline.origin}); {outcome}",
                    severity=ERROR if self.ref.knative else WARNING,
                )

    def _initial_delays(self) -> None:
        """A long initialDelaySeconds on readiness or liveness, in a container without a startupProbe."""
        if self.entry.get("startupProbe") is not None:
            return
        delays = {kind: probe.initial_delay_seconds or 0 for kind, probe in self.probes.items()}
        spec = self.injected.get(self.name) if self.injected is not None else None
        if spec is not None and self.entry.get("readinessProbe") is None:
            delays["readinessProbe"] = int(spec.timing.initial_delay)  # the sidecar runs it now
        for kind in ("readinessProbe", "livenessProbe"):
            delay = delays.get(kind, 0)
            if delay > LONG_INITIAL_DELAY_SECONDS:
                self.add(
                    "initial-delay-use-startup-probe",
                    f"{kind}.initialDelaySeconds: {delay} s is waited on every start, however fast the app is;"
                    " a startupProbe (failureThreshold x periodSeconds as long as the slowest start) holds"
                    " readiness and liveness off only until the app is up",
                )

    def _liveness_window(self) -> None:
        """Liveness must not give up before readiness has taken the pod out of the endpoints."""
        liveness = self.probes.get("livenessProbe")
        readiness = self._readiness_window()
        if liveness is None or readiness is None:
            return
        failures = liveness.failure_threshold or DEFAULT_FAILURE_THRESHOLD
        period = liveness.period_seconds or KUBELET_PERIOD_SECONDS
        if failures * period < readiness[0]:
            self.add(
                "liveness-window-shorter-than-readiness",
                f"livenessProbe: fails after {failures * period} s (failureThreshold {failures} x periodSeconds"
                f" {period}), readiness after {readiness[0]} s ({readiness[1]}); the kubelet restarts the"
                " container while the pod is still in the endpoints, so requests fail",
            )

    def _readiness_window(self) -> tuple[int, str] | None:
        """How long a failing readiness check keeps the pod in the endpoints, and how that was counted."""
        probe = self.probes.get("readinessProbe")
        spec = self.injected.get(self.name) if self.injected is not None else None
        if probe is not None:
            aggressive = self.aggressive if self.aggressive is not None else not probe.period_seconds
            failures = probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD
            period = probe.period_seconds or KUBELET_PERIOD_SECONDS
        elif spec is not None and spec.handler is not None and self.entry.get("readinessProbe") is None:
            aggressive = spec.timing.aggressive
            failures, period = spec.timing.failure_threshold, int(spec.timing.period)
        else:
            return None
        if aggressive:
            return AGGRESSIVE_READINESS_WINDOW_SECONDS, "aggressive mode in the sidecar"
        return failures * period, f"failureThreshold {failures} x periodSeconds {period}"

    def _readiness_check(self, handlers: Mapping[str, HandlerSpec | None]) -> HandlerSpec | None:
        """What checks this container's readiness: its own probe, the sidecar, or Knative's default."""
        if self.entry.get("readinessProbe") is not None:
            return handlers.get("readinessProbe")
        if self.injected is not None and self.name in self.injected:
            return self.injected[self.name].handler
        if self.ref.knative and self.ports.default is not None:
            return TcpSocketSpec(port=self.ports.default, host=self.ports.host, host_defaulted=True)
        return None

    def _liveness_covered(self, handlers: Mapping[str, HandlerSpec | None]) -> None:
        liveness = handlers.get("livenessProbe")
        if liveness is None:
            return
        routed = self._routed_check("livenessProbe")
        if routed is not None:
            liveness = routed[0]  # inject --rewrite-liveness: the sidecar runs the real check
        if not covers(self._readiness_check(handlers), liveness):
            self.add(
                "liveness-not-covered",
                f"livenessProbe ({liveness.target}) is not covered by readiness: the pod stays ready while it"
                " fails, until the restart breaks connections; check it in readinessProbe too",
            )

    def _routed_check(self, kind: str) -> tuple[HandlerSpec, float] | None:
        """For a probe inject --rewrite-liveness pointed at the sidecar: the check the sidecar runs, and its timeout."""
        spec = self.injected.get(self.name) if self.injected is not None else None
        check_kind = ROUTED_CHECK_FIELDS.get(kind)
        routed = _is_routed(self.entry.get(kind), kind, self.name, self.health_port)
        if spec is None or check_kind is None or not routed:
            return None
        return spec.routed_check(check_kind)

    def _custom_prestop(self) -> None:
        lifecycle = self.entry.get("lifecycle")
        pre_stop = lifecycle.get("preStop") if isinstance(lifecycle, dict) else None
        if pre_stop is None or _is_drain_hook(pre_stop, self.health_port):
            return
        if self.ref.knative:
            self.add("custom-prestop", "lifecycle.preStop: Knative rejects lifecycle hooks; queue-proxy drains instead")
        else:
            self.add(
                "custom-prestop",
                "lifecycle.preStop: the sidecar's drain (/wait-for-drain) replaces it; inject keeps this hook,"
                " so the container will not wait for the drain",
            )

    def _exec_in_sidecar(self, readiness: ExecSpec) -> None:
        if not runs_in_sidecar(readiness.command, self.entry.get("volumeMounts") or []):
            self.add(
                "exec-not-in-sidecar-image",
                f"readinessProbe.exec.command: {quote(readiness.command[0])} is not one the sidecar image ships"
                " (docs/lint.md) nor on a volume this container mounts; with --exec-probes sidecar it may not run",
            )


def covers(readiness: HandlerSpec | None, liveness: HandlerSpec) -> bool:
    """Whether a failing liveness check also fails readiness."""
    if readiness is None:
        return False
    if type(readiness) is type(liveness):
        if isinstance(readiness, HttpGetSpec) and isinstance(liveness, HttpGetSpec):
            # Headers only decorate the request; the same URL is the same check.
            return readiness.target == liveness.target
        return readiness == liveness
    # An HTTP or gRPC check that succeeds has connected to host:port, so it covers a TCP check there.
    return (
        isinstance(liveness, TcpSocketSpec)
        and isinstance(readiness, HttpGetSpec | GrpcSpec)
        and (readiness.host, readiness.port) == (liveness.host, liveness.port)
    )


def _is_drain_hook(hook: Any, health_port: int) -> bool:
    action = hook.get("httpGet") if isinstance(hook, dict) else None
    return isinstance(action, dict) and action.get("path") == DRAIN_PATH and action.get("port") == health_port


def _is_routed(probe: Any, kind: str, name: str, health_port: int) -> bool:
    """Whether a livenessProbe or startupProbe is the one inject --rewrite-liveness writes: an httpGet of
    the sidecar's /live/<name> or /startup/<name>, whatever the check behind it (httpGet, tcpSocket, grpc)."""
    action = probe.get("httpGet") if isinstance(probe, dict) and handler_keys(probe) == ["httpGet"] else None
    return (
        isinstance(action, dict)
        and action.get("port") == health_port
        and action.get("path") == ROUTED_PROBE_PATHS[kind].format(container=name)
    )


def field_problem(err: ConfigError) -> str:
    return ": ".join(part for part in (err.field, err.problem) if part)


_LEADING_FIELD = re.compile(r"[^\s:(]*")
_FIELD_STEP = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")


def leading_field(message: str) -> str:
    """The field a message starts with: "readinessProbe.grpc.port: ..." -> "readinessProbe.grpc.port"."""
    match = _LEADING_FIELD.match(message)
    return match[0] if match else ""


def field_line(obj: Any, field: str) -> int | None:
    """The 1-based line of `field` ("spec.containers[0].readinessProbe") in a round-trip object:
    of its deepest part that is in the text, else of the object itself; None for plain data."""
    line = _first_line(obj)
    node = obj
    for step in _FIELD_STEP.finditer(field):
        bracketed, name = step[1], step[2]
        key: str | int = name if bracketed is None else int(bracketed) if bracketed.isdigit() else bracketed
        if not _has(node, key):
            break
        found = position(node, key)
        node = node[key]
        if found is not None:
            line = found[0]
    return line


def _has(node: Any, key: str | int) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)


def _first_line(obj: Any) -> int | None:
    """An object's line: where its first key is."""
    if not isinstance(obj, dict) or not obj:
        return None
    found = position(obj, next(iter(obj)))
    return found[0] if found is not None else None
