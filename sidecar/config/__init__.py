"""Config: text (flags, files, manifests, env vars) to a validated `SidecarConfig`, and back.

    loader       load_config: every source, merged by container name
    documents    YAML/JSON documents from a file, stdin or a string, and written back
    pod_template the pod templates in a manifest and the containers the sidecar watches
    containers   container fragments to ContainerSpecs
    probe        one corev1.Probe to a handler and its timing; what a port can refer to
    schema       the Kubernetes shapes, as msgspec Structs
    encode       ContainerSpecs back to the containers-file schema (what inject writes)
    quick_probe  the --probe NAME=SPEC flag
    names        container names, and Knative's names for unnamed ones
    wire_text    what text a probe can put on the wire

Nothing here runs a probe or opens a port: config imports only `probes.spec` and the
shared leaves (`sidecar.model`, `sidecar.errors`, `sidecar.contract`, `sidecar.durations`).
"""
