"""What `inject` and the webhook can be asked to do: cheap to import, so the CLI's parser can use it.

    options = InjectOptions(exec_probes="sidecar", native_sidecar=True)
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar import __version__
from sidecar.contract import SIDECAR_NAME

DEFAULT_IMAGE = f"{SIDECAR_NAME}:{__version__}"
# kubelet: exec readiness probes stay with the kubelet; sidecar: the sidecar runs them.
EXEC_PROBE_MODES = ("kubelet", "sidecar")


@dataclass(frozen=True, slots=True)
class InjectOptions:
    image: str = DEFAULT_IMAGE
    exec_probes: str = "kubelet"  # or "sidecar"
    native_sidecar: bool = False
    rewrite_liveness: bool = False

    def __post_init__(self) -> None:
        if self.exec_probes not in EXEC_PROBE_MODES:
            raise ValueError(f"exec_probes must be one of {EXEC_PROBE_MODES}, got {self.exec_probes!r}")
