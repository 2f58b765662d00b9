"""Bad manifests, fuzzed, through `inject` and `lint` as a user runs them, and AdmissionReview bodies
through the webhook's answer.

`sidecar.cli.main([...])` runs in-process with stdout and stderr captured: every example
must end in exit 0, 1 or 2 with printable stderr lines, exactly one of them for exit 2,
and never an exception. What `inject` writes must load again and must not change when
injected a second time. The webhook must answer every review, whatever it holds: it admits
every pod but one whose readiness-sidecar.io settings annotation has a bad value, which it
denies with that one printable line.

tests/k8s/test_webhook.py fuzzes plausible pods for the patch's correctness; here the pods
and the review around them are malformed at every level.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import cli
from sidecar.config.documents import load_documents
from sidecar.errors import ConfigError
from sidecar.k8s.admission import MAX_WARNING_CHARS, MAX_WARNINGS, review_reply
from sidecar.k8s.inject import InjectOptions, inject_object
from tests.reliability.fuzz_inputs import CORPUS, EDITS, ODD, POD_SPECS, WORKLOADS, fuzz_examples_per_test, mutate

_FUZZ = settings(max_examples=fuzz_examples_per_test(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit:  # argparse's own exit, not ours
            code = int(exit.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, err: str, *, findings_first: bool = False) -> None:
    """Exit 0, 1 or 2, printable stderr lines, and for 2 one error line: the only line, or for
    inject the last, after the lint findings it prints first (with --force it goes on past them)."""
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert all(line.isprintable() for line in lines), err
    if code == 2:
        assert len(lines) == 1 or (findings_first and lines), err


def _serialise(docs: list[Any], form: str) -> str:
    if form == "json":
        return json.dumps(docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs})
    return yaml.safe_dump_all(docs, default_flow_style=form == "flow")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-manifests")


def _inject_and_lint(path: Path, force: bool) -> None:
    for fmt in ("text", "json", "sarif"):
        code, out, err = run_cli(["lint", "-f", str(path), "--format", fmt])
        assert_clean_exit(code, err)
        if fmt in ("json", "sarif") and code != 2:
            json.loads(out)
        elif fmt == "text":
            assert all(line.isprintable() for line in out.splitlines()), out

    code, out, err = run_cli(["inject", "-f", str(path), *(["--force"] if force else [])])
    assert_clean_exit(code, err, findings_first=True)
    if code != 0:
        return
    load_documents(out, "inject output")  # what inject writes loads again
    again = path.with_suffix(".again" + path.suffix)
    again.write_text(out)
    code, twice, err = run_cli(["inject", "-f", str(again), "--force"])
    assert_clean_exit(code, err, findings_first=True)
    assert (code, twice) == (0, out), "injecting inject's output changed it"


@_FUZZ
@given(source=st.sampled_from(CORPUS), edits=EDITS, force=st.booleans())
def test_mutated_manifests_through_inject_and_lint_exit_cleanly(
    workdir: Path, fuzz_examples: Counter[str], source: Path, edits: list[tuple[float, int, str]], force: bool
) -> None:
    fuzz_examples["inject+lint CLI (mutated manifest)"] += 1
    path = workdir / "mutated.yaml"
    path.write_bytes(mutate(source.read_text(), edits).encode("utf-8", "surrogatepass"))
    _inject_and_lint(path, force)


@_FUZZ
@given(docs=st.lists(WORKLOADS, min_size=1, max_size=3), form=st.sampled_from(["yaml", "flow", "json"]),
       force=st.booleans())
def test_odd_workloads_through_inject_and_lint_exit_cleanly(
    workdir: Path, fuzz_examples: Counter[str], docs: list[Any], form: str, force: bool
) -> None:
    fuzz_examples["inject+lint CLI (generated workloads)"] += 1
    path = workdir / ("odd.json" if form == "json" else "odd.yaml")
    path.write_text(_serialise(docs, form))
    _inject_and_lint(path, force)


def test_inject_force_past_a_containers_field_that_is_not_a_list_is_one_clean_error(workdir: Path) -> None:
    """Found by the fuzzing above: lint reported it, but --force went on into a TypeError."""
    path = workdir / "containers-int.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: 1}\n")
    code, out, err = run_cli(["inject", "--force", "-f", str(path)])
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == f"{path}: Pod/web: spec.containers: expected a list, got an integer"


_OPTIONS = st.builds(InjectOptions, exec_probes=st.sampled_from(["kubelet", "sidecar"]),
                     native_sidecar=st.booleans(), rewrite_liveness=st.booleans())


@_FUZZ
@given(obj=WORKLOADS, options=_OPTIONS)
def test_inject_object_gives_a_result_or_one_config_error_and_is_idempotent(
    fuzz_examples: Counter[str], obj: dict[str, Any], options: InjectOptions
) -> None:
    fuzz_examples["inject_object"] += 1
    original = copy.deepcopy(obj)
    try:
        once, warnings = inject_object(obj, "fuzz.yaml", options)
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    assert obj == original, "inject_object changed its input"
    assert all("\n" not in warning for warning in warnings)
    twice, _ = inject_object(copy.deepcopy(once), "fuzz.yaml", options)
    assert twice == once


# -- AdmissionReview ----------------------------------------------------------------------------

_UIDS = st.one_of(st.sampled_from(["u-1", "", "é\x00"]), ODD)
_GVKS = st.one_of(st.fixed_dictionaries({"group": st.sampled_from(["", "apps"]), "version": st.just("v1"),
                                         "kind": st.sampled_from(["Pod", "Deployment"])}), ODD)
_PODS = st.one_of(
    st.builds(lambda metadata, spec: {"metadata": metadata, "spec": spec},
              st.one_of(st.fixed_dictionaries({"name": st.sampled_from(["web", ""])}, optional={
                  "generateName": st.sampled_from(["web-", None]),
                  "annotations": st.one_of(st.fixed_dictionaries(
                      {"readiness-sidecar.io/inject": st.sampled_from(["false", "true", " FALSE ", ""])},
                      optional={"readiness-sidecar.io/health-port": st.sampled_from(["9550", "http", "0"])}),
                      ODD)}),
                  ODD),
              POD_SPECS),
    ODD,
)
_REQUESTS = st.one_of(
    st.fixed_dictionaries(
        {"uid": _UIDS, "kind": _GVKS, "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", None]),
         "object": _PODS},
        optional={"namespace": st.sampled_from(["default", "", None]), "subResource": st.sampled_from(["", "status"]),
                  "dryRun": st.booleans()},
    ),
    ODD,
)
_REVIEWS = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", None]),
     "kind": st.sampled_from(["AdmissionReview", "Pod", None]), "request": _REQUESTS},
)
_BODIES = st.one_of(
    _REVIEWS.map(lambda review: json.dumps(review).encode()),
    st.binary(max_size=64),
    _REVIEWS.map(lambda review: json.dumps(review).encode()[: len(json.dumps(review)) // 2]),
)


@settings(max_examples=fuzz_examples_per_test(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES, options=_OPTIONS)
def test_any_admission_review_body_is_answered_with_printable_warnings(
    fuzz_examples: Counter[str], body: bytes, options: InjectOptions
) -> None:
    fuzz_examples["AdmissionReview body"] += 1
    reply = review_reply(body, options)
    response = reply.review["response"]
    if response["allowed"] is not True:  # only for a bad settings annotation, named in one line
        message = response["status"]["message"]
        assert "annotations[readiness-sidecar.io/" in message and message.isprintable(), message
    assert reply.summary.isprintable()
    try:
        request = json.loads(body)["request"]
    except (ValueError, TypeError, KeyError):
        request = None
    if isinstance(request, dict) and isinstance(request.get("uid"), str) and response["uid"]:
        assert response["uid"] == request["uid"]
    warnings = response.get("warnings", [])
    assert len(warnings) <= MAX_WARNINGS
    for warning in warnings:
        assert warning.isprintable() and len(warning) <= MAX_WARNING_CHARS, warning
        assert "internal error" not in warning, warning
    if "patch" in response:
        pod = {**request["object"], "apiVersion": "v1", "kind": "Pod"}
        jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
