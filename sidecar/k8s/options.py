"""What `inject` and the webhook can be asked to do: cheap to import, so the CLI's parser can use it.

    options = InjectOptions(exec_probes="sidecar", native_sidecar=True)

A pod's own annotations win over these (sidecar.k8s.pod_settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar import __version__
from sidecar.contract import IMAGE_ANNOTATION, IMAGE_ENV, SIDECAR_NAME

# The name a local build stores: `podman build -t readiness-sidecar:0.1.0 .` tags
# localhost/readiness-sidecar:0.1.0 (podman qualifies a bare name with localhost/), and
# `docker build -t localhost/readiness-sidecar:0.1.0 .` gives the same name. No registry
# serves it: a cluster needs the registry's name, hence the warning below.
DEFAULT_IMAGE = f"localhost/{SIDECAR_NAME}:{__version__}"
DEFAULT_IMAGE_WARNING = (
    f"the sidecar image is {DEFAULT_IMAGE}, the name of a local build, which no registry serves: "
    f"give the registry's with --image, env {IMAGE_ENV} or the pod annotation {IMAGE_ANNOTATION}"
)
# kubelet: exec readiness probes stay with the kubelet; sidecar: the sidecar runs them.
EXEC_PROBE_MODES = ("kubelet", "sidecar")


@dataclass(frozen=True, slots=True)
class InjectOptions:
    image: str | None = None  # --image or READINESS_SIDECAR_IMAGE; None: DEFAULT_IMAGE
    exec_probes: str = "kubelet"  # or "sidecar"
    native_sidecar: bool = False
    rewrite_liveness: bool = False

    def __post_init__(self) -> None:
        if self.exec_probes not in EXEC_PROBE_MODES:
            raise ValueError(f"exec_probes must be one of {EXEC_PROBE_MODES}, got {self.exec_probes!r}")

    @property
    def image_or_default(self) -> str:
        return self.image or DEFAULT_IMAGE
