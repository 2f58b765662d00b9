"""Latency of one AdmissionReview: a real `readiness-sidecar webhook` subprocess, over real TLS on 127.0.0.1.

    python -m benchmarks.webhook_latency                               # this checkout only
    python -m benchmarks.webhook_latency --baseline-rev 638e610        # and the ratio to that revision

The review is the CREATE of a pod of a 10-container Deployment (every container with a readiness
probe: httpGet, tcpSocket, grpc and exec in turn), as the ReplicaSet controller creates it
(generateName, no name). Two kinds of load:
- `same pod`: every review carries the same pod, as a ReplicaSet's scale-up sends them (the API
  server names a pod only after mutating admission), each with its own uid;
- `distinct pods`: every pod differs (a label of its own), as many workloads rolling out at once.
The client is this process (aiohttp, keep-alive, as the API server keeps its connections to a
webhook): `sequential` is one connection sending one review after another; `16 concurrent` is 16
connections, each sending its next review as soon as it has the answer. A sample is one POST's
round trip: request written, answer read and parsed. The installs alternate round by round, so both
see the same noise. Prints p50 / p90 / p99 in ms per install and load, the CPU each review cost the
webhook and this client (they share the machine's cores: with C clients in flight on one webhook
loop, a review waits for about C x the webhook's CPU per review), and this / baseline of p50 and p99.

    python -m benchmarks.webhook_latency --rounds 1 --profile 6    # and where this checkout's time goes

`--profile S` then attaches py-spy (pip install py-spy) to this checkout's webhook for S seconds of
16 concurrent clients per load, and prints the share of its busy samples by part: inject and the patch
(`review_reply`), the log line, TLS, and the rest (aiohttp's HTTP, the event loop, metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from benchmarks.baseline import install_revision
from benchmarks.proc_usage import cpu_seconds
from benchmarks.profile_sidecar import IDLE_LEAVES, SAMPLE_RATE, _py_spy
from benchmarks.sidecar_process import REPO, THIS_CHECKOUT, SidecarInstall, with_bytecode_cache
from benchmarks.stats import Summary, summarize

CONTAINERS = 10
CONCURRENCY = 16
HANDLERS = ("httpGet", "tcpSocket", "grpc", "exec")
START_TIMEOUT = 20.0
SAME_POD = "same pod"
DISTINCT_PODS = "distinct pods"
_LISTENING = re.compile(r"webhook listening on https://127\.0\.0\.1:(\d+) ")
# Every install is asked for nothing but what the baseline's CLI already takes.
_WEBHOOK_ARGS = ("--bind", "127.0.0.1", "--port", "0", "--image", "registry.example/readiness-sidecar:bench")


def deployment_pod(containers: int = CONTAINERS) -> dict[str, Any]:
    """The pod a ReplicaSet of a `containers`-container Deployment creates."""

    def container(i: int) -> dict[str, Any]:
        handler = HANDLERS[i % len(HANDLERS)]
        port = 8080 + i
        action: dict[str, Any] = {
            "httpGet": {"path": "/ready", "port": port},
            "tcpSocket": {"port": port},
            "grpc": {"port": port},
            "exec": {"command": ["cat", "/tmp/ready"]},
        }
        action = {handler: action[handler]}
        return {
            "name": f"app-{i}",
            "image": f"registry.example/app-{i}:1.0",
            "ports": [{"name": f"p{i}", "containerPort": port}],
            "readinessProbe": {**action, "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 10},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        }

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-7d9f8b6c5-",
            "namespace": "shop",
            "labels": {"app": "shop", "pod-template-hash": "7d9f8b6c5"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "shop-7d9f8b6c5",
                    "uid": "5d1f7c1e-0c1a-4a7b-9d1e-2f3c4b5a6d7e",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [container(i) for i in range(containers)], "restartPolicy": "Always"},
    }


def admission_review(pod: dict[str, Any], uid: str) -> bytes:
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    request = {"uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr, "name": "",
               "namespace": "shop", "operation": "CREATE", "object": pod, "oldObject": None, "dryRun": False,
               "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}}  # fmt: skip
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


@asynccontextmanager
async def webhook(install: SidecarInstall, cert: Path, key: Path) -> AsyncIterator[tuple[int, int]]:
    """The install's webhook, serving; its port and pid."""
    # Metrics on (as deployed), on a free port; a revision without them ignores the env var.
    env = {**install.environment(), "READINESS_SIDECAR_WEBHOOK_METRICS_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        install.python, "-m", "sidecar", "webhook", *_WEBHOOK_ARGS, "--cert", str(cert), "--key", str(key),
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not (match := _LISTENING.search(line := (await proc.stderr.readline()).decode())):
                if not line:
                    raise RuntimeError(f"{install.label}: the webhook exited before listening")
        drain = asyncio.create_task(_discard(proc.stderr))  # one log line per review: keep the pipe empty
        yield int(match[1]), proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        if drain is not None:
            drain.cancel()


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass


async def _client(session: aiohttp.ClientSession, url: str, bodies: list[bytes], samples: list[float]) -> None:
    for body in bodies:
        started = time.perf_counter()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.json()
        samples.append(time.perf_counter() - started)
        if resp.status != 200 or "patch" not in answer["response"]:
            raise RuntimeError(f"no patch in the answer: {resp.status} {str(answer)[:200]}")


def review_bodies(load: str, clients: int, reviews: int, tag: str) -> list[list[bytes]]:
    """`reviews` bodies per client: one pod throughout (SAME_POD), or a pod of its own in each (DISTINCT_PODS)."""
    pod = deployment_pod()
    bodies = []
    for c in range(clients):
        mine = []
        for r in range(reviews):
            uid = f"{tag}-c{c}-r{r}"
            if load == DISTINCT_PODS:
                pod = deployment_pod()
                pod["metadata"]["labels"]["review"] = uid
            mine.append(admission_review(pod, uid))
        bodies.append(mine)
    return bodies


@dataclass
class Cost:
    """CPU seconds spent, by the webhook and by this client, over `reviews` reviews."""

    webhook: float = 0.0
    client: float = 0.0
    reviews: int = 0

    def per_review_ms(self) -> tuple[float, float]:
        return self.webhook / self.reviews * 1000, self.client / self.reviews * 1000


async def measure_round(
    port: int, pid: int, tls: ssl.SSLContext, load: str, clients: int, reviews: int, cost: Cost
) -> list[float]:
    """`reviews` per client, each client on its own keep-alive connection; one round trip per sample."""
    url = f"https://127.0.0.1:{port}/mutate"
    samples: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=clients)) as session:
        warm_up = [body for mine in review_bodies(load, clients, 1, "warm-up") for body in mine]
        await asyncio.gather(*(_client(session, url, [body], []) for body in warm_up))  # handshakes, untimed
        bodies = review_bodies(load, clients, reviews, f"{load}-{clients}")
        webhook_before, client_before = cpu_seconds(pid), time.process_time()
        await asyncio.gather(*(_client(session, url, mine, samples) for mine in bodies))
        cost.webhook += cpu_seconds(pid) - webhook_before
        cost.client += time.process_time() - client_before
        cost.reviews += len(samples)
    return samples


Key = tuple[str, str, str]  # install, load, clients

# The parts of the webhook's time --profile tells apart: the first part whose frame is on a sample's stack.
PROFILE_PARTS = (
    ("inject and the patch", ("review_reply (",)),
    ("the log line", ("WebhookServer._log (",)),
    ("TLS", ("SSLProtocol.", "SSLObject.", "_SSLProtocolTransport.")),
)
OTHER_PART = "HTTP, loop, metrics"


def profile_parts(raw: str) -> dict[str, float]:
    """Percent of the busy main-thread samples of a py-spy raw profile, by PROFILE_PARTS."""
    counts = dict.fromkeys([*(name for name, _ in PROFILE_PARTS), OTHER_PART], 0)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("_run_module_as_main") or frames[-1].startswith(IDLE_LEAVES):
            continue
        part = next((name for name, marks in PROFILE_PARTS if any(f.startswith(marks) for f in frames)), OTHER_PART)
        counts[part] += int(count_text)
    busy = sum(counts.values()) or 1
    return {name: 100.0 * n / busy for name, n in counts.items()}


async def profile(install: SidecarInstall, cert: Path, key: Path, tls: ssl.SSLContext, seconds: float) -> str:
    """Where the webhook's time goes, by PROFILE_PARTS, with 16 concurrent clients of each load."""
    lines = [f"where the webhook's busy time goes, {CONCURRENCY} concurrent clients, py-spy {seconds:g} s:"]
    async with webhook(install, cert, key) as (port, pid):
        for load in (SAME_POD, DISTINCT_PODS):
            out = Path(cert.parent, f"profile-{load.replace(' ', '-')}.txt")
            spy = await asyncio.create_subprocess_exec(
                _py_spy(), "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", str(SAMPLE_RATE), "-f", "raw",
                "-o", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            while spy.returncode is None:
                await measure_round(port, pid, tls, load, CONCURRENCY, 10, Cost())
                await asyncio.sleep(0)
            await spy.wait()
            shares = profile_parts(await asyncio.to_thread(out.read_text))
            parts = ", ".join(f"{name} {share:.0f}%" for name, share in shares.items())
            lines.append(f"  {load:<13} {parts}")
    return "\n".join(lines)


async def run(
    installs: list[SidecarInstall], rounds: int, reviews: int, workdir: Path, profile_seconds: float = 0.0
) -> tuple[dict[Key, Summary], dict[Key, Cost], str]:
    ca = trustme.CA()
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    leaf = ca.issue_cert("127.0.0.1")
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    modes = {"sequential": 1, f"{CONCURRENCY} concurrent": CONCURRENCY}
    keys = [(i.label, load, m) for i in installs for load in (SAME_POD, DISTINCT_PODS) for m in modes]
    samples: dict[Key, list[float]] = {k: [] for k in keys}
    costs: dict[Key, Cost] = {k: Cost() for k in keys}
    for round_number in range(rounds):
        for install in installs if round_number % 2 == 0 else installs[::-1]:
            async with webhook(install, cert, key) as (port, pid):
                for label, load, mode in keys:
                    if label != install.label:
                        continue
                    clients = modes[mode]
                    per_client = reviews if clients == 1 else max(1, reviews // clients) * 2
                    at = (label, load, mode)
                    samples[at] += await measure_round(port, pid, tls, load, clients, per_client, costs[at])
    where = await profile(installs[0], cert, key, tls, profile_seconds) if profile_seconds else ""
    return {k: summarize(v) for k, v in samples.items()}, costs, where


def report(results: dict[Key, Summary], costs: dict[Key, Cost], this: str, baseline: str | None) -> str:
    lines = [f"AdmissionReview of a {CONTAINERS}-container Deployment's pod, ms: p50 / p90 / p99 (n);"
             " CPU ms per review: webhook + client"]  # fmt: skip
    for (label, load, mode), summary in results.items():
        webhook_ms, client_ms = costs[label, load, mode].per_review_ms()
        lines.append(f"  {load:<13} {mode:<14} {label:<8} {summary.triple():>22}  (n={summary.n})"
                     f"  cpu {webhook_ms:.2f} + {client_ms:.2f}")  # fmt: skip
    if baseline is not None:
        for load, mode in dict.fromkeys((load, mode) for _, load, mode in results):
            ours, theirs = results[this, load, mode], results[baseline, load, mode]
            lines.append(f"  {load:<13} {mode:<14} this / {baseline}: p50 {ours.p50 / theirs.p50:.2f}x, "
                         f"p99 {ours.p99 / theirs.p99:.2f}x")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", help="a git revision to compare against, measured in the same run")
    parser.add_argument("--rounds", type=int, default=4, help="webhook starts per install, alternated (default 4)")
    parser.add_argument("--reviews", type=int, default=300, help="sequential reviews per round (default 300)")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="then profile this checkout's webhook with py-spy for SECONDS per load")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="webhook-latency-") as scratch:
        workdir = Path(scratch)
        installs = [with_bytecode_cache(THIS_CHECKOUT, workdir / "pyc-this")]
        baseline_label = None
        if args.baseline_rev:
            baseline = install_revision(args.baseline_rev, workdir / "baseline")
            installed = f"installed in {baseline.install_seconds:.1f} s"
            print(f"baseline {args.baseline_rev} ({baseline.commit[:12]}) {installed}", file=sys.stderr)
            installs.append(with_bytecode_cache(baseline.install, workdir / "pyc-baseline"))
            baseline_label = baseline.install.label
        print(f"checkout {REPO}, {args.rounds} rounds, {args.reviews} sequential reviews a round", file=sys.stderr)
        results, costs, where = asyncio.run(run(installs, args.rounds, args.reviews, workdir, args.profile))
        print(report(results, costs, installs[0].label, baseline_label))
        if where:
            print(where)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
