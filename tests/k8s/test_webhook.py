"""The mutating admission webhook over real HTTPS (a trustme CA), as the API server calls it."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import trustme
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.cli.parser import build_parser
from sidecar.cli.webhook import WebhookSettings
from sidecar.config.documents import load_documents
from sidecar.k8s.admission import review_reply
from sidecar.k8s.inject import InjectOptions, inject_object
from sidecar.k8s.tls_reload import TlsFiles
from sidecar.k8s.webhook import MAX_REVIEW_BYTES, WebhookServer
from tests.conftest import PEER_MANIFESTS, REPO, require_peer, sidecar_cmd

POD_GVK = {"group": "", "version": "v1", "kind": "Pod"}
PODS_GVR = {"group": "", "version": "v1", "resource": "pods"}
CHECK_EVERY = 0.05  # the cert watcher's period in these tests
PEER_PODS = sorted(PEER_MANIFESTS.glob("k8s-*.yaml"))


def peer_pod(path: Path = PEER_MANIFESTS / "k8s-tcp-liveness-readiness.yaml") -> dict[str, Any]:
    pod: dict[str, Any] = load_documents(path.read_text(), path.name)[0]
    assert pod["kind"] == "Pod"
    pod["metadata"]["namespace"] = "shop"  # the API server fills it in before admission
    return pod


def admission_review(
    obj: Any, *, gvk: dict[str, str] = POD_GVK, gvr: dict[str, str] = PODS_GVR, uid: str = "0b1d3c8e-9f7a-4c2e"
) -> dict[str, Any]:
    """An AdmissionReview v1 as the API server sends it for a CREATE."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": obj["metadata"].get("name", "") if isinstance(obj, dict) else "",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def injected(pod: dict[str, Any], options: InjectOptions | None = None) -> Any:
    return inject_object(pod, "admission", options or InjectOptions())[0]


def patched(original: Any, response: dict[str, Any]) -> Any:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(original, ops)


def canonical(doc: Any) -> str:
    """JSON text: unlike ==, it tells true from 1."""
    return json.dumps(doc, sort_keys=True)


# -- fixtures --------------------------------------------------------------------------------


def write_cert(cert: trustme.LeafCert, files: TlsFiles, key_pem: bytes | None = None) -> None:
    """Replace the files the way a Secret volume update does: each appears whole (os.devnull: leave that one)."""
    for path, data in ((files.cert, b"".join(p.bytes() for p in cert.cert_chain_pems)),
                       (files.key, key_pem or cert.private_key_pem.bytes())):
        if path != os.devnull:
            Path(path + ".tmp").write_bytes(data)
            os.replace(path + ".tmp", path)


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA) -> TlsFiles:
    files = TlsFiles(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    write_cert(ca.issue_cert("127.0.0.1", "localhost"), files)
    return files


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def port(tls_files: TlsFiles) -> AsyncIterator[int]:
    server = WebhookServer(InjectOptions(), tls_files, cert_check_seconds=CHECK_EVERY)
    bound = await server.start("127.0.0.1", 0)
    yield bound
    await server.stop()


@pytest.fixture
async def session(client_tls: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as s:
        yield s


async def post(session: aiohttp.ClientSession, port: int, body: Any) -> dict[str, Any]:
    """POST a review (a dict, or raw bytes); the response of the 200 AdmissionReview answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(f"https://127.0.0.1:{port}/mutate", data=data,
                            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
        review = await resp.json()
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    assert review["response"]["allowed"] is True
    return review["response"]  # type: ignore[no-any-return]


def assert_untouched(response: dict[str, Any]) -> None:
    assert "patch" not in response
    assert "patchType" not in response


# -- the patch -------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", PEER_PODS, ids=lambda p: p.name)
async def test_answer_turns_the_pod_into_what_inject_gives(
    session: aiohttp.ClientSession, port: int, manifest: Path
) -> None:
    pod = peer_pod(manifest)
    expected, warnings = inject_object(pod, "admission", InjectOptions())
    response = await post(session, port, admission_review(copy.deepcopy(pod), uid="uid-42"))
    assert response["uid"] == "uid-42"
    assert response.get("warnings", []) == ["readiness-sidecar: " + w for w in warnings]
    if expected == pod:  # nothing to watch: inject leaves it alone and says why
        assert_untouched(response)
        assert warnings
    else:
        assert canonical(patched(pod, response)) == canonical(expected)


async def test_a_pod_istios_webhook_injected_first_gets_its_probes_through_pilot_agent(
    session: aiohttp.ClientSession, port: int
) -> None:
    # Istio's MutatingWebhookConfiguration (istio-sidecar-injector) sorts before ours, so by default
    # the API server hands us the pod as Istio left it (docs/istio.md#webhook-ordering).
    path = PEER_MANIFESTS / "istio" / "hello-probes.yaml.injected"
    template = load_documents(path.read_text(), path.name)[0]["spec"]["template"]
    metadata = {**template["metadata"], "name": "hello-0", "namespace": "shop"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    expected, _ = inject_object(pod, "admission", InjectOptions())
    response = await post(session, port, admission_review(copy.deepcopy(pod)))
    result = patched(pod, response)
    assert canonical(result) == canonical(expected)
    ours = next(c for c in result["spec"]["containers"] if c["name"] == "readiness-sidecar")
    assert ours["readinessProbe"]["httpGet"] == {"path": "/app-health/readiness-sidecar/readyz", "port": 15020}


async def test_tcp_probe_pod_is_patched(session: aiohttp.ClientSession, port: int) -> None:
    pod = peer_pod()
    result = patched(pod, await post(session, port, admission_review(copy.deepcopy(pod))))
    assert [c["name"] for c in result["spec"]["containers"]] == ["goproxy", "readiness-sidecar"]
    assert "readinessProbe" not in result["spec"]["containers"][0]


async def test_pod_without_type_meta_is_patched_too(session: aiohttp.ClientSession, port: int) -> None:
    pod = peer_pod()
    bare = {k: v for k, v in pod.items() if k not in ("apiVersion", "kind")}
    result = patched(bare, await post(session, port, admission_review(copy.deepcopy(bare))))
    expected = {k: v for k, v in injected(pod).items() if k not in ("apiVersion", "kind")}
    assert canonical(result) == canonical(expected)


async def test_server_options_reach_inject(tls_files: TlsFiles, session: aiohttp.ClientSession) -> None:
    options = InjectOptions(image="registry.example/rs:9", native_sidecar=True)
    server = WebhookServer(options, tls_files)
    port = await server.start("127.0.0.1", 0)
    try:
        pod = peer_pod()
        result = patched(pod, await post(session, port, admission_review(copy.deepcopy(pod))))
    finally:
        await server.stop()
    assert canonical(result) == canonical(injected(pod, options))
    assert result != injected(pod)


async def test_already_injected_pod_gets_no_patch(session: aiohttp.ClientSession, port: int) -> None:
    once = injected(peer_pod())
    assert_untouched(await post(session, port, admission_review(once)))


async def test_opted_out_pod_gets_no_patch(session: aiohttp.ClientSession, port: int) -> None:
    pod = peer_pod()
    assert injected(pod) != pod  # without the annotation it would change
    pod["metadata"]["annotations"] = {"readiness-sidecar.io/inject": "false"}
    response = await post(session, port, admission_review(pod))
    assert_untouched(response)
    assert "warnings" not in response


async def test_pod_inject_refuses_is_admitted_with_a_warning(session: aiohttp.ClientSession, port: int) -> None:
    pod = peer_pod()
    pod["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": "no-such-port"}}
    response = await post(session, port, admission_review(pod, uid="u-1"))
    assert response["uid"] == "u-1"
    assert_untouched(response)
    [warning] = response["warnings"]
    assert warning.startswith("readiness-sidecar: not injected: admission: ")
    assert "no-such-port" in warning


async def test_non_pod_kind_is_admitted_untouched_with_a_warning(
    session: aiohttp.ClientSession, port: int
) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"template": {"spec": peer_pod()["spec"]}}}
    review = admission_review(deployment, gvk={"group": "apps", "version": "v1", "kind": "Deployment"},
                              gvr={"group": "apps", "version": "v1", "resource": "deployments"})
    response = await post(session, port, review)
    assert_untouched(response)
    assert response["warnings"] == [
        "readiness-sidecar: only Pods are injected, got apps/v1 Deployment: check the webhook's rules"
    ]


async def test_update_is_admitted_untouched(session: aiohttp.ClientSession, port: int) -> None:
    review = admission_review(peer_pod())
    review["request"]["operation"] = "UPDATE"
    assert_untouched(await post(session, port, review))


# Pods as users write them, right and wrong: probes of every kind, named and bad ports, no names, opt-outs.
_PORTS = st.sampled_from([8080, 8080, 9090, "http", "http", "8080", 0, 70000, "no-such"])
_HANDLERS: st.SearchStrategy[Any] = (
    st.builds(lambda port: {"httpGet": {"path": "/", "port": port}}, _PORTS)
    | st.builds(lambda port: {"tcpSocket": {"port": port}}, _PORTS)
    | st.builds(lambda port: {"grpc": {"port": port}}, _PORTS)
    | st.just({"exec": {"command": ["cat", "/tmp/healthy"]}})
    | st.sampled_from([None, "nonsense", {}])
)
_CONTAINERS = st.fixed_dictionaries(
    {"name": st.sampled_from(["app", "db", "readiness-sidecar", ""]), "image": st.just("x")},
    optional={
        "readinessProbe": _HANDLERS, "livenessProbe": _HANDLERS,
        "ports": st.sampled_from([[{"name": "http", "containerPort": 8080}], [{"containerPort": 9090}], []]),
    },
)
_PODS = st.fixed_dictionaries({
    "apiVersion": st.just("v1"), "kind": st.just("Pod"),
    "metadata": st.fixed_dictionaries({"name": st.sampled_from(["web", ""])}, optional={
        "annotations": st.dictionaries(st.sampled_from(["readiness-sidecar.io/inject", "a/b"]),
                                       st.sampled_from(["false", "true"]))}),
    "spec": st.fixed_dictionaries(
        {"containers": st.lists(_CONTAINERS, min_size=1, max_size=3, unique_by=lambda c: c["name"])}),
})
_OPTIONS = st.builds(InjectOptions, exec_probes=st.sampled_from(["kubelet", "sidecar"]),
                     native_sidecar=st.booleans(), rewrite_liveness=st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PODS, _OPTIONS)
def test_any_pod_is_allowed_and_any_patch_gives_what_inject_gives(pod: dict[str, Any], options: InjectOptions) -> None:
    reply = review_reply(json.dumps(admission_review(copy.deepcopy(pod))).encode(), options)
    response = reply.review["response"]
    assert response["allowed"] is True
    assert not any("internal error" in w for w in response.get("warnings", [])), response["warnings"]
    if "patch" in response:
        assert canonical(patched(pod, response)) == canonical(inject_object(pod, "admission", options)[0])
    # What the log line and the metrics say agrees with the answer.
    assert (reply.result == "injected") is ("patch" in response)
    assert reply.patch_ops == (len(json.loads(base64.b64decode(response["patch"]))) if "patch" in response else 0)
    assert (reply.result == "error") is (reply.error_kind is not None)
    assert reply.result in ("injected", "skipped", "error")  # allowed, so never denied


# -- malformed reviews: always 200, allowed, a warning -----------------------------------------

REVIEW_WITHOUT_OBJECT = admission_review(None, uid="u-7")


@pytest.mark.parametrize(
    ("body", "uid", "warning"),
    [
        (b"\x00garbage{", "", "request body is not JSON: "),
        (b"[1, 2]", "", "request body is not an AdmissionReview"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "", "AdmissionReview has no request"),
        ({**REVIEW_WITHOUT_OBJECT, "apiVersion": "admission.k8s.io/v1beta1"}, "",
         'AdmissionReview apiVersion "admission.k8s.io/v1beta1" is not admission.k8s.io/v1'),
        ({**REVIEW_WITHOUT_OBJECT, "request": {**REVIEW_WITHOUT_OBJECT["request"], "uid": 7}}, "",
         "AdmissionReview request has no uid"),
        (REVIEW_WITHOUT_OBJECT, "u-7", "AdmissionReview request has no Pod object"),
        (b"[" * 100_000, "", "request body is not JSON: "),
    ],
    ids=["garbage", "json-list", "no-request", "v1beta1", "uid-not-string", "no-object", "nested-100k"],
)
async def test_malformed_review_is_allowed_with_a_warning(
    session: aiohttp.ClientSession, port: int, body: Any, uid: str, warning: str
) -> None:
    response = await post(session, port, body)
    assert response["uid"] == uid
    assert_untouched(response)
    [text] = response["warnings"]
    assert text.startswith("readiness-sidecar: " + warning)
    assert text.isprintable()
    reply = review_reply(body if isinstance(body, bytes) else json.dumps(body).encode(), InjectOptions())
    assert (reply.result, reply.error_kind, reply.patch_ops) == ("error", "malformed_review", 0)


async def test_oversized_review_gets_413(session: aiohttp.ClientSession, port: int) -> None:
    review = admission_review(peer_pod())
    review["request"]["object"]["metadata"]["annotations"] = {"big": "x" * MAX_REVIEW_BYTES}
    async with session.post(f"https://127.0.0.1:{port}/mutate", data=json.dumps(review).encode()) as resp:
        assert resp.status == 413


async def test_review_just_under_the_limit_is_answered(session: aiohttp.ClientSession, port: int) -> None:
    pod = peer_pod()
    pod["metadata"]["annotations"] = {"big": ""}
    review = admission_review(pod)
    pad = MAX_REVIEW_BYTES - len(json.dumps(review).encode()) - 1
    pod["metadata"]["annotations"]["big"] = "x" * pad
    result = patched(pod, await post(session, port, review))
    assert canonical(result) == canonical(injected(pod))


# -- TLS ---------------------------------------------------------------------------------------


async def test_healthz_over_https(session: aiohttp.ClientSession, port: int) -> None:
    async with session.get(f"https://127.0.0.1:{port}/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


async def test_plain_http_is_not_served(session: aiohttp.ClientSession, port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    try:
        async with asyncio.timeout(2):
            answer = await reader.read()
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/")
    async with session.get(f"https://127.0.0.1:{port}/healthz") as resp:  # the same port speaks HTTPS
        assert resp.status == 200


async def served_cert(port: int, client_tls: ssl.SSLContext, server_name: str = "127.0.0.1") -> bytes:
    """The certificate a new handshake presents (server_name "127.0.0.1" sends no SNI)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls, server_hostname=server_name)
    cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return cert  # type: ignore[no-any-return]


async def served_cert_becomes(port: int, client_tls: ssl.SSLContext, want: bytes, server_name: str) -> bool:
    """Whether new handshakes present `want` within 3 s (60 watcher periods)."""
    for _ in range(120):
        if await served_cert(port, client_tls, server_name) == want:
            return True
        await asyncio.sleep(CHECK_EVERY / 2)
    return False


@pytest.mark.parametrize("server_name", ["127.0.0.1", "localhost"], ids=["no-sni", "sni"])
async def test_rotated_cert_is_served_to_new_handshakes(
    ca: trustme.CA, tls_files: TlsFiles, client_tls: ssl.SSLContext, port: int, server_name: str
) -> None:
    old = await served_cert(port, client_tls, server_name)
    new = ca.issue_cert("127.0.0.1", "localhost")
    assert der(new) != old
    write_cert(new, tls_files)
    assert await served_cert_becomes(port, client_tls, der(new), server_name)


async def test_unloadable_cert_files_keep_the_old_cert(
    ca: trustme.CA, tls_files: TlsFiles, client_tls: ssl.SSLContext, port: int
) -> None:
    old = await served_cert(port, client_tls)
    new = ca.issue_cert("127.0.0.1", "localhost")
    write_cert(new, TlsFiles(tls_files.cert, os.devnull))  # mid-rotation: the new cert is there, its key is not
    await asyncio.sleep(CHECK_EVERY * 6)
    assert await served_cert(port, client_tls) == old
    write_cert(new, TlsFiles(os.devnull, tls_files.key), key_pem=b"not a key")
    await asyncio.sleep(CHECK_EVERY * 6)
    assert await served_cert(port, client_tls) == old
    os.remove(tls_files.key)
    await asyncio.sleep(CHECK_EVERY * 6)
    assert await served_cert(port, client_tls) == old
    write_cert(new, tls_files)
    assert await served_cert_becomes(port, client_tls, der(new), "127.0.0.1")


# -- the CLI -----------------------------------------------------------------------------------

_LISTENING = re.compile(r"webhook listening on https://127\.0\.0\.1:(\d+) ")


async def test_cli_serves_reviews_and_stops_on_sigterm(
    tls_files: TlsFiles, client_tls: ssl.SSLContext, sidecar_env: dict[str, str]
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *sidecar_cmd("webhook", "--bind", "127.0.0.1", "--port", "0", "--cert", tls_files.cert,
                     "--key", tls_files.key, "--image", "registry.example/rs:9", "--metrics-port", "off"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=sidecar_env, cwd=REPO,
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(15):
            while not (match := _LISTENING.search(log[-1] if log else "")):
                line = (await proc.stderr.readline()).decode()
                assert line, "webhook exited early:\n" + "".join(log)
                log.append(line)
        pod = peer_pod()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
            response = await post(session, int(match.group(1)), admission_review(copy.deepcopy(pod), uid="cli"))
        assert response["uid"] == "cli"
        assert canonical(patched(pod, response)) == canonical(
            injected(pod, InjectOptions(image="registry.example/rs:9"))
        )
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = (await proc.stderr.read()).decode()
            assert await proc.wait() == 0, "".join(log) + rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "admission uid=cli pod=shop/goproxy: injected (" in rest
    assert "Traceback" not in rest


@pytest.mark.parametrize("problem", ["missing", "garbage", "mismatched"])
def test_cli_refuses_unloadable_cert_files_in_one_line(
    ca: trustme.CA, tls_files: TlsFiles, sidecar_env: dict[str, str], problem: str
) -> None:
    cert, key = tls_files.cert, tls_files.key
    if problem == "missing":
        cert += ".nope"
    elif problem == "garbage":
        Path(cert).write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    else:
        Path(key).write_bytes(ca.issue_cert("127.0.0.1").private_key_pem.bytes())
    done = subprocess.run(
        sidecar_cmd("webhook", "--bind", "127.0.0.1", "--port", "0", "--cert", cert, "--key", key),
        capture_output=True, text=True, env=sidecar_env, cwd=REPO, timeout=20, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    if problem == "missing":
        assert line == f"--cert {cert}: cannot read: No such file or directory"
    else:
        expected = "not a PEM certificate chain and its unencrypted private key"
        assert line.startswith(f"--cert {cert} --key {key}: {expected}")



# -- examples/webhook ----------------------------------------------------------------------

# The oldest Kubernetes the example targets: the preStop `sleep` action is on by default from 1.30.
EXAMPLE_MIN_KUBERNETES = "1.30.0"


def rendered_example() -> dict[str, dict[str, Any]]:
    """`kubectl kustomize examples/webhook` (offline), by kind."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        require_peer("kubectl (with its built-in kustomize) is not installed")
    done = subprocess.run([str(kubectl), "kustomize", str(REPO / "examples" / "webhook")],
                          capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs)
    return by_kind


def test_kustomized_example_is_valid_kubernetes() -> None:
    docs = rendered_example()
    assert sorted(docs) == ["Deployment", "MutatingWebhookConfiguration", "Namespace", "Service"]
    for version in (EXAMPLE_MIN_KUBERNETES, kubernetes_validate.latest_version()):
        for doc in docs.values():
            kubernetes_validate.validate(doc, version, strict=True)


def test_example_webhook_configuration_points_at_the_example_deployment() -> None:
    docs = rendered_example()
    namespace = docs["Namespace"]["metadata"]["name"]
    service, deployment = docs["Service"], docs["Deployment"]
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"] == namespace
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    settings = WebhookSettings.from_args(build_parser().parse_args(container["args"]), environ={})
    assert (settings.tls.cert, settings.tls.key) == ("/certs/tls.crt", "/certs/tls.key")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": settings.port, "metrics": settings.metrics_port}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    webhooks = docs["MutatingWebhookConfiguration"]["webhooks"]
    assert len(webhooks) == 2
    for webhook in webhooks:
        target = webhook["clientConfig"]["service"]
        assert (target["name"], target["namespace"]) == (service["metadata"]["name"], namespace)
        assert target["path"] == "/mutate"
        assert target["port"] in [p["port"] for p in service["spec"]["ports"]]
        assert (webhook["failurePolicy"], webhook["sideEffects"], webhook["reinvocationPolicy"]) == (
            "Ignore", "None", "IfNeeded"
        )
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                     "resources": ["pods"], "scope": "Namespaced"}]
