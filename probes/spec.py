"""Handler specs: what to probe, resolved and validated.

The config loader (`sidecar.config`) produces these; a probe consumes one. Ports are
always numbers here: named ports were resolved by the loader, and so is the host.

`host_defaulted` (httpGet, tcpSocket) is True when the source named no host and `host` is
the load's default (127.0.0.1, or POD_IP with --probe-host pod-ip). No probe reads it: it is
for inject's encoder, which writes a host exactly where one was written, so that the
injected sidecar's own --probe-host decides the rest. It is not part of equality: the same
target is the same check, however it was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The kubelet sends its own version; we present a current release so servers that
# special-case kube-probe see what they would see from a real kubelet.
KUBE_PROBE_VERSION = "1.37"
KUBE_PROBE_USER_AGENT = f"kube-probe/{KUBE_PROBE_VERSION}"

DEFAULT_HOST = "127.0.0.1"  # pod containers share one network namespace


def join_host_port(host: str, port: int | str) -> str:
    """host:port, with an IPv6 literal in brackets (Go's net.JoinHostPort): the one place for it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class HttpGetSpec:
    port: int
    path: str = "/"
    host: str = DEFAULT_HOST
    scheme: str = "http"  # "http" or "https", lower case
    # (name, value) pairs in the order given; names may repeat, as in httpHeaders.
    headers: tuple[tuple[str, str], ...] = ()
    host_defaulted: bool = field(default=False, compare=False)

    @property
    def kind(self) -> str:
        return "httpGet"

    @property
    def target(self) -> str:
        path = self.path if self.path.startswith("/") else "/" + self.path
        return f"{self.scheme}://{join_host_port(self.host, self.port)}{path}"


@dataclass(frozen=True, slots=True)
class TcpSocketSpec:
    port: int
    host: str = DEFAULT_HOST
    host_defaulted: bool = field(default=False, compare=False)

    @property
    def kind(self) -> str:
        return "tcpSocket"

    @property
    def target(self) -> str:
        return f"tcp://{join_host_port(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class GrpcSpec:
    port: int
    service: str = ""
    host: str = DEFAULT_HOST

    @property
    def kind(self) -> str:
        return "grpc"

    @property
    def target(self) -> str:
        suffix = f"/{self.service}" if self.service else ""
        return f"grpc://{join_host_port(self.host, self.port)}{suffix}"


@dataclass(frozen=True, slots=True)
class ExecSpec:
    command: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "exec"

    @property
    def target(self) -> str:
        import shlex

        return "exec:" + shlex.join(self.command)


HandlerSpec = HttpGetSpec | TcpSocketSpec | GrpcSpec | ExecSpec
