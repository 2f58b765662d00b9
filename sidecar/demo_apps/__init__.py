"""Small demo targets, one per probe type, runnable on their own.

Each app prints `PORT <n>` as its first stdout line once it owns its port (so
`--port 0` works for whoever started it), logs to stderr, and exits cleanly on
SIGTERM or SIGINT.

    python -m sidecar.demo_apps.http_app --port 8080 --ready-after 2
    python -m sidecar.demo_apps.grpc_app --port 8081 --flip-every 15
    python -m sidecar.demo_apps.tcp_app --port 8082 --listen-after 1

They live inside the `sidecar` package, not under examples/, so an installed
wheel can run `readiness-sidecar run --demo` with nothing else on the machine.
"""
