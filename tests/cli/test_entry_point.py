"""What every command gets from the entry point, and what `check` must not pay for.

The dependency guard is Knative's idea (knative.dev/serving cmd/queue/nodeps_test.go keeps
queue-proxy's binary free of heavy packages): `check` runs as a Docker HEALTHCHECK and a
kubelet exec probe, so a TCP or HTTP check must start without the servers' libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import sidecar_cmd

# What only `run` and `webhook` need: the servers (aiohttp, grpc), metrics, and YAML for manifests;
# and shtab, for `completion` only.
HEAVY = ("aiohttp", "grpc", "yaml", "prometheus_client", "shtab")

_IMPORTED_AFTER_MAIN = (
    "import json, sys\n"
    "from sidecar.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    "raise SystemExit(code)\n"
)


@pytest.mark.parametrize(
    "probe", ["x=tcp://127.0.0.1:1", "x=http://127.0.0.1:1/healthz", "x=exec:true", "x=grpc://127.0.0.1:1"]
)
def test_check_imports_none_of_the_servers_libraries(probe: str, sidecar_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED_AFTER_MAIN, "check", "--probe", probe],
        env=sidecar_env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode in (0, 1), done.stderr
    imported = set(json.loads(done.stdout.splitlines()[-1]))
    assert "sidecar" in imported and "probes" in imported, "the guard must see the real modules"
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_check_runs_its_probes_with_grpc_fork_support_off(sidecar_env: dict[str, str]) -> None:
    # grpc reads GRPC_ENABLE_FORK_SUPPORT at import; its fork handlers only add warnings when
    # exec probes spawn children next to gRPC probes. The exec probe's child inherits the
    # sidecar's environment, so it can tell whether `check` set it.
    env = {k: v for k, v in sidecar_env.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        sidecar_cmd("check", "--probe", """fork=exec:sh -c 'test "$GRPC_ENABLE_FORK_SUPPORT" = false'"""),
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_explicit_grpc_fork_setting_is_left_alone(sidecar_env: dict[str, str]) -> None:
    done = subprocess.run(
        sidecar_cmd("check", "--probe", """fork=exec:sh -c 'test "$GRPC_ENABLE_FORK_SUPPORT" = true'"""),
        env={**sidecar_env, "GRPC_ENABLE_FORK_SUPPORT": "true"}, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
