"""The stop signals every long-running command of ours answers, installed in one place.

SIGTERM is how the kubelet, podman and compose stop a container; SIGINT is Ctrl-C.

    with on_stop_signals(stop.set):
        await stop.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[], object]) -> Iterator[None]:
    """Call `handler` on the running loop for every SIGTERM or SIGINT while inside the block."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, handler)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            # The loop may already be closing (a demo app stopped by its parent).
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
