"""What the sidecar and the pods it is injected into agree on: one name for each.

The health server registers these routes and `inject` writes them into pod specs;
both import them from here (as Knative's pkg/queue/constants.go), and a test checks
that every path inject writes is one the server serves.

    f"http://127.0.0.1:{HEALTH_PORT}{READY_PATH}?{WAIT_PARAM}=900ms"
    LIVE_PATH.format(container="app")  # "/live/app"
"""

from __future__ import annotations

# The container inject adds, and how every message names the product.
SIDECAR_NAME = "readiness-sidecar"
# The Python logger every part logs to; `setup_logging` gives it its one handler.
LOGGER_NAME = "readiness_sidecar"

# Ports clear of Knative queue-proxy (8012, 8013, 8022, 8112, 9090, 9091) and Istio
# (15000-15090): all of them share the pod's network namespace.
HEALTH_PORT = 8550
GRPC_PORT = 8551
METRICS_PORT = 8552
# The webhook's HTTPS port: the usual one for admission webhooks in their own Deployment.
WEBHOOK_PORT = 8443
# The webhook's plain-HTTP /metrics: next to run's ports, but its own, so both can run on one host.
WEBHOOK_METRICS_PORT = 8553
WEBHOOK_ENV_PREFIX = "READINESS_SIDECAR_WEBHOOK_"  # + a webhook flag's name: --metrics-port, ..._METRICS_PORT
# Port names are IANA_SVC_NAMEs: at most 15 characters, unique in the pod.
HEALTH_PORT_NAME = "rs-health"
GRPC_PORT_NAME = "rs-grpc"
METRICS_PORT_NAME = "rs-metrics"

# Routes of the health port. {container} is a container name (a DNS-1123 label).
READY_PATH = "/ready"  # the aggregate: 200 ready, 503 not ready (kubelet, load balancers)
READY_CONTAINER_PATH = "/ready/{container}"  # one container's readiness
WAIT_PARAM = "wait"  # ?wait=DURATION on either: long-poll until ready or the duration ends
WAIT_CAPPED_HEADER = "Wait-Capped"  # on the answer to a ?wait= over the cap: the cap it was held to, in seconds
HEALTHZ_PATH = "/healthz"  # the sidecar's own liveness: every scheduler still runs
STATUS_PATH = "/status"  # everything known, for people and tools
DRAIN_PATH = "/wait-for-drain"  # the preStop hook inject gives user containers
LIVE_PATH = "/live/{container}"  # a liveness check inject --rewrite-liveness routes through us
STARTUP_PATH = "/startup/{container}"  # a startupProbe inject --rewrite-liveness routes through us
# The probes inject --rewrite-liveness points at us, by corev1 field, and the route each gets.
ROUTED_PROBE_PATHS = {"livenessProbe": LIVE_PATH, "startupProbe": STARTUP_PATH}
# Route of the metrics port.
METRICS_PATH = "/metrics"
# Routes of the webhook port.
MUTATE_PATH = "/mutate"

# Env vars. Every `run` setting also reads ENV_PREFIX + its flag name (--drain-seconds:
# READINESS_SIDECAR_DRAIN_SECONDS).
ENV_PREFIX = "READINESS_SIDECAR_"
CONFIG_ENV = "READINESS_SIDECAR_CONFIG"  # the containers file's text: what inject writes
CONFIG_FILE_ENV = "READINESS_SIDECAR_CONFIG_FILE"  # -f; READINESS_SIDECAR_CONFIG holds the config itself
KNATIVE_PROBE_ENV = "SERVING_READINESS_PROBE"  # Knative queue-proxy's own, read unchanged
IMAGE_ENV = "READINESS_SIDECAR_IMAGE"  # the image inject and the webhook add, unless --image says
POD_IP_ENV = "POD_IP"  # the pod's IP, from the downward API (status.podIP), for --probe-host pod-ip
# --probe-host: where a probe that names no host goes (docs/behaviour.md#which-address-probes-use).
PROBE_HOST_ENV = "READINESS_SIDECAR_PROBE_HOST"  # what inject sets for the probe-host annotation
PROBE_HOST_LOCALHOST = "localhost"  # the default: 127.0.0.1, the pod's loopback
PROBE_HOST_POD_IP = "pod-ip"  # POD_IP_ENV, as the kubelet's probes go to the pod IP
PROBE_HOST_CHOICES = (PROBE_HOST_LOCALHOST, PROBE_HOST_POD_IP)

# Pod annotations.
NOT_REQUIRED_ANNOTATION = "readiness-sidecar.io/not-required"  # containers reported but never gating
# How a core pod's readiness probes are scheduled (docs/behaviour.md#probe-modes): the pod's
# default, and the containers that differ from it. periodSeconds can't say it in a core pod,
# since the API server fills it in (10) before any webhook sees the pod.
PROBE_MODE_ANNOTATION = "readiness-sidecar.io/probe-mode"  # "aggressive" (the default) or "kubelet"
KUBELET_PROBES_ANNOTATION = "readiness-sidecar.io/kubelet-probes"  # "db,worker": the kubelet's schedule
AGGRESSIVE_PROBES_ANNOTATION = "readiness-sidecar.io/aggressive-probes"  # "app": aggressive mode
INJECT_ANNOTATION = "readiness-sidecar.io/inject"  # "false" opts a pod out of the webhook
STATUS_ANNOTATION = "readiness-sidecar.io/status"  # set by inject; what it says:
STATUS_INJECTED = "injected"
IMAGE_ANNOTATION = "readiness-sidecar.io/image"  # this pod's sidecar image; wins over --image
PROBE_HOST_ANNOTATION = "readiness-sidecar.io/probe-host"  # "localhost" (the default) or "pod-ip"
# One pod's sidecar settings, read by inject and the webhook alike; each wins over the flag of its name.
DRAIN_SECONDS_ANNOTATION = "readiness-sidecar.io/drain-seconds"  # a duration, as --drain-seconds
HEALTH_PORT_ANNOTATION = "readiness-sidecar.io/health-port"  # as --health-port, but never 0
GRPC_PORT_ANNOTATION = "readiness-sidecar.io/grpc-port"  # as --grpc-port ("off" too), never 0
METRICS_PORT_ANNOTATION = "readiness-sidecar.io/metrics-port"  # as --metrics-port ("off" too), never 0
EXEC_PROBES_ANNOTATION = "readiness-sidecar.io/exec-probes"  # "kubelet" or "sidecar", as inject --exec-probes
LINT_IGNORE_ANNOTATION = "readiness-sidecar.io/lint-ignore"  # "rule-id,rule-id": findings lint leaves out
# The community's scrape annotations (Prometheus' kubernetes_sd examples, Istio's metrics merge), set by
# inject on the pod template for the metrics port, unless the pod already has any of its own.
PROMETHEUS_ANNOTATION_PREFIX = "prometheus.io/"
PROMETHEUS_SCRAPE_ANNOTATION = "prometheus.io/scrape"
PROMETHEUS_PORT_ANNOTATION = "prometheus.io/port"
PROMETHEUS_PATH_ANNOTATION = "prometheus.io/path"

# Knative's fixed drain, here configurable (--drain-seconds); inject sizes the pod's grace period by it.
DEFAULT_DRAIN_SECONDS = 30.0
