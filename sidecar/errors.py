"""The one error type a user can cause, rendered as one line."""

from __future__ import annotations


class ConfigError(Exception):
    """A user mistake in config, flags or a manifest.

    It renders as one line naming where it came from, so the CLI can print it and
    exit 2 without a traceback:

        raise ConfigError("pod.yaml", 'Deployment/web: container "app"',
                          "readinessProbe.httpGet.port", 'named port "http" not found in ports')
        # pod.yaml: Deployment/web: container "app": readinessProbe.httpGet.port: named port ...
    """

    def __init__(self, source: str, where: str = "", field: str = "", problem: str = "") -> None:
        self.source = source
        self.where = where
        self.field = field
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.where, self.field, self.problem) if p]
        return ": ".join(parts)
