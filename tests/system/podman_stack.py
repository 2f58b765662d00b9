"""Podman plumbing for tests/system/test_container_image.py: base image, image build, compose stack.

    base = ensure_base_image(workdir, timings)         # debootstrap + podman import, or reuse the tag
    image = build_image(base)                          # the real Dockerfile, FROM that base
    with ComposeStack.up(image, workdir) as stack:     # docker-compose against `podman system service`
        stack.container_id("web")

No image registry is reachable here (docs/testing.md#containers-podman-buildah-runc): the base is made locally, and the
compose file is run with --no-build against the image built from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import REPO

BASE_TAG = "localhost/readiness-sidecar-test-base:bookworm"
IMAGE_TAG = "localhost/readiness-sidecar:test"
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,ca-certificates"
# Host CA bundle for pip inside the build: TLS is intercepted on these machines.
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
COMPOSE_FILE = REPO / "docker-compose.yml"
# Ports the compose file publishes, by the variable that picks each one's host side.
PORT_VARIABLES = ("SIDECAR_HEALTH_PORT", "SIDECAR_GRPC_PORT", "SIDECAR_METRICS_PORT", "WEB_PORT")
# podman runs healthchecks from systemd timers; with no systemd (containers, CI
# sandboxes) nothing does, so the stack plays the timer at this interval.
HEALTHCHECK_EVERY = 0.5
UP_TIMEOUT = 120.0

_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 with nanoseconds (podman's), cut to the microseconds datetime holds."""
    match = _TIMESTAMP.search(text)
    if match is None:
        raise ValueError(f"no timestamp in {text!r}")
    fraction = (match[2] or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{match[1]}.{fraction}{match[3]}")


def ensure_base_image(workdir: Path, timings: dict[str, float]) -> str:
    """A Debian bookworm base with python3, made by debootstrap unless already imported."""
    if run(["podman", "image", "exists", BASE_TAG], timeout=30, check=False).returncode == 0:
        return BASE_TAG
    root = workdir / "rootfs"
    started = time.monotonic()
    run(["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}", "bookworm", str(root)],
        timeout=600)
    timings["debootstrap"] = time.monotonic() - started
    started = time.monotonic()
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(["podman", "import", "-", BASE_TAG], stdin=tar.stdout,
                                  capture_output=True, text=True, timeout=300, check=False)
    shutil.rmtree(root, ignore_errors=True)
    if imported.returncode != 0 or tar.returncode != 0:
        raise AssertionError(f"podman import failed:\n{imported.stderr}")
    timings["podman import"] = time.monotonic() - started
    return BASE_TAG


def check_podman_runs(image: str) -> None:
    done = run(["podman", "run", "--rm", "--network", "none", image, "true"], timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(
            "podman cannot run a container; on these machines it needs containers.conf with "
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"] and runtime = "runc" '
            f"(.ci/run writes it):\n{done.stderr}"
        )


def _image_id(ref: str) -> str | None:
    done = run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], timeout=30, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def build_image(base: str) -> str:
    previous = _image_id(IMAGE_TAG)
    # --layers=false: no cached stage images left behind. CI changes the source on every
    # run anyway, so the cache would only pile up images on a long-lived machine.
    cmd = ["podman", "build", "--layers=false", "--format", "docker", "--build-arg", f"BASE_IMAGE={base}",
           "-t", IMAGE_TAG]
    if CA_BUNDLE.is_file():
        cmd += ["--secret", f"id=cabundle,src={CA_BUNDLE}"]
    run([*cmd, "-f", str(REPO / "Dockerfile"), str(REPO)], timeout=600)
    if previous is not None and previous != _image_id(IMAGE_TAG):
        # The last run's image, now untagged: drop it rather than pile them up.
        run(["podman", "rmi", previous], timeout=60, check=False)
    return IMAGE_TAG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0  # nothing listening yet, or the connection was dropped


def http_body(url: str, timeout: float = 2.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as err:
        return bytes(err.read())


@contextlib.contextmanager
def podman_service(workdir: Path) -> Iterator[str]:
    """`podman system service` on a socket of our own: the Docker API docker-compose talks to."""
    sock = workdir / "podman.sock"
    log = (workdir / "podman-service.log").open("w")
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _accepts(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (workdir / "podman-service.log").read_text()
                raise AssertionError(f"podman system service did not start: {log_text}")
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


@dataclass
class ComposeStack:
    project: str
    env: dict[str, str]
    ports: dict[str, int]
    up_started: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['SIDECAR_HEALTH_PORT']}/ready"

    def compose(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        return run(cmd, timeout=timeout, env=self.env, check=check)

    def container_ids(self, service: str | None = None, *, running: bool = False) -> list[str]:
        cmd = ["podman", "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        if not running:
            cmd.append("-a")
        return run(cmd, timeout=30).stdout.split()

    def container_id(self, service: str) -> str:
        ids = self.container_ids(service)
        assert len(ids) == 1, f"service {service}: containers {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, object]:
        doc = json.loads(run(["podman", "inspect", self.container_id(service)], timeout=30).stdout)
        assert isinstance(doc, list)
        return dict(doc[0])

    def logs(self, service: str) -> list[str]:
        done = run(["podman", "logs", "--timestamps", self.container_id(service)], timeout=30)
        return (done.stdout + done.stderr).splitlines()

    def sidecar_log(self) -> str:
        ids = self.container_ids("sidecar")
        return "\n".join(self.logs("sidecar")) if len(ids) == 1 else f"(sidecar containers: {ids})"

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        networks = run(["podman", "network", "ls", "-q", "--filter", label], timeout=30).stdout.split()
        volumes = run(["podman", "volume", "ls", "-q", "--filter", label], timeout=30).stdout.split()
        return [*self.container_ids(), *networks, *volumes]

    def down(self) -> list[str]:
        """Tear down; return what `down` left, after force-removing it."""
        for _ in range(3):
            # podman refuses to remove the sidecar while containers that share its network
            # namespace exist, and docker-compose removes them all at once: go again.
            self.compose("down", "-v", "-t", "5", "--remove-orphans", timeout=120, check=False)
            if not self.leftovers():
                return []
        left = self.leftovers()
        label = f"label=com.docker.compose.project={self.project}"
        for kind in ("container", "network", "volume"):
            ids = run(["podman", kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter", label],
                      timeout=30, check=False).stdout.split()
            if ids:
                run(["podman", kind, "rm", "-f", *ids], timeout=60, check=False)
        return left

    @classmethod
    @contextlib.contextmanager
    def up(cls, image: str, workdir: Path) -> Iterator[ComposeStack]:
        with podman_service(workdir) as docker_host:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
            ports = {name: free_port() for name in PORT_VARIABLES}
            env.update({name: str(port) for name, port in ports.items()})
            env.update(DOCKER_HOST=docker_host, READINESS_SIDECAR_IMAGE=image)
            stack = cls(f"rstest{os.getpid()}", env, ports)
            stop = threading.Event()
            timer = threading.Thread(target=stack._play_healthcheck_timer, args=(stop,), daemon=True)
            timer.start()
            try:
                started, stack.up_started = time.monotonic(), datetime.now(UTC)
                try:
                    stack.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT)
                except (AssertionError, subprocess.TimeoutExpired) as err:
                    raise AssertionError(f"{err}\n--- sidecar log:\n{stack.sidecar_log()}") from None
                stack.timings["compose up (returns once app started)"] = time.monotonic() - started
                yield stack
            finally:
                stop.set()
                timer.join(timeout=30)
                left = stack.down()
            # Reached only when the tests themselves passed, so it never hides their error.
            assert not left, f"docker-compose down left containers/networks/volumes behind: {left}"

    def _play_healthcheck_timer(self, stop: threading.Event) -> None:
        while not stop.wait(HEALTHCHECK_EVERY):
            with contextlib.suppress(subprocess.SubprocessError, AssertionError):
                for cid in self.container_ids("sidecar", running=True):
                    run(["podman", "healthcheck", "run", cid], timeout=30, check=False)
