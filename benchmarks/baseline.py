"""Another revision of the sidecar, installed beside this checkout: `python -m benchmarks --baseline-rev REV`.

    baseline = install_revision("4afabf6", scratch)   # about 0.2 s
    await start_sidecar(containers, workdir, install=baseline.install)

`git archive REV` is unpacked into `scratch`, and a venv made without pip gets two path
files: one naming the tree, which is what an editable install amounts to, and one naming
this venv's site-packages, so both sides run the very same aiohttp, grpcio and uvloop and
nothing is downloaded. (`pip install --no-deps --no-build-isolation` of the tree fails
offline here: this venv's setuptools needs the `wheel` package for bdist_wheel.) Only the
sidecar under test runs from it; the driver (targets, clients, measurement) is always this
checkout. The baseline runs with PYTHONSAFEPATH, so `python -m sidecar` never picks up this
checkout from the working directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.sidecar_process import REPO, SidecarInstall
from tests.sidecar_process import sidecar_environ

# Every `run` flag the harness passes (tests/sidecar_process.py, benchmarks/sidecar_process.py,
# detection.py's variants and trials): a revision without one can't be benchmarked as it is.
HARNESS_RUN_FLAGS = (
    "--bind", "--ports-file", "-f", "--health-port", "--grpc-port", "--metrics-port", "--drain-seconds",
    "--loop", "--steady-period", "--aggressive-interval", "--aggressive-timeout",
)
# check_startup.py times `check --probe`.
HARNESS_CHECK_FLAGS = ("--probe",)
_SETUP_TIMEOUT = 60.0


class BaselineError(Exception):
    """The baseline can't be installed or can't run the harness; str() is one line."""


@dataclass(frozen=True, slots=True)
class Baseline:
    rev: str  # as given
    commit: str  # full hash
    install: SidecarInstall
    install_seconds: float


def install_revision(rev: str, scratch: Path) -> Baseline:
    started = time.monotonic()
    commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", failure=f"no commit {rev!r} in {REPO}")
    short = _git("rev-parse", "--short", commit, failure=f"no commit {rev!r}")
    tree, venv = scratch / f"tree-{short}", scratch / f"venv-{short}"
    tree.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
    unpacked = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=False)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0 or unpacked.returncode != 0:
        raise BaselineError(f"git archive {commit} | tar -x failed")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=_SETUP_TIMEOUT)
    python = venv / "bin" / "python"
    site_packages = Path(_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 sidecar_environ()))
    # Path files are read in name order: the baseline's own code comes before the shared dependencies.
    (site_packages / "a-baseline-tree.pth").write_text(f"{tree}\n")
    driver = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "z-driver-dependencies.pth").write_text("".join(f"{path}\n" for path in driver))
    environ = sidecar_environ()
    del environ["PYTHONPATH"]
    environ["PYTHONSAFEPATH"] = "1"
    install = SidecarInstall(short, str(python), environ)
    _check_imports_from(install, tree)
    check_flags(install, rev)
    return Baseline(rev, commit, install, time.monotonic() - started)


def check_flags(install: SidecarInstall, rev: str) -> None:
    """BaselineError naming every flag the harness needs that `rev`'s CLI lacks."""
    missing = []
    for command, flags in (("run", HARNESS_RUN_FLAGS), ("check", HARNESS_CHECK_FLAGS)):
        usage = _output([install.python, "-m", "sidecar", command, "--help"], install.environment())
        missing += [f"{command} {flag}" for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])",
                                                                           usage)]
    if missing:
        raise BaselineError(f"baseline {rev} lacks flag(s) the benchmarks pass: {', '.join(missing)}")


def _check_imports_from(install: SidecarInstall, tree: Path) -> None:
    found = _output([install.python, "-c", "import probes, sidecar; print(sidecar.__file__); print(probes.__file__)"],
                    install.environment()).splitlines()
    stray = [path for path in found if not Path(path).is_relative_to(tree)]
    if stray:
        raise BaselineError(f"the baseline venv imports {', '.join(stray)}, not its own tree {tree}")


def _git(*args: str, failure: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BaselineError(failure)
    return done.stdout.strip()


def _output(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=_SETUP_TIMEOUT, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BaselineError(f"{' '.join(argv[1:])} failed in the baseline venv: {last}")
    return done.stdout.strip()
