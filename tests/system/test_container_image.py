"""The Dockerfile and docker-compose.yml, built and run for real with podman.

How and why: docs/testing.md#containers-podman-buildah-runc.

A base image is made with debootstrap and `podman import` (reused if already imported),
the image is built FROM it with the real Dockerfile, and docker-compose.yml runs with
docker-compose against `podman system service`, the Prometheus profile left out (no
registry here). Needs root, podman, debootstrap and docker-compose: `require_peer`
skips without them on a laptop and fails in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_peer
from tests.system.podman_stack import (
    BASE_TAG,
    CA_BUNDLE,
    ComposeStack,
    build_image,
    check_podman_runs,
    ensure_base_image,
    http_body,
    http_status,
    parse_timestamp,
    run,
)

pytestmark = pytest.mark.run_last  # minutes, not milliseconds: after the rest of the suite

NON_ROOT = "65532"
# The warmup job sleeps this long before its marker file appears (docker-compose.yml).
WARMUP_SECONDS = 5.0
# Failure threshold 3 at the aggressive re-probe interval, after at most one steady
# period (1 s) before the first failing attempt.
UNREADY_WITHIN = 2.0
# The restarted web answers 503 for its --ready-after 3 s, plus Python start-up.
READY_AGAIN_WITHIN = 15.0
POLL = 0.02


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        require_peer(f"{', '.join(missing)} not installed (apt-get install {' '.join(missing)})")
    if os.geteuid() != 0:
        require_peer("podman images from debootstrap need root")


def _report(config: pytest.Config, phase: str, seconds: float) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[container image] {phase}: {seconds:.1f}s")


@pytest.fixture(scope="session")
def sidecar_image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    _require("podman", "debootstrap", "tar")
    timings: dict[str, float] = {}
    base = ensure_base_image(tmp_path_factory.mktemp("base-image"), timings)
    for phase, seconds in timings.items() or {"base image reused": 0.0}.items():
        _report(request.config, phase, seconds)
    check_podman_runs(base)
    started = time.monotonic()
    image = build_image(base)
    _report(request.config, "podman build", time.monotonic() - started)
    return image


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, sidecar_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStack]:
    _require("docker-compose")
    with ComposeStack.up(sidecar_image, tmp_path_factory.mktemp("compose")) as stack:
        for phase, seconds in stack.timings.items():
            _report(request.config, phase, seconds)
        _report(request.config, "compose up -> sidecar 'pod: ready'",
                (_pod_ready_at(stack) - stack.up_started).total_seconds())
        yield stack


def _pod_ready_at(stack: ComposeStack) -> datetime:
    ready_lines = [line for line in stack.logs("sidecar") if line.endswith(" pod: ready")]
    assert ready_lines, "the sidecar never logged 'pod: ready':\n" + "\n".join(stack.logs("sidecar"))
    return parse_timestamp(ready_lines[0])


def _compose_config(*args: str) -> dict[str, object]:
    done = run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), *args, "config"], timeout=60,
               env={k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))})
    doc = yaml.safe_load(done.stdout)
    assert isinstance(doc, dict)
    return doc


def test_compose_file_validates_offline_with_prometheus_only_in_its_profile() -> None:
    # docker-compose 1.29's `config` prints profiled services too; `up` leaves them out.
    _require("docker-compose")
    run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"], timeout=60)
    services = _compose_config()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"sidecar", "web", "grpc", "tcp", "warmup", "app", "prometheus"}
    profiled = {name: svc.get("profiles") for name, svc in services.items() if svc.get("profiles")}
    assert profiled == {"prometheus": ["prometheus"]}


def test_every_published_port_is_bound_to_loopback() -> None:
    _require("docker-compose")
    services = _compose_config("--profile", "prometheus")["services"]
    assert isinstance(services, dict)
    published = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published, "nothing is published"
    for name, port in published:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name} publishes {port}"


def test_compose_prometheus_config_loads_the_example_alert_rules(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        require_peer("promtool not installed (apt-get install prometheus)")
    # Laid out as compose mounts them: both files side by side in /etc/prometheus.
    shutil.copy(REPO / "examples/compose/prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(REPO / "examples/prometheus/alerts.yml", tmp_path / "alerts.yml")
    done = run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], timeout=60)
    assert "1 rule files found" in done.stdout


def test_compose_up_leaves_the_prometheus_profile_out(stack: ComposeStack) -> None:
    assert stack.container_ids("prometheus") == []
    services = ("sidecar", "web", "grpc", "tcp", "warmup", "app", "prometheus")
    running = {service for service in services if stack.container_ids(service, running=True)}
    assert running == {"sidecar", "web", "grpc", "tcp", "app"}  # warmup is a job: done and exited


def test_image_runs_as_non_root(sidecar_image: str, stack: ComposeStack) -> None:
    user = run(["podman", "image", "inspect", "--format", "{{.Config.User}}", sidecar_image], timeout=30)
    assert user.stdout.strip() == f"{NON_ROOT}:{NON_ROOT}"
    uid = run(["podman", "exec", stack.container_id("sidecar"), "id", "-u"], timeout=30)
    assert uid.stdout.strip() == NON_ROOT


def test_build_ca_bundle_does_not_end_up_in_the_image(sidecar_image: str) -> None:
    if not CA_BUNDLE.is_file():
        pytest.skip(f"no CA bundle at {CA_BUNDLE}: the build ran without the secret")
    env = run(["podman", "image", "inspect", "--format", "{{json .Config.Env}}", sidecar_image], timeout=30)
    assert "cabundle" not in env.stdout and "PIP_CERT" not in env.stdout
    assert "SSL_CERT_FILE" not in env.stdout
    look = run(["podman", "run", "--rm", "--network", "none", "--entrypoint", "find", sidecar_image,
                "/", "-xdev", "-name", "*cabundle*"], timeout=60, check=False)
    assert look.stdout.strip() == ""


def test_image_healthcheck_asks_the_sidecars_own_healthz_and_passes(sidecar_image: str) -> None:
    test = run(["podman", "image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", sidecar_image],
               timeout=30)
    assert json.loads(test.stdout) == [
        "CMD", "readiness-sidecar", "check", "--probe", "self=http://127.0.0.1:8550/healthz"]
    name = f"rstest-healthcheck-{os.getpid()}"
    run(["podman", "run", "-d", "--name", name, "--network", "none", sidecar_image,
         "run", "--probe", "self=tcp://127.0.0.1:8550"], timeout=60)
    try:
        deadline = time.monotonic() + 20
        while (result := run(["podman", "healthcheck", "run", name], timeout=30, check=False)).returncode != 0:
            assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {result.stdout}{result.stderr}"
            time.sleep(0.2)
        status = run(["podman", "inspect", "--format", "{{.State.Health.Status}}", name], timeout=30)
        assert status.stdout.strip() == "healthy"
    finally:
        run(["podman", "rm", "-f", "-t", "0", name], timeout=60, check=False)


def test_compose_healthcheck_is_the_aggregated_readiness_and_passes(stack: ComposeStack) -> None:
    sidecar = stack.inspect("sidecar")
    config = sidecar["Config"]
    assert isinstance(config, dict)
    assert "ready=http://127.0.0.1:8550/ready" in config["Healthcheck"]["Test"]
    assert http_status(stack.ready_url) == 200
    run(["podman", "healthcheck", "run", stack.container_id("sidecar")], timeout=30)


def test_app_starts_only_after_the_sidecar_reports_ready(stack: ComposeStack) -> None:
    sidecar_state, app_state = stack.inspect("sidecar")["State"], stack.inspect("app")["State"]
    assert isinstance(sidecar_state, dict) and isinstance(app_state, dict)
    sidecar_started = parse_timestamp(sidecar_state["StartedAt"])
    app_started = parse_timestamp(app_state["StartedAt"])
    pod_ready = _pod_ready_at(stack)
    # Not ready before the warmup job's marker file exists: the ordering below means something.
    assert (pod_ready - sidecar_started).total_seconds() >= WARMUP_SECONDS - 1
    assert app_started > pod_ready, f"app started {app_started}, the pod was ready only at {pod_ready}"


def _wait_for_status(url: str, want: int, within: float) -> float:
    started = time.monotonic()
    while (status := http_status(url, timeout=1.0)) != want:
        assert time.monotonic() - started < within, f"{url} still {status} after {within}s, wanted {want}"
        time.sleep(POLL)
    return time.monotonic() - started


def test_stopping_the_http_demo_turns_ready_503_and_starting_it_turns_it_back(
    request: pytest.FixtureRequest, stack: ComposeStack
) -> None:
    _wait_for_status(stack.ready_url, 200, within=READY_AGAIN_WITHIN)
    web = stack.container_id("web")
    run(["podman", "stop", "-t", "2", web], timeout=30)
    took = _wait_for_status(stack.ready_url, 503, within=UNREADY_WITHIN)
    body = json.loads(http_body(stack.ready_url))
    assert not body["containers"]["web"]["ready"], body
    assert all(c["ready"] for name, c in body["containers"].items() if name != "web"), body
    _report(request.config, "web stopped -> /ready 503", took)
    run(["podman", "start", web], timeout=30)
    back = _wait_for_status(stack.ready_url, 200, within=READY_AGAIN_WITHIN)
    _report(request.config, "web started -> /ready 200", back)


# What the image adds to its base: the venv (~45 MB) and tini. apt's lists and caches, left behind,
# would add 75 MB more.
MAX_ADDED_MB = 60


def _image_bytes(image: str) -> int:
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", image], timeout=30).stdout)


def test_image_adds_little_over_its_base(sidecar_image: str) -> None:
    added = _image_bytes(sidecar_image) - _image_bytes(BASE_TAG)
    assert 0 < added < MAX_ADDED_MB * 1_000_000, f"the image adds {added / 1e6:.0f} MB to {BASE_TAG}"


# -- tini as PID 1 -----------------------------------------------------------------------------

# The probe's setsid'd `sleep` escapes the process-group kill that ends each attempt (the `sleep 0.2`
# in front gives it time to leave the group first) and is orphaned when `sh` exits, so the kernel
# hands it to PID 1 (or the nearest subreaper) and, once it exits, only that process can reap it
# (kernel/exit.c, find_new_reaper).
ORPHAN_SECONDS = 1
ORPHAN_PROBE = f'orphans=exec:sh -c "setsid sleep {ORPHAN_SECONDS} >/dev/null 2>&1 & sleep 0.2";period=1s'
WATCH_ORPHANS_FOR = 6.0  # seconds: several orphans are made, and several have exited


def _processes(container: str) -> dict[int, tuple[str, str, int]]:
    """pid -> (comm, state, ppid) of every process in the container, from /proc (no ps in the image)."""
    script = 'for f in /proc/[0-9]*/stat; do cat "$f" 2>/dev/null && echo; done; true'
    done = run(["podman", "exec", container, "sh", "-c", script], timeout=30)
    found: dict[int, tuple[str, str, int]] = {}
    for line in filter(None, done.stdout.splitlines()):
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ") ".
        pid, rest = line.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        state, ppid = fields.split()[:2]
        found[int(pid)] = (comm, state, int(ppid))
    return found


def test_tini_is_pid_1_and_reaps_the_orphans_of_exec_probes(sidecar_image: str) -> None:
    entrypoint = run(["podman", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", sidecar_image],
                     timeout=30)  # fmt: skip
    assert json.loads(entrypoint.stdout) == ["/usr/bin/tini", "-s", "--", "readiness-sidecar"]
    name = f"rstest-tini-{os.getpid()}"
    run(["podman", "run", "-d", "--name", name, "--network", "none", sidecar_image,
         "run", "--drain-seconds", "0", "--probe", ORPHAN_PROBE], timeout=60)  # fmt: skip
    try:
        orphans: set[int] = set()
        deadline = time.monotonic() + WATCH_ORPHANS_FOR
        while time.monotonic() < deadline:
            processes = _processes(name)
            orphans |= {pid for pid, (comm, _, ppid) in processes.items() if comm == "sleep" and ppid == 1}
            time.sleep(0.3)
        processes = _processes(name)
        assert processes[1][0] == "tini"
        [sidecar] = [pid for pid, (comm, _, _) in processes.items() if comm.startswith("readiness-sid")]
        assert processes[sidecar][2] == 1, "the sidecar is tini's child, not PID 1"
        assert len(orphans) >= 2, f"the probe left no orphans to reap: {processes}"
        gone = orphans - set(processes)
        assert len(gone) >= 2, f"orphans {sorted(orphans)} never exited: {processes}"
        zombies = {pid: p for pid, p in processes.items() if p[1] == "Z"}
        assert zombies == {}, f"unreaped: {zombies}"
        # tini passes SIGTERM on; the sidecar drains (0 s here) and its exit code is the container's.
        run(["podman", "stop", "-t", "10", name], timeout=30)
        state = run(["podman", "inspect", "--format", "{{.State.ExitCode}}", name], timeout=30)
        assert state.stdout.strip() == "0", run(["podman", "logs", name], timeout=30, check=False).stderr
    finally:
        run(["podman", "rm", "-f", "-t", "0", name], timeout=60, check=False)
