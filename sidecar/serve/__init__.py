"""Serve: what the runtime knows, as answers other programs can ask for.

    health_http  the health port: /ready, /ready/<c>, /healthz, /status, /wait-for-drain, /live/<c>
    health_grpc  the gRPC health port: grpc.health.v1 Check, Watch and List
    metrics      Prometheus metrics, pushed by state observer hooks; the /metrics port
    logs         transitions and failure summaries, text or JSON
    views        the JSON views of a container that /ready, /status and `check` show

Serve reads `sidecar.runtime` (the state, the drainer, the one-shot attempts) and the
shared leaves; nothing in runtime reads serve.
"""
