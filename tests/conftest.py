"""Shared test plumbing.

Tests that need a real peer (Prometheus, network namespaces, podman) call
`require_peer(reason)` when it is missing: on a laptop that skips, but in CI,
where `.ci/run` sets READINESS_SIDECAR_REQUIRE_PEERS=1, it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from probes.result import ProbeResult

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PEER_MANIFESTS = SHARED / "peer-manifests"
DATA = REPO / "tests" / "data"  # the suites' own manifests


def peers_required() -> bool:
    return os.environ.get("READINESS_SIDECAR_REQUIRE_PEERS", "") not in ("", "0", "false")


def require_peer(reason: str) -> None:
    """Skip (laptop) or fail (CI) because a real peer is missing."""
    if peers_required():
        pytest.fail(f"required peer missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def finishes_without_suspending(attempt: Coroutine[Any, Any, ProbeResult]) -> ProbeResult:
    """Run a probe attempt one step: it must return before it ever waits on the event loop."""
    try:
        attempt.send(None)
    except StopIteration as done:
        result: ProbeResult = done.value
        return result
    attempt.close()
    raise AssertionError("the attempt waited on the event loop")


def sidecar_cmd(*args: str) -> list[str]:
    """The CLI as a subprocess, from this checkout, with this interpreter."""
    return [sys.executable, "-m", "sidecar", *args]


def run_cli(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`readiness-sidecar ARGS` run to its end from the checkout's directory: exit code, stdout and stderr."""
    return subprocess.run(sidecar_cmd(*args), input=stdin, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)  # fmt: skip


@pytest.fixture
def sidecar_env() -> dict[str, str]:
    """Environment for CLI subprocesses: this checkout first on the path, no stray config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("READINESS_SIDECAR_", "SERVING_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if peers_required():
        env["READINESS_SIDECAR_REQUIRE_PEERS"] = "1"
    return env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_last: slow whole-system test; runs after the rest of the suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: everything keeps its order, the run_last tests just move to the end.
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
