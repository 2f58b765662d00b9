"""Kubernetes: getting the sidecar into pods, and checking pods before it gets there.

    inject             inject_object: add the sidecar to every pod template of a manifest
    options            InjectOptions: what inject and the webhook are asked to do
    sidecar_container  the container inject adds: ports, probes, resources, security
    sidecar_image      what an exec probe can run inside the sidecar's image
    lint               lint_documents: every probe of every container, every finding
    lint_container     the rules that look at one container
    lint_rules         the rule IDs, severities and the Finding type
    lint_sarif         findings as SARIF 2.1.0, for code-scanning UIs
    admission          AdmissionReview in, AdmissionReview out (no I/O)
    webhook            the HTTPS server around admission
    tls_reload         the webhook's certificate, reloaded when cert-manager rotates it
    json_patch         RFC 6902 patches: the webhook's answer

k8s reads manifests through `sidecar.config` and writes what the running sidecar
expects from `sidecar.contract`; it never imports the runtime or the servers.
"""
