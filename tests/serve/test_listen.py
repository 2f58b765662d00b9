"""serve.listen: the default bind is one dual-stack socket; explicit addresses keep their family."""

from __future__ import annotations

import socket

import pytest

from sidecar.errors import ConfigError
from sidecar.runtime.settings import DEFAULT_BIND, RunSettings
from sidecar.serve.listen import DUAL_STACK, listening_socket

needs_ipv6 = pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")


def _reachable(family: int, host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_default_bind_is_dual_stack() -> None:
    assert DEFAULT_BIND == DUAL_STACK == RunSettings().bind


@needs_ipv6
def test_dual_stack_takes_ipv4_and_ipv6() -> None:
    with listening_socket(DUAL_STACK, 0) as sock:
        sock.listen(8)
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        assert _reachable(socket.AF_INET, "127.0.0.1", port)
        assert _reachable(socket.AF_INET6, "::1", port)


def test_explicit_ipv4_is_ipv4_only() -> None:
    with listening_socket("0.0.0.0", 0) as sock:
        sock.listen(8)
        assert sock.family == socket.AF_INET
        assert not _reachable(socket.AF_INET6, "::1", sock.getsockname()[1])


@needs_ipv6
@pytest.mark.parametrize("bind", ["::", "[::1]"])
def test_explicit_ipv6_is_ipv6_only(bind: str) -> None:
    with listening_socket(bind, 0) as sock:
        sock.listen(8)
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert not _reachable(socket.AF_INET, "127.0.0.1", sock.getsockname()[1])


def test_no_ipv6_falls_back_to_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket

    def no_v6(family: int = socket.AF_INET, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")  # EAFNOSUPPORT
        return real(family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", no_v6)
    with listening_socket(DUAL_STACK, 0) as sock:
        assert sock.family == socket.AF_INET


def test_a_port_in_use_is_an_error_not_a_fallback() -> None:
    with listening_socket(DUAL_STACK, 0) as first:
        first.listen(8)
        with pytest.raises(OSError):
            listening_socket(DUAL_STACK, first.getsockname()[1])


def test_a_bracketed_ipv6_bind_is_the_address_itself() -> None:
    settings = RunSettings.from_raw({"bind": "[::1]"})
    assert settings.bind == "::1"  # shown as [::1]:8550 once, never [[::1]]:8550
    with pytest.raises(ConfigError):
        RunSettings.from_raw({"bind": "[]"})
