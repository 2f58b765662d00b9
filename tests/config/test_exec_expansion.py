"""`$(VAR)` in exec probe commands, expanded from the container's env as the kubelet does.

The kubelet runs an exec probe's command through ExpandContainerCommandOnlyStatic
(kubernetes pkg/kubelet/container/helpers.go): every env name maps to its `value`
(v1EnvVarsToMap, so a `valueFrom` entry, whose value is only known at run time, maps to
""), and the expansion is Go's forked os.Expand (kubernetes third_party/forked/golang/
expansion/expand.go): `$$` escapes `$`, an undefined `$(VAR)` stays as written.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from probes.spec import ExecSpec
from sidecar.config.documents import load_documents
from sidecar.config.loader import load_config
from sidecar.config.probe import expand_command_argument
from sidecar.contract import CONFIG_ENV
from sidecar.errors import ConfigError
from sidecar.k8s.inject import InjectOptions, inject_documents, sidecar_entry
from tests.conftest import sidecar_cmd

ENV = {"MODE": "ready", "EMPTY": "", "FROM_SECRET": ""}


@pytest.mark.parametrize(
    ("argument", "expanded"),
    [
        ("$(MODE)", "ready"),
        ("test $(MODE) = ready", "test ready = ready"),
        ("$$(MODE)", "$(MODE)"),  # the escape
        ("$$$(MODE)", "$ready"),
        ("$$$$", "$$"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # left as written
        ("$(EMPTY)x", "x"),
        ("$(FROM_SECRET)", ""),  # valueFrom: known only to the kubelet at run time
        ("$()", "$()"),
        ("$(MODE", "$(MODE"),  # unclosed
        ("a$b $", "a$b $"),  # a $ that starts no reference, and a trailing one
        ("$(MODE)$(MODE)", "readyready"),
        ("no dollar", "no dollar"),
    ],
)
def test_expansion_matches_the_kubelets(argument: str, expanded: str) -> None:
    assert expand_command_argument(argument, ENV) == expanded


POD = """\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: app
      env:
        - {name: MODE, value: ready}
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}
        - {name: MODE, value: really-ready}
      readinessProbe:
        exec:
          command:
            - sh
            - -c
            # The script is expanded too: sh sees '$(MODE)' and '$(UNDEF)' as quoted literals.
            - test "$1" = really-ready && test "$2" = '$$(MODE)' && test "$3" = '$(UNDEF)' && test "$4" = '[]'
            - sh
            - $(MODE)
            - $$(MODE)
            - $(UNDEF)
            - "[$(TOKEN)]"
"""


def test_a_manifests_exec_command_is_expanded_at_load(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(POD)
    (app,) = load_config(config_file=str(tmp_path / "pod.yaml"), environ={}).containers
    assert isinstance(app.handler, ExecSpec)
    assert app.handler.command[4:] == ("really-ready", "$(MODE)", "$(UNDEF)", "[]"), "the last MODE wins"


def test_the_expanded_command_really_runs(tmp_path: Path, sidecar_env: dict[str, str]) -> None:
    (tmp_path / "pod.yaml").write_text(POD)
    done = subprocess.run(sidecar_cmd("check", "-f", str(tmp_path / "pod.yaml"), "--json"),
                          env=sidecar_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["containers"][0]["message"] == "exit 0"


def test_a_containers_file_is_expanded_from_its_own_env() -> None:
    text = json.dumps({"containers": [{
        "name": "app", "env": [{"name": "MODE", "value": "ready"}],
        "readinessProbe": {"exec": {"command": ["test", "$(MODE)", "=", "ready"]}},
    }]})  # fmt: skip
    (app,) = load_config(environ={CONFIG_ENV: text}).containers
    assert app.handler == ExecSpec(("test", "ready", "=", "ready"))


def test_sources_without_env_take_commands_as_written() -> None:
    knative = json.dumps({"exec": {"command": ["echo", "$$(X)", "$(X)"]}})
    (from_env,) = load_config(environ={"SERVING_READINESS_PROBE": knative}).containers
    (from_flag,) = load_config(probe_flags=["x=exec:echo $$(X) $(X)"], environ={}).containers
    assert from_env.handler == from_flag.handler == ExecSpec(("echo", "$$(X)", "$(X)"))


def test_inject_writes_the_expanded_command_so_the_sidecar_reads_it_back_unchanged() -> None:
    # --exec-probes sidecar: the sidecar runs the command, from the config inject wrote, which
    # has no env; a `$` it holds is escaped there, so nothing is expanded twice.
    (doc,) = load_documents(POD, "pod.yaml")
    (injected,), _ = inject_documents([doc], "pod.yaml", InjectOptions(exec_probes="sidecar"))
    entry = sidecar_entry(injected["spec"])
    assert entry is not None
    (env,) = entry["env"]
    (reloaded,) = load_config(environ={CONFIG_ENV: env["value"]}).containers
    assert isinstance(reloaded.handler, ExecSpec)
    assert reloaded.handler.command[4:] == ("really-ready", "$(MODE)", "$(UNDEF)", "[]")
    assert "$$(MODE)" in env["value"], "the literal $ is escaped in what inject writes"


def test_a_malformed_env_is_one_line_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(POD.replace("- {name: MODE, value: ready}", "- {name: MODE, valu: ready}", 1))
    with pytest.raises(ConfigError) as caught:
        load_config(config_file=str(tmp_path / "pod.yaml"), environ={})
    assert str(caught.value) == (
        f'{tmp_path / "pod.yaml"}: Pod/p: container "app": env[0].valu: unknown field; did you mean value?'
    )


def test_env_of_any_shape_never_stops_a_container_without_exec_probes(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, env: [{name: X, odd: 1}],"
        " ports: [{containerPort: 80}]}]}\n"
    )
    (a,) = load_config(config_file=str(tmp_path / "pod.yaml"), environ={}).containers
    assert a.handler is not None
