"""`readiness-sidecar webhook` as a service: its logs, its metrics and its env vars, on a real subprocess over TLS.

The reviews are real HTTPS POSTs (a trustme CA); the metrics are a real scrape, parsed by prometheus_client's
own text parser.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.cli.parser import WEBHOOK_FLAGS
from sidecar.cli.webhook import env_name
from sidecar.k8s.tls_reload import TlsFiles
from sidecar.k8s.webhook import MAX_REVIEW_BYTES
from tests.conftest import REPO, require_peer, sidecar_cmd
from tests.k8s.test_webhook import admission_review, ca, client_tls, peer_pod, tls_files

__all__ = ["ca", "client_tls", "tls_files"]  # fixtures, shared with test_webhook.py

_TEXT_LISTENING = re.compile(
    r"webhook listening on https://127\.0\.0\.1:(\d+) .*?(?:metrics on http://127\.0\.0\.1:(\d+))?,"
)
START_WITHIN = 15.0


@dataclass
class Webhook:
    proc: asyncio.subprocess.Process
    port: int
    metrics_port: int | None
    log: list[str] = field(default_factory=list)

    async def stop(self) -> list[str]:
        """SIGTERM, wait for exit 0, and the whole log."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        async with asyncio.timeout(10):
            rest = (await self.proc.stderr.read()).decode()
            code = await self.proc.wait()
        self.log.extend(rest.splitlines())
        assert code == 0, "\n".join(self.log)
        assert not any("Traceback" in line for line in self.log), "\n".join(self.log)
        return self.log


@asynccontextmanager
async def webhook(args: list[str], env: dict[str, str]) -> AsyncIterator[Webhook]:
    """The webhook as a subprocess, once it logs that it listens (text or JSON)."""
    proc = await asyncio.create_subprocess_exec(
        *sidecar_cmd("webhook", *args), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(START_WITHIN):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "webhook exited early:\n" + "".join(log)
                log.append(line.rstrip("\n"))
                if line.startswith("{"):
                    fields = json.loads(line)
                    if "webhook listening" in fields["msg"]:
                        ports = fields["port"], fields["metrics_port"]
                        break
                elif match := _TEXT_LISTENING.search(line):
                    ports = int(match[1]), int(match[2]) if match[2] else None
                    break
        yield Webhook(proc, ports[0], ports[1], log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def tls_args(files: TlsFiles) -> list[str]:
    return ["--bind", "127.0.0.1", "--port", "0", "--cert", files.cert, "--key", files.key]


async def review(session: aiohttp.ClientSession, port: int, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(f"https://127.0.0.1:{port}/mutate", data=data) as resp:
        return resp.status, (await resp.json() if resp.status == 200 else {})


def patch_ops(response: dict[str, Any]) -> int:
    return len(json.loads(base64.b64decode(response["patch"]))) if "patch" in response else 0


def exposition(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")  # CONTENT_TYPE_LATEST
        return str(resp.read().decode())


def scrape(port: int) -> dict[str, float]:
    """Every sample of GET /metrics, by name and labels: `name{label="v"}`."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition(port)):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def promtool_problems(text: str) -> str:
    """What `promtool check metrics` says of an exposition ("" if nothing); a peer, as in test_prometheus_real."""
    if (promtool := shutil.which("promtool")) is None:
        require_peer("promtool not installed (apt-get install prometheus)")
        return ""
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    said = lint.stdout + lint.stderr
    return f"exit {lint.returncode}: {said}" if lint.returncode or said else ""


# -- the four results, their log lines and their metrics ----------------------------------------


def four_reviews() -> dict[str, dict[str, Any]]:
    """One review per result: injected, skipped (opted out), denied (a bad annotation), error (not a pod)."""
    pod = peer_pod()
    opted_out = copy.deepcopy(pod)
    opted_out["metadata"]["annotations"] = {"readiness-sidecar.io/inject": "false"}
    bad_annotation = copy.deepcopy(pod)
    bad_annotation["metadata"]["annotations"] = {"readiness-sidecar.io/health-port": "http"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    return {
        "injected": admission_review(pod, uid="u-injected"),
        "skipped": admission_review(opted_out, uid="u-skipped"),
        "denied": admission_review(bad_annotation, uid="u-denied"),
        "error": admission_review(deployment, uid="u-error",
                                  gvk={"group": "apps", "version": "v1", "kind": "Deployment"}),
    }  # fmt: skip


async def test_json_logs_one_line_per_review_with_its_fields_and_metrics_count_them(
    tls_files: TlsFiles, client_tls: Any, sidecar_env: dict[str, str]
) -> None:
    args = [*tls_args(tls_files), "--metrics-port", "0", "--log-format", "json", "--image", "registry.example/rs:9"]
    async with webhook(args, sidecar_env) as hook:
        assert hook.metrics_port is not None
        before = scrape(hook.metrics_port)
        sent_ops = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
            for result, body in four_reviews().items():
                status, answer = await review(session, hook.port, body)
                assert status == 200
                assert answer["response"]["allowed"] is (result != "denied")
                sent_ops += patch_ops(answer["response"])
            status, _ = await review(session, hook.port, b"x" * (MAX_REVIEW_BYTES + 1))
            assert status == 413
        after = scrape(hook.metrics_port)
        text = exposition(hook.metrics_port)
        log = await hook.stop()

    records = [json.loads(line) for line in log]  # every line is JSON, the start-up and stop lines too
    assert {r["level"] for r in records} <= {"info", "warning"}
    reviews = {r["uid"]: r for r in records if r["msg"].startswith("admission ")}
    assert set(reviews) == {"u-injected", "u-skipped", "u-denied", "u-error"}
    for result in ("injected", "skipped", "denied", "error"):
        line = reviews[f"u-{result}"]
        assert line["result"] == result
        assert line["pod"] == ("?" if result == "error" else "shop/goproxy")  # a Deployment is no pod
        assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 5000
    assert reviews["u-injected"]["patch_ops"] == sent_ops > 0
    assert reviews["u-error"]["error"] == "not_a_pod"
    assert all(reviews[f"u-{r}"]["patch_ops"] == 0 for r in ("skipped", "denied", "error"))

    for result in ("injected", "skipped", "denied", "error"):
        assert before[f'readiness_webhook_reviews_total{{result="{result}"}}'] == 0  # present from the start
        assert after[f'readiness_webhook_reviews_total{{result="{result}"}}'] == 1
    assert after["readiness_webhook_patch_operations_total"] == sent_ops
    assert after['readiness_webhook_errors_total{kind="not_a_pod"}'] == 1
    assert after['readiness_webhook_errors_total{kind="too_large"}'] == 1
    assert after['readiness_webhook_errors_total{kind="internal"}'] == 0
    assert after["readiness_webhook_review_duration_seconds_count"] == 4  # the 413 built no review
    assert after['readiness_webhook_review_duration_seconds_bucket{le="+Inf"}'] == 4
    assert 0 < after["readiness_webhook_review_duration_seconds_sum"] < 20
    assert not [name for name in after if "_created" in name]
    # Prometheus's own linter: HELP and TYPE, counter names, histogram buckets.
    assert await asyncio.to_thread(promtool_problems, text) == ""


async def test_log_level_warning_leaves_the_review_lines_out(
    tls_files: TlsFiles, client_tls: Any, sidecar_env: dict[str, str]
) -> None:
    async with webhook([*tls_args(tls_files), "--metrics-port", "off"], sidecar_env) as hook:
        pass  # text, info: the listening line was read
    assert hook.metrics_port is None
    args = [*tls_args(tls_files), "--metrics-port", "off", "--log-level", "warning", "--log-format", "json"]
    env = {**sidecar_env, env_name("--log-level"): "error"}  # the flag wins
    proc = await asyncio.create_subprocess_exec(
        *sidecar_cmd("webhook", *args), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(START_WITHIN):
            first = json.loads(await proc.stderr.readline())
        # Nothing at info, so the first line is the default image's warning (no --image).
        assert first["level"] == "warning" and "image" in first["msg"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = (await proc.stderr.read()).decode()
        assert await proc.wait() == 0
    assert rest == ""  # "webhook stopping" is info


# -- env vars -----------------------------------------------------------------------------------


async def test_every_flag_can_come_from_env_and_a_flag_beats_its_env_var(
    tls_files: TlsFiles, client_tls: Any, sidecar_env: dict[str, str]
) -> None:
    env = {
        **sidecar_env,
        env_name("--bind"): "127.0.0.1", env_name("--port"): "0", env_name("--metrics-port"): "0",
        env_name("--cert"): tls_files.cert, env_name("--key"): tls_files.key, env_name("--log-format"): "json",
        env_name("--log-level"): "info", env_name("--image"): "registry.example/from-env:1",
        env_name("--exec-probes"): "sidecar", env_name("--native-sidecar"): "true",
        env_name("--rewrite-liveness"): "false",
    }  # fmt: skip
    async with webhook([], env) as hook:
        assert hook.metrics_port is not None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
            _, answer = await review(session, hook.port, admission_review(peer_pod(), uid="env"))
        assert scrape(hook.metrics_port)['readiness_webhook_reviews_total{result="injected"}'] == 1
        await hook.stop()
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    added = json.dumps(patch)
    assert "registry.example/from-env:1" in added
    assert '"restartPolicy": "Always"' in added  # --native-sidecar from env: an init container
    assert all(line.startswith("{") for line in hook.log)

    # Flags over the same env: text logs, another image, no metrics port.
    flags = [*tls_args(tls_files), "--log-format", "text", "--image", "registry.example/from-flag:2",
             "--metrics-port", "off"]  # fmt: skip
    async with webhook(flags, env) as hook:
        assert hook.metrics_port is None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
            _, answer = await review(session, hook.port, admission_review(peer_pod(), uid="flag"))
        await hook.stop()
    assert "registry.example/from-flag:2" in base64.b64decode(answer["response"]["patch"]).decode()
    assert not any(line.startswith("{") for line in hook.log)
    assert any("admission uid=flag pod=shop/goproxy: injected (" in line for line in hook.log)


def test_every_webhook_flag_names_its_env_var_in_help(sidecar_env: dict[str, str]) -> None:
    done = subprocess.run(sidecar_cmd("webhook", "--help"), capture_output=True, text=True, env=sidecar_env,
                          cwd=REPO, timeout=20)  # fmt: skip
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for flag in [*WEBHOOK_FLAGS, "--image", "--exec-probes", "--native-sidecar", "--rewrite-liveness"]:
        assert env_name(flag) in text.replace("[env ", "").replace("]", ""), flag


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--port", "https", "port 'https' is not a number"),
        ("--port", "70000", "port 70000 out of range 0-65535"),
        ("--metrics-port", "later", "port 'later' is not a number or 'off'"),
        ("--log-format", "xml", "log format 'xml' must be one of text, json"),
        ("--log-level", "loud", "log level 'loud' must be one of debug, info, warning, error"),
        ("--exec-probes", "both", "exec probe mode 'both' must be one of"),
        ("--native-sidecar", "maybe", "'maybe' is not a boolean"),
        ("--bind", " ", "empty"),
    ],
)
def test_a_bad_env_value_is_one_line_naming_the_env_var_and_exit_2(
    tls_files: TlsFiles, sidecar_env: dict[str, str], flag: str, value: str, problem: str
) -> None:
    env = {**sidecar_env, env_name("--cert"): tls_files.cert, env_name("--key"): tls_files.key, env_name(flag): value}
    done = subprocess.run(sidecar_cmd("webhook"), capture_output=True, text=True, env=env, cwd=REPO, timeout=20,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"{env_name(flag)}: {problem}"), line
    assert done.stdout == ""


def test_a_bad_flag_value_names_the_flag(tls_files: TlsFiles, sidecar_env: dict[str, str]) -> None:
    env = {**sidecar_env, env_name("--port"): "8443"}  # fine, but the flag wins and is wrong
    done = subprocess.run(sidecar_cmd("webhook", *tls_args(tls_files)[:2], "--port", "x", "--cert", tls_files.cert,
                                      "--key", tls_files.key), capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=20, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["--port: port 'x' is not a number"]


@pytest.mark.parametrize("missing", ["--cert", "--key"])
def test_cert_and_key_are_required_from_a_flag_or_env(
    tls_files: TlsFiles, sidecar_env: dict[str, str], missing: str
) -> None:
    given = {"--cert": tls_files.cert, "--key": tls_files.key}
    del given[missing]
    args = [arg for flag, path in given.items() for arg in (flag, path)]
    done = subprocess.run(sidecar_cmd("webhook", *args), capture_output=True, text=True, env=sidecar_env, cwd=REPO,
                          timeout=20, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{missing}: required (or set {env_name(missing)})"]


def test_a_metrics_port_in_use_is_one_line_naming_the_flag(tls_files: TlsFiles, sidecar_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(sidecar_cmd("webhook", *tls_args(tls_files), "--metrics-port", str(port)),
                              capture_output=True, text=True, env=sidecar_env, cwd=REPO, timeout=20,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    expected = f"--bind 127.0.0.1 --metrics-port {port}: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert line == expected, done.stderr
    assert "Traceback" not in done.stderr


# -- the latency benchmark (docs/performance.md#the-admission-webhook) ---------------------------


def test_latency_benchmark_runs_and_its_pod_is_injected(sidecar_env: dict[str, str]) -> None:
    from benchmarks.webhook_latency import CONTAINERS, deployment_pod

    pod = deployment_pod()
    assert len(pod["spec"]["containers"]) == CONTAINERS == 10
    done = subprocess.run([sys.executable, "-m", "benchmarks.webhook_latency", "--rounds", "1", "--reviews", "5"],
                          capture_output=True, text=True, env=sidecar_env, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:3] for line in done.stdout.splitlines()[1:]]
    expected = [[*load.split(), mode] for load in ("same pod", "distinct pods") for mode in ("sequential", "16")]
    assert rows == expected, done.stdout  # it raises if an answer comes without a patch
