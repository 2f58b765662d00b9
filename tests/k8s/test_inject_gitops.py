"""`inject` for GitOps, through the real CLI: output that keeps what the author wrote, `--diff`,
the image setting and the errors a file with no Kubernetes objects gets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from sidecar.contract import IMAGE_ANNOTATION, IMAGE_ENV
from sidecar.k8s.inject import KNATIVE_MULTI_CONTAINER_PROBING
from sidecar.k8s.options import DEFAULT_IMAGE, DEFAULT_IMAGE_WARNING
from tests.cli.test_entry_point import _IMPORTED_AFTER_MAIN as IMPORTED_AFTER_MAIN
from tests.conftest import REPO, sidecar_cmd

DATA = REPO / "tests" / "data"
GITOPS = DATA / "inject" / "gitops-deployment.yaml"
KNATIVE_SEED = DATA / "knative-seed-service-ja.yaml"
IMAGE = "registry.example/readiness-sidecar:0.1.0"
# The blocks inject adds to a template, each the first line of one run of added lines.
ADDED_BLOCKS = re.compile(
    r"^ *(annotations:|readiness-sidecar\.io/status: injected|lifecycle:|- name: readiness-sidecar"
    r"|terminationGracePeriodSeconds: \d+)$"
)


def run_inject(*args: str, stdin: str = "", env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sidecar_cmd("inject", *args), input=stdin, capture_output=True, text=True, env=env, timeout=30, cwd=cwd
    )


def hunks(diff: str) -> list[tuple[list[str], list[str]]]:
    """(removed lines, added lines) of each hunk of a unified diff."""
    found: list[tuple[list[str], list[str]]] = []
    for line in diff.splitlines():
        if line.startswith("@@"):
            found.append(([], []))
        elif found and line.startswith("-"):
            found[-1][0].append(line[1:])
        elif found and line.startswith("+"):
            found[-1][1].append(line[1:])
    return found


def added_runs(diff: str) -> list[list[str]]:
    """Each run of consecutive added lines."""
    runs: list[list[str]] = []
    previous_added = False
    for line in diff.splitlines():
        added = line.startswith("+") and not line.startswith("+++")
        if added and not previous_added:
            runs.append([])
        if added:
            runs[-1].append(line[1:])
        previous_added = added
    return runs


# -- the output keeps what the author wrote ---------------------------------------------------


def test_comments_order_quoting_and_the_configmap_survive_and_the_diff_is_only_what_inject_changed(
    sidecar_env: dict[str, str],
) -> None:
    text = GITOPS.read_text()
    out = run_inject("--image", IMAGE, "-f", str(GITOPS), env=sidecar_env)
    assert out.returncode == 0, out.stderr
    for line in text.splitlines():
        if "#" in line or "'" in line or '"' in line:
            assert line in out.stdout.splitlines(), f"lost: {line!r}"
    assert out.stdout.startswith(text.split("kind: Deployment")[0]), "the header comment and --- stay first"
    config_map = text[text.index("# Not a workload") :]
    assert out.stdout.endswith(config_map), "the ConfigMap comes out byte for byte"
    assert out.stdout.index("kind: Deployment") < out.stdout.index("apiVersion: apps/v1"), "key order kept"
    assert "ports: [{containerPort: 6379}]" in out.stdout, "flow style kept, braces too"

    diff = run_inject("--image", IMAGE, "--diff", "-f", str(GITOPS), env=sidecar_env)
    assert diff.returncode == 0, diff.stderr
    removed = [line for gone, _ in hunks(diff.stdout) for line in gone]
    assert removed == [  # the readinessProbe that moved into the sidecar, and nothing else
        "          readinessProbe:",
        "            httpGet:",
        "              path: /ready",
        "              port: http",
        "            periodSeconds: 5",
    ]
    runs = added_runs(diff.stdout)
    assert runs and all(ADDED_BLOCKS.match(run[0]) for run in runs), runs
    assert sum(run[0].strip() == "lifecycle:" for run in runs) == 2, "one drain hook per container"


def test_a_round_trip_with_mixed_indents_keeps_each_documents_own(sidecar_env: dict[str, str]) -> None:
    indented = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n    name: four\ndata:\n    list: |\n        a\n"
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: app\n"
        "    image: x\n    ports:\n    - containerPort: 80\n"
    )
    out = run_inject("--image", IMAGE, stdin=pod + "---\n" + indented, env=sidecar_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("---\n" + indented)
    assert out.stdout.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\n")
    assert "\n  - name: readiness-sidecar\n    image: " in out.stdout, "the pod's own list style: dash at 2"


def test_output_injected_again_is_the_same_bytes(sidecar_env: dict[str, str]) -> None:
    once = run_inject("--image", IMAGE, "-f", str(GITOPS), env=sidecar_env)
    twice = run_inject("--image", IMAGE, stdin=once.stdout, env=sidecar_env)
    assert (twice.returncode, twice.stdout) == (0, once.stdout)


def test_a_comment_under_a_removed_probe_stays(sidecar_env: dict[str, str]) -> None:
    pod = """apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: x
    ports:
    - containerPort: 8080
    readinessProbe:
      tcpSocket:
        port: 8080   # the probe's own comment goes with it
    # the env below is read at start-up
    env:
    - name: A
      value: "1"
  - name: flow
    image: y
    args: [serve, --port=9000]   # flow, with a comment
    readinessProbe: {tcpSocket: {port: 9000}}
    # under a flow probe
    ports: [{containerPort: 9000}]
"""
    out = run_inject("--image", IMAGE, stdin=pod, env=sidecar_env)
    assert out.returncode == 0, out.stderr
    assert "    # the env below is read at start-up\n    env:\n" in out.stdout
    assert "the probe's own comment" not in out.stdout
    assert "    args: [serve, --port=9000]   # flow, with a comment\n    # under a flow probe\n    ports:" in out.stdout


# -- --diff ----------------------------------------------------------------------------------


def test_diff_names_the_file_like_git_and_stdin_as_stdin(sidecar_env: dict[str, str]) -> None:
    from_file = run_inject("--image", IMAGE, "--diff", "-f", str(GITOPS.relative_to(REPO)), env=sidecar_env)
    assert from_file.stdout.startswith(
        "--- a/tests/data/inject/gitops-deployment.yaml\n+++ b/tests/data/inject/gitops-deployment.yaml\n@@ "
    )
    from_stdin = run_inject("--image", IMAGE, "--diff", stdin=GITOPS.read_text(), env=sidecar_env)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.startswith("--- a/<stdin>\n+++ b/<stdin>\n@@ ")
    assert from_stdin.stdout.split("\n", 2)[2] == from_file.stdout.split("\n", 2)[2]


def test_diff_applies_with_patch_to_give_the_injected_output(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "deploy.yaml"
    deployment = GITOPS.read_text().split("---\n# Not a workload")[0]
    target.write_text(deployment.rstrip("\n"))  # no newline at the end: the marker must be right
    diff = run_inject("--image", IMAGE, "--diff", "-f", "deploy.yaml", env=sidecar_env, cwd=tmp_path)
    assert "\\ No newline at end of file" in diff.stdout
    injected = run_inject("--image", IMAGE, "-f", "deploy.yaml", env=sidecar_env, cwd=tmp_path)
    applied = subprocess.run(
        ["patch", "-p1", "--quiet"], input=diff.stdout, text=True, cwd=tmp_path, capture_output=True, timeout=10
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert target.read_text() == injected.stdout


def test_diff_of_an_injected_file_is_empty_and_exit_0(sidecar_env: dict[str, str]) -> None:
    once = run_inject("--image", IMAGE, "-f", str(GITOPS), env=sidecar_env)
    again = run_inject("--image", IMAGE, "--diff", stdin=once.stdout, env=sidecar_env)
    assert (again.returncode, again.stdout) == (0, "")


def test_diff_refused_by_lint_exits_1_with_nothing_on_stdout(sidecar_env: dict[str, str]) -> None:
    refused = run_inject("--diff", "-f", str(DATA / "lint" / "grpc-named-port.yaml"), env=sidecar_env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines()[-1] == "inject: refusing: 1 lint error(s) above; --force injects anyway"


def test_help_says_what_diff_exits_with(sidecar_env: dict[str, str]) -> None:
    helped = run_inject("--help", env=sidecar_env)
    assert "exit 0 whether or not anything changed" in " ".join(helped.stdout.split())


# -- the image -------------------------------------------------------------------------------


def images(text: str) -> list[str]:
    return [
        container["image"]
        for doc in yaml.safe_load_all(text)
        if doc.get("kind") == "Pod"
        for container in doc["spec"]["containers"]
        if container["name"] == "readiness-sidecar"
    ]


def two_pods(annotated_image: str) -> str:
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{annotations}spec:\n  containers:\n"
        "  - name: app\n    image: x\n    ports:\n    - containerPort: 80\n"
    )
    annotations = f"  annotations:\n    {IMAGE_ANNOTATION}: {annotated_image}\n"
    return pod.format(name="plain", annotations="") + "---\n" + pod.format(name="own", annotations=annotations)


def test_image_precedence_annotation_then_flag_then_env_then_the_default(sidecar_env: dict[str, str]) -> None:
    manifest = two_pods("registry.example/own:1")
    env_image = {**sidecar_env, IMAGE_ENV: "registry.example/from-env:1"}
    by_flag = run_inject("--image", "registry.example/flag:1", stdin=manifest, env=env_image)
    assert images(by_flag.stdout) == ["registry.example/flag:1", "registry.example/own:1"]
    by_env = run_inject(stdin=manifest, env=env_image)
    assert images(by_env.stdout) == ["registry.example/from-env:1", "registry.example/own:1"]
    by_default = run_inject(stdin=manifest, env=sidecar_env)
    assert images(by_default.stdout) == [DEFAULT_IMAGE, "registry.example/own:1"]
    assert DEFAULT_IMAGE == "localhost/readiness-sidecar:0.1.0"
    for named in (by_flag, by_env):
        assert named.returncode == 0 and "warning: the sidecar image" not in named.stderr, named.stderr
    assert by_default.stderr.splitlines().count(f"warning: {DEFAULT_IMAGE_WARNING}") == 1


def test_the_default_image_warning_is_one_line_for_many_pods_and_none_when_every_pod_names_one(
    sidecar_env: dict[str, str],
) -> None:
    many = run_inject(stdin="---\n".join([two_pods("a/b:1").split("---\n")[0]] * 3), env=sidecar_env)
    assert many.stderr.count("the sidecar image is") == 1
    assert "--image" in DEFAULT_IMAGE_WARNING and IMAGE_ENV in DEFAULT_IMAGE_WARNING
    assert IMAGE_ANNOTATION in DEFAULT_IMAGE_WARNING
    own_only = run_inject(stdin=two_pods("a/b:1").split("---\n")[1], env=sidecar_env)
    assert own_only.returncode == 0 and "the sidecar image is" not in own_only.stderr


def test_an_empty_image_env_is_no_image(sidecar_env: dict[str, str]) -> None:
    out = run_inject(stdin=two_pods("a/b:1"), env={**sidecar_env, IMAGE_ENV: ""})
    assert images(out.stdout)[0] == DEFAULT_IMAGE


# A local name of the image: bare or localhost/, with a tag (the CI build's own `test` tag aside).
LOCAL_IMAGE = re.compile(r"(?<![\w./-])(?:localhost/)?readiness-sidecar:[\w.-]+")
CI_BUILD_TAG = "localhost/readiness-sidecar:test"  # tests/system/podman_stack.py's IMAGE_TAG


def test_the_repository_names_the_local_build_as_inject_does() -> None:
    """Dockerfile, README, compose and the examples tag and run what DEFAULT_IMAGE names (podman
    stores a bare `-t readiness-sidecar:0.1.0` as localhost/readiness-sidecar:0.1.0)."""
    for path in (
        "Dockerfile",
        "README.md",
        "docker-compose.yml",
        "examples/compose/README.md",
        "examples/k8s/pod.yaml",
        "examples/k8s/deployment.yaml",
        "examples/webhook/deployment.yaml",
        "docs/inject.md",
        "docs/webhook.md",
    ):
        names = set(LOCAL_IMAGE.findall((REPO / path).read_text())) - {CI_BUILD_TAG}
        bare = {name for name in names if not name.startswith("localhost/")}
        assert names - bare <= {DEFAULT_IMAGE}, path
        assert bare <= {DEFAULT_IMAGE.removeprefix("localhost/")}, path  # `podman build -t readiness-sidecar:0.1.0`


# -- no Kubernetes objects -----------------------------------------------------------------------


def test_a_file_without_kubernetes_objects_is_exit_2_with_one_line(sidecar_env: dict[str, str]) -> None:
    empty = "is empty: expected Kubernetes objects (apiVersion, kind)"
    none = "holds no Kubernetes object (a mapping with apiVersion and kind), got"
    for stdin, problem in [
        ("", empty),
        ("# only a comment\n", empty),
        ("just some text\n", f"{none} a string"),
        ("42\n", f"{none} an integer"),
        ("containers: []\n", f"{none} a mapping without a kind"),
    ]:
        out = run_inject(stdin=stdin, env=sidecar_env)
        assert (out.returncode, out.stdout, out.stderr) == (2, "", f"<stdin>: {problem}\n"), stdin


# -- Knative's multi-container probing -------------------------------------------------------------

REVISION = """apiVersion: serving.knative.dev/v1
kind: Revision
metadata:
  name: hello-00001
spec:
  containers:
  - image: example.com/hello:1
    readinessProbe:
      httpGet:
        path: /ready
"""


def test_an_injected_knative_template_gets_one_line_about_multi_container_probing(sidecar_env: dict[str, str]) -> None:
    """Knative probes a non-serving container's readiness only with the multi-container-probing feature flag
    (knative/serving#14853, config/core/configmaps/features.yaml): the sidecar is one, beside the serving one."""
    for text, label in [(KNATIVE_SEED.read_text(), "Service/runtime"), (REVISION, "Revision/hello-00001")]:
        out = run_inject("--image", IMAGE, stdin=text, env=sidecar_env)
        assert out.returncode == 0, out.stderr
        about = [line for line in out.stderr.splitlines() if "multi-container-probing" in line]
        assert about == [f"warning: <stdin>: {label}: {KNATIVE_MULTI_CONTAINER_PROBING}"]
        again = run_inject("--image", IMAGE, stdin=out.stdout, env=sidecar_env)
        assert "multi-container-probing" not in again.stderr, "nothing more to say about an injected template"
    core = run_inject("--image", IMAGE, "-f", str(GITOPS), env=sidecar_env)
    assert "multi-container-probing" not in core.stderr


# -- the round-trip loader is inject's, not check's ----------------------------------------------


def test_check_on_a_manifest_never_imports_ruamel_and_inject_does(sidecar_env: dict[str, str]) -> None:
    """`check` is a Docker HEALTHCHECK (tests/cli/test_entry_point.py): the fast loader only."""
    imported = {}
    for command in (["check", "-f", str(GITOPS)], ["inject", "--image", IMAGE, "-f", str(GITOPS)]):
        done = subprocess.run(
            [sys.executable, "-c", IMPORTED_AFTER_MAIN, *command],
            env=sidecar_env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode in (0, 1), done.stderr
        imported[command[0]] = set(json.loads(done.stdout.splitlines()[-1]))
    assert "ruamel" not in imported["check"] and "yaml" in imported["check"]
    assert "ruamel" in imported["inject"]


def test_windows_line_ends_and_a_closing_marker_survive(sidecar_env: dict[str, str], tmp_path: Path) -> None:
    text = GITOPS.read_text().replace("\n", "\r\n") + "...\r\n"
    target = tmp_path / "deploy.yaml"
    target.write_bytes(text.encode())
    done = subprocess.run(
        sidecar_cmd("inject", "--image", IMAGE, "--diff", "-f", str(target)), capture_output=True, env=sidecar_env,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    diff = done.stdout.decode()
    body = [line for line in diff.split("\n")[2:] if line and not line.startswith("@@")]
    assert all(line.endswith("\r") for line in body), "every line of the file keeps its CRLF"
    removed = [line for line in body if line.startswith("-")]
    assert len(removed) == 5 and removed[0] == "-          readinessProbe:\r"
    assert not any(line.strip("+-\r") == "..." for line in body), "the closing ... is not touched"


def test_a_document_inject_leaves_alone_comes_out_as_it_was_read_byte_for_byte(sidecar_env: dict[str, str]) -> None:
    """Flow style, trailing blanks, `...`: whatever the round-trip writer would normalise, in a document
    inject does not change, stays as written, even beside one it injects."""
    untouched = "{apiVersion: v1, kind: ConfigMap,   metadata: {name: a}}   \n...\n"
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web   \nspec:\n  containers:\n  - name: app\n"
        "    image: x\n    ports: [{containerPort: 80}]\n"
    )
    out = run_inject("--image", IMAGE, stdin=untouched + "---\n" + pod, env=sidecar_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(untouched + "---\napiVersion: v1\nkind: Pod\n")
    assert "readiness-sidecar" in out.stdout
