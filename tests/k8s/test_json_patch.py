"""The webhook's JSON Patch generator, checked against the `jsonpatch` library's RFC 6902 implementation."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.k8s.json_patch import json_equal, json_patch, pointer_token

# A small key alphabet, so that two drawn documents share keys and the diff recurses; "~" and "/" need escaping.
KEYS = st.sampled_from(["a", "b", "~", "/", "a/b", "~1", "~0/", ""])
SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, width=32) | st.text(max_size=3)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def edited(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with random edits, the way inject edits a pod: most of it stays, lists often only grow."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(JSON)
    if isinstance(doc, dict):
        out = {k: draw(edited(v)) for k, v in doc.items() if draw(st.integers(0, 4))}
        out.update(draw(st.dictionaries(KEYS, JSON, max_size=2)))
        return out
    if isinstance(doc, list):
        if choice < 5:
            return doc + draw(st.lists(JSON, min_size=1, max_size=3))
        return [draw(edited(item)) for item in doc]
    return doc if choice < 6 else draw(SCALARS)


@st.composite
def document_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    old = draw(JSON)
    return old, draw(edited(old))


@settings(max_examples=150, deadline=None)
@given(document_pairs())
def test_applying_the_patch_gives_the_new_document(pair: tuple[Any, Any]) -> None:
    old, new = pair
    ops = json_patch(old, new)
    result = jsonpatch.apply_patch(old, json.loads(json.dumps(ops)))
    assert json_equal(result, new)  # unlike ==, tells true from 1


@given(JSON)
def test_equal_documents_give_no_patch(doc: Any) -> None:
    assert json_patch(doc, json.loads(json.dumps(doc))) == []


def test_true_is_not_one() -> None:
    assert json_patch({"x": 1}, {"x": True}) == [{"op": "replace", "path": "/x", "value": True}]
    assert json_patch([0], [False]) == [{"op": "replace", "path": "", "value": [False]}]


def test_list_that_only_grew_gets_appends() -> None:
    old = {"spec": {"containers": [{"name": "app"}]}}
    new = {"spec": {"containers": [{"name": "app"}, {"name": "readiness-sidecar"}]}}
    assert json_patch(old, new) == [{"op": "add", "path": "/spec/containers/-", "value": {"name": "readiness-sidecar"}}]


def test_list_changed_inside_is_replaced_whole() -> None:
    old = {"containers": [{"name": "app", "readinessProbe": {}}]}
    new = {"containers": [{"name": "app"}, {"name": "readiness-sidecar"}]}
    assert json_patch(old, new) == [{"op": "replace", "path": "/containers", "value": new["containers"]}]


def test_keys_are_escaped_per_rfc_6901() -> None:
    assert pointer_token("readiness-sidecar.io/status") == "readiness-sidecar.io~1status"
    assert pointer_token("~/") == "~0~1"
    old = {"metadata": {"annotations": {"a": "1"}}}
    new = {"metadata": {"annotations": {"a": "1", "readiness-sidecar.io/status": "injected"}}}
    assert json_patch(old, new) == [
        {"op": "add", "path": "/metadata/annotations/readiness-sidecar.io~1status", "value": "injected"}
    ]
