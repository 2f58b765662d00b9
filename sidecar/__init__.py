"""readiness-sidecar: one aggregated readiness answer for every container in a pod."""

__version__ = "0.1.0"
