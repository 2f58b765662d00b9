"""RFC 6902 JSON Patch from one JSON document to another: the webhook's answer is "turn this pod into that one".

Deliberately plain, so it is easy to trust: objects are compared key by key (remove, add, or recurse); a list
that only grew at its end gets one `add .../-` per new item; any other changed list, and any changed scalar, is
replaced whole. Index-wise list edits would shift under each other and buy little for a pod.

    ops = json_patch({"a": [1], "b": 1}, {"a": [1, 2], "c/d": True})
    # [{"op": "remove", "path": "/b"}, {"op": "add", "path": "/a/-", "value": 2},
    #  {"op": "add", "path": "/c~1d", "value": True}]
"""

from __future__ import annotations

from typing import Any

JsonPatch = list[dict[str, Any]]


def json_patch(old: Any, new: Any) -> JsonPatch:
    """The operations that turn `old` into `new`; [] when they are equal as JSON."""
    ops: JsonPatch = []
    _diff(old, new, "", ops)
    return ops


def pointer_token(key: str) -> str:
    """One reference token of an RFC 6901 JSON Pointer: "~" and "/" are escaped, in that order."""
    return key.replace("~", "~0").replace("/", "~1")


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: unlike Python's ==, true is not 1 (and {"x": true} is not {"x": 1})."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and a == b


def _diff(old: Any, new: Any, path: str, ops: JsonPatch) -> None:
    if json_equal(old, new):
        return
    if isinstance(old, dict) and isinstance(new, dict):
        ops.extend({"op": "remove", "path": f"{path}/{pointer_token(key)}"} for key in old if key not in new)
        for key, value in new.items():
            child = f"{path}/{pointer_token(key)}"
            if key in old:
                _diff(old[key], value, child, ops)
            else:
                ops.append({"op": "add", "path": child, "value": value})
        return
    if isinstance(old, list) and isinstance(new, list) and _only_appended(old, new):
        ops.extend({"op": "add", "path": f"{path}/-", "value": item} for item in new[len(old) :])
        return
    ops.append({"op": "replace", "path": path, "value": new})


def _only_appended(old: list[Any], new: list[Any]) -> bool:
    return len(new) > len(old) and all(json_equal(x, y) for x, y in zip(old, new, strict=False))
