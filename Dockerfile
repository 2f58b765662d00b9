# readiness-sidecar: one aggregated readiness answer for every container in a pod.
#
#   docker build -t localhost/readiness-sidecar:0.1.0 .
#   podman build --format docker -t localhost/readiness-sidecar:0.1.0 .   # OCI format would drop the HEALTHCHECK
#
# Behind a TLS-intercepting proxy, give pip the proxy's CA bundle as a build secret.
# It is mounted into the pip step only and never lands in a layer of either stage:
#
#   docker build --secret id=cabundle,src=/etc/ssl/certs/ca-certificates.crt -t localhost/readiness-sidecar:0.1.0 .
#
# BASE_IMAGE needs python3 >= 3.11 with the venv module (Debian: python3-venv), and apt
# with a Debian archive that has tini (bookworm or later). Both stages start from it, so
# the venv's link to the interpreter is valid in the final one.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/readiness-sidecar
WORKDIR /src
COPY pyproject.toml README.md ./
COPY probes probes
COPY sidecar sidecar
# pip and setuptools go once the install is done: nothing at run time needs them.
RUN --mount=type=secret,id=cabundle \
    if [ -s /run/secrets/cabundle ]; then \
        export PIP_CERT=/run/secrets/cabundle SSL_CERT_FILE=/run/secrets/cabundle; \
    fi \
    && /opt/readiness-sidecar/bin/pip install /src \
    && /opt/readiness-sidecar/bin/pip uninstall -y -q pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="readiness-sidecar" \
      org.opencontainers.image.description="One aggregated readiness answer for every container in a pod" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini (Debian's) is PID 1: it reaps every orphan an exec probe leaves behind and forwards
# signals, so reaping never depends on the sidecar being PID 1. The sidecar keeps its own
# reaping for pods that start it as PID 1 without tini (a `command:` override).
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends tini >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*   # the package lists and caches: 75 MB
COPY --from=build /opt/readiness-sidecar /opt/readiness-sidecar
# The venv was byte-compiled at install time; at run time the code is read-only anyway.
ENV PATH=/opt/readiness-sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The distroless "nonroot" ids: no passwd entry needed, and none is added.
USER 65532:65532
# health (/ready, /healthz, /status), gRPC health, Prometheus /metrics
EXPOSE 8550 8551 8552
# There is no curl in the image: the sidecar's own one-shot `check` asks its /healthz.
# Liveness only; the aggregated readiness belongs to whoever consumes it (see docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["readiness-sidecar", "check", "--probe", "self=http://127.0.0.1:8550/healthz"]
# -s: where tini is not PID 1 (a shared process namespace, `docker run --init`), it registers as
# a child subreaper, so the orphans still come to it.
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "readiness-sidecar"]
CMD ["run"]
