"""What an exec probe can run inside the sidecar's container (`inject --exec-probes sidecar`).

The image is built FROM an official python:3.x-slim base, whose PATH is IMAGE_PATH.
We promise only the commands in SHIPPED_COMMANDS: the rest of the base image may
change under us. A command can also live on a volume the user container mounts:
inject then mounts that volume, read-only, into the sidecar at the same path.

    runs_in_sidecar(("cat", "/tmp/ready"), [])                             # True
    runs_in_sidecar(("redis-cli", "ping"), [])                             # False
    runs_in_sidecar(("/probes/check",), [{"name": "p", "mountPath": "/probes"}])  # True
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

IMAGE_PATH = ("/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SHIPPED_COMMANDS = frozenset({"sh", "test", "cat", "true", "ls", "python3", "readiness-sidecar"})


def runs_in_sidecar(command: Sequence[str], volume_mounts: Sequence[Any]) -> bool:
    """Whether argv[0] exists in the sidecar: a shipped command, or a file on a shared mount."""
    program = command[0] if command else ""
    if "/" not in program:
        return program in SHIPPED_COMMANDS
    directory, name = posixpath.split(posixpath.normpath(program))
    if directory in IMAGE_PATH and name in SHIPPED_COMMANDS:
        return True
    return mount_holding(program, volume_mounts) is not None


def mount_holding(program: str, volume_mounts: Sequence[Any]) -> dict[str, Any] | None:
    """The volumeMount (of the user container) whose directory holds `program`, if any."""
    if not posixpath.isabs(program):
        return None
    path = posixpath.normpath(program)
    for mount in volume_mounts:
        if not isinstance(mount, dict):
            continue
        mount_path = mount.get("mountPath")
        if isinstance(mount_path, str) and posixpath.isabs(mount_path):
            root = posixpath.normpath(mount_path)
            if path.startswith(root.rstrip("/") + "/"):
                return mount
    return None


def shared_mount(mount: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's read-only copy of a user container's volumeMount."""
    shared: dict[str, Any] = {"name": mount.get("name"), "mountPath": mount.get("mountPath"), "readOnly": True}
    if mount.get("subPath"):
        shared["subPath"] = mount["subPath"]
    return shared
