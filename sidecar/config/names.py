"""Container names: what Kubernetes accepts, and what Knative calls unnamed containers.

Names end up in URLs (`/ready/<name>`), gRPC service names and metric labels, so
every source (manifest, containers file, `--probe`) is held to the Kubernetes rule.

    knative_default_names([None, "db"], taken={"db"}, base=USER_CONTAINER_NAME)
    # ["user-container-0", "db"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any

from sidecar.errors import ErrorContext, quote

# Knative's config-defaults `container-name-template` and its init-container twin.
USER_CONTAINER_NAME = "user-container"
INIT_CONTAINER_NAME = "init-container"

MAX_NAME_CHARS = 63  # a DNS-1123 label
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_container_name(name: object, ctx: ErrorContext, field: str) -> str:
    """`name` if it is a valid container name (a DNS-1123 label), else ConfigError."""
    if not isinstance(name, str):
        raise ctx.error(field, f"must be a string, got {quote(name)}")
    if len(name) > MAX_NAME_CHARS or not _DNS_LABEL.fullmatch(name):
        raise ctx.error(
            field,
            f"invalid container name {quote(name)}: use lower-case letters, digits and '-' (at most {MAX_NAME_CHARS})",
        )
    return name


def knative_default_names(given: Sequence[str | None], taken: Set[str], base: str) -> list[str]:
    """Names for one container list as Knative's revision defaulting assigns them.

    An unnamed container is called `base` when it is alone and the name is free;
    otherwise `base-0`, `base-1`... counting generated names only and skipping any
    name a user already took (knative.dev/serving applyDefaultContainerNames).
    """
    names: list[str] = []
    next_suffix = 0
    for name in given:
        if name:
            names.append(name)
            continue
        candidate = base
        if len(given) > 1 or candidate in taken:
            while True:
                candidate = f"{base}-{next_suffix}"
                next_suffix += 1
                if candidate not in taken:
                    break
        names.append(candidate)
    return names


def container_named(pod_spec: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The container or init container called `name`, in a pod spec of any shape (it may not
    be validated yet: inject --force goes past lint errors)."""
    for key in ("containers", "initContainers"):
        entries = pod_spec.get(key)
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
    return None
