"""Typed, validated specs of what the sidecar watches: what `sidecar.config` produces and
every other package reads.

    spec = ContainerSpec("app", TcpSocketSpec(port=8080), ProbeTiming(period=0))
    spec.gates, spec.timing.aggressive  # True, True
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.spec import HandlerSpec

# The kubelet's defaults (the API server's SetDefaults_Probe), the one place they are written.
DEFAULT_TIMEOUT_SECONDS = 1.0
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3
# The kubelet's periodSeconds default. Ours for readiness is 0 (aggressive mode); lint uses
# this one for the probes the kubelet keeps (liveness, startup).
KUBELET_PERIOD_SECONDS = 10

# Every surface's reason for a container with no handler: the sidecar never probes it.
UNOBSERVED_REASON = "left to the kubelet"
# Every surface's reason for a container before its first attempt.
NOT_PROBED_REASON = "not probed yet"

# The readiness states, one word each, spelt so in every surface: /ready, /ready/<c> and
# /status ("status"), check, logs (text and JSON) and the metrics' `to` label
# (docs/behaviour.md#states). gRPC keeps its protocol's SERVING / NOT_SERVING.
READY = "ready"
NOT_READY = "not_ready"  # failing, or not probed yet: the kubelet's initial readiness
UNOBSERVED = "unobserved"  # a container without a probe: left to the kubelet, never gating
DRAINING = "draining"  # the pod only: SIGTERM came, never ready again
CONTAINER_STATES = (READY, NOT_READY, UNOBSERVED)
POD_STATES = (READY, NOT_READY, DRAINING)


def readiness_word(ready: bool) -> str:
    """READY or NOT_READY."""
    return READY if ready else NOT_READY


# The kubelet's checks `inject --rewrite-liveness` routes through the sidecar, as the
# sidecar names them (routes, metrics labels, logs): the livenessProbe and the startupProbe.
LIVENESS = "liveness"
STARTUP = "startup"
ROUTED_CHECK_KINDS = (LIVENESS, STARTUP)
# The corev1 probe each one is, by field name.
ROUTED_CHECK_FIELDS = {"livenessProbe": LIVENESS, "startupProbe": STARTUP}


@dataclass(frozen=True, slots=True)
class ProbeTiming:
    initial_delay: float = 0.0
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    period: float = 0.0  # 0 means aggressive mode
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD

    @property
    def aggressive(self) -> bool:
        return self.period == 0


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container the sidecar reports on.

    `handler` is None for a container that can't be observed (no probe and no
    ports in a manifest): it is reported as unobserved and never gates readiness.

        spec = ContainerSpec("app", TcpSocketSpec(port=8080))
        spec.gates  # True: required and observed
    """

    name: str
    handler: HandlerSpec | None
    timing: ProbeTiming = ProbeTiming()
    required: bool = True
    # A liveness check the sidecar runs once per GET /live/<name> (inject --rewrite-liveness),
    # for apps that listen on localhost only. Never part of readiness.
    liveness: HandlerSpec | None = None
    liveness_timeout: float = DEFAULT_TIMEOUT_SECONDS
    # The same for the startupProbe, once per GET /startup/<name>.
    startup: HandlerSpec | None = None
    startup_timeout: float = DEFAULT_TIMEOUT_SECONDS

    def routed_check(self, kind: str) -> tuple[HandlerSpec, float] | None:
        """The `kind` (LIVENESS or STARTUP) check the sidecar runs for the kubelet, and its timeout; None if none."""
        if kind == LIVENESS:
            return None if self.liveness is None else (self.liveness, self.liveness_timeout)
        if kind == STARTUP:
            return None if self.startup is None else (self.startup, self.startup_timeout)
        raise ValueError(f"unknown routed check {kind!r}")

    @property
    def observed(self) -> bool:
        return self.handler is not None

    @property
    def gates(self) -> bool:
        """Whether this container's readiness is part of the aggregate answer."""
        return self.required and self.observed


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything loaded from the config sources, in a stable order."""

    containers: tuple[ContainerSpec, ...]
    # Human description of the sources used, for the start-up log line.
    sources: tuple[str, ...] = ()
    # One-line warnings the loader produced (e.g. an unobserved container).
    warnings: tuple[str, ...] = ()
