"""`run --demo`: a target of every probe type, as child processes, and the config to watch them.

    launcher    start_demo: start the apps, return their config; Demo.close stops them
    http_app    an HTTP app whose /healthz turns 200 after a delay   (python -m sidecar.demo.http_app)
    grpc_app    a gRPC health server that flips SERVING/NOT_SERVING  (python -m sidecar.demo.grpc_app)
    tcp_app     a TCP listener that starts listening after a delay   (python -m sidecar.demo.tcp_app)
    lifecycle   what the three apps share: flags, the PORT line, stopping

The apps live inside the `sidecar` package, not under examples/, so an installed wheel
can run `readiness-sidecar run --demo` with nothing else on the machine. They are
programs of their own (each parses its flags and prints its port); the launcher only
builds a SidecarConfig from `sidecar.model`.
"""
