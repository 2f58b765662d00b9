"""lint's checks of one container: its three probes, its preStop, its exec command.

    lint = ContainerLint(ref, "pod.yaml", watched_containers(ref, ctx)[0], Deadline(600, "Knative's default"), None)
    findings = lint.run(exec_probes="kubelet")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from probes.spec import ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.pod_template import PodSpecRef, WatchedContainer
from sidecar.config.probe import ContainerContext, convert_probe, pod_container_context
from sidecar.config.schema import PROBE_KINDS, Probe, handler_keys, probe_actions, to_struct
from sidecar.contract import DRAIN_PATH, HEALTH_PORT, ROUTED_PROBE_PATHS
from sidecar.errors import ConfigError, ErrorContext, quote
from sidecar.k8s.lint_rules import Finding
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
    ) -> None:
        self.ref, self.source, self.container = ref, source, container
        self.name, self.entry = container.name, container.entry
        self.deadline, self.injected = deadline, injected
        self.aggressive = aggressive  # the readiness probe's mode; None: periodSeconds decides (Knative)
        self.ctx = ErrorContext(source, ref.label).within(f"container {quote(container.name)}")
        self.findings: list[Finding] = []
        self.ports = ContainerContext()
        self.knative_sidecar = False

    def add(self, rule: str, message: str) -> None:
        self.findings.append(Finding(self.source, self.ref.label, self.name, rule, message))

    def run(self, *, exec_probes: str) -> list[Finding]:
        try:
            self.ports = pod_container_context(self.ref, self.container, self.ctx)
        except ConfigError as err:
            self.add("invalid-manifest", field_problem(err))
        # In Knative only the serving container has a port to fill in; the others are sidecars.
        self.knative_sidecar = self.ref.knative and self.ports.default is None
        handlers = {kind: self._probe(kind) for kind in PROBE_KINDS if self.entry.get(kind) is not None}
        self._liveness_covered(handlers)
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
            rule = "unknown-probe-field" if err.problem == "unknown field" else "invalid-probe"
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
                self.add(
                    "startup-exceeds-progress-deadline",
                    f"startupProbe: worst case {worst} s (initialDelaySeconds {delay} + failureThreshold {failures}"
                    f" x (periodSeconds {period} + timeoutSeconds {timeout})) >= progress deadline"
                    f" {self.deadline.seconds:g} s ({self.deadline.origin});"
                    " the rollout fails before startup can succeed",
                )

    def _readiness_check(self, handlers: Mapping[str, HandlerSpec | None]) -> HandlerSpec | None:
        """What checks this container's readiness: its own probe, the sidecar, or Knative's default."""
        if self.entry.get("readinessProbe") is not None:
            return handlers.get("readinessProbe")
        if self.injected is not None and self.name in self.injected:
            return self.injected[self.name].handler
        if self.ref.knative and self.ports.default is not None:
            return TcpSocketSpec(port=self.ports.default)
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
        if spec is None or check_kind is None or not _is_routed(self.entry.get(kind), kind, self.name):
            return None
        return spec.routed_check(check_kind)

    def _custom_prestop(self) -> None:
        lifecycle = self.entry.get("lifecycle")
        pre_stop = lifecycle.get("preStop") if isinstance(lifecycle, dict) else None
        if pre_stop is None or _is_drain_hook(pre_stop):
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


def _is_drain_hook(hook: Any) -> bool:
    action = hook.get("httpGet") if isinstance(hook, dict) else None
    return isinstance(action, dict) and action.get("path") == DRAIN_PATH and action.get("port") == HEALTH_PORT


def _is_routed(probe: Any, kind: str, name: str) -> bool:
    """Whether a livenessProbe or startupProbe is the one inject --rewrite-liveness writes: an httpGet of
    the sidecar's /live/<name> or /startup/<name>, whatever the check behind it (httpGet, tcpSocket, grpc)."""
    action = probe.get("httpGet") if isinstance(probe, dict) and handler_keys(probe) == ["httpGet"] else None
    return (
        isinstance(action, dict)
        and action.get("port") == HEALTH_PORT
        and action.get("path") == ROUTED_PROBE_PATHS[kind].format(container=name)
    )


def field_problem(err: ConfigError) -> str:
    return ": ".join(part for part in (err.field, err.problem) if part)
