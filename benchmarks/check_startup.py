"""`check` start-up: the wall-clock of `python -m sidecar check --probe x=tcp://127.0.0.1:PORT`.

The port is closed, so the probe itself is a refused connect (microseconds): what is timed
is the interpreter, the imports and the config, as a Docker HEALTHCHECK or a kubelet exec
probe pays them. Beside it, in the same run, `python -c pass`: the interpreter alone.
The commands alternate run by run (pass, then each install's check) so all see the same noise.

    times = await check_startup((THIS_CHECKOUT,), runs=15)
    times["this"], times[PYTHON_ALONE]    # seconds, one per run
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence

from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall
from benchmarks.targets import free_port_outside_ephemeral

PYTHON_ALONE = "python -c pass"
# check's exit status for "not ready"; anything else (2: a config error) means the command is wrong.
EXIT_NOT_READY = 1
RUN_TIMEOUT = 30.0
# Untimed: the first run of a command reads its files from disk (and compiles what has no bytecode yet).
WARM_UP_RUNS = 1


def _timed(argv: list[str], env: dict[str, str], expected: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != expected:
        raise RuntimeError(f"{' '.join(argv[1:])} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return elapsed


async def check_startup(installs: Sequence[SidecarInstall], *, runs: int) -> dict[str, list[float]]:
    port = free_port_outside_ephemeral(set())  # bound by no one: every connect is refused
    commands = [(PYTHON_ALONE, [sys.executable, "-c", "pass"], THIS_CHECKOUT.environment(), 0)]
    commands += [
        (install.label, [install.python, "-m", "sidecar", "check", "--probe", f"x=tcp://127.0.0.1:{port}"],
         install.environment(), EXIT_NOT_READY)
        for install in installs
    ]
    times: dict[str, list[float]] = {label: [] for label, *_ in commands}
    for run in range(WARM_UP_RUNS + runs):
        for label, argv, env, expected in commands:
            # In a thread: the driver's loop has nothing else to do, and the timing stays in the thread.
            elapsed = await asyncio.to_thread(_timed, argv, env, expected)
            if run >= WARM_UP_RUNS:
                times[label].append(elapsed)
    return times
