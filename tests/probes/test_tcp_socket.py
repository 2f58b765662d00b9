"""TcpSocketProbe against real sockets on loopback: connect within the timeout, then close."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from probes.result import Outcome, ProbeResult
from probes.spec import TcpSocketSpec
from probes.tcp_socket import TcpSocketProbe
from tests.conftest import finishes_without_suspending

TIMEOUT = 0.3  # per attempt: short, so the hanging case stays fast
SLACK = 0.5  # what a loaded CI machine may add to a bounded attempt
TIME_WAIT = "06"  # the state column of /proc/net/tcp{,6}


@contextlib.asynccontextmanager
async def listening(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """An accepting server that holds each connection until the peer goes away."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.transport.abort()

    server = await asyncio.start_server(hold, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def refusing(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that is bound but never listens, so a connect is refused and nobody can take it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as reserved:
        reserved.bind((host, 0))
        yield reserved.getsockname()[1]


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A listener whose accept queue is full, so the kernel drops further SYNs and connect hangs.

    Backlog 0 leaves room for one connection nobody accepts; a second filler makes sure
    the queue is full before the probe's SYN arrives.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(2):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        yield port


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _time_wait_sockets(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                local, remote, state = line.split()[1:4]
                ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
                count += state == TIME_WAIT and port in ports
    return count


async def test_an_open_port_is_connected() -> None:
    async with listening() as port:
        result = await TcpSocketProbe(TcpSocketSpec(port=port)).attempt(TIMEOUT)
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "connected")
    assert 0 < result.duration < TIMEOUT


async def test_a_refused_connect_names_errno_and_address() -> None:
    with refusing() as port:
        result = await TcpSocketProbe(TcpSocketSpec(port=port)).attempt(TIMEOUT)
    assert (result.outcome, result.message) == (
        Outcome.FAILURE,
        f"connect ECONNREFUSED 127.0.0.1:{port}",
    )


async def test_a_dropped_syn_times_out_at_the_attempt_timeout() -> None:
    with black_hole() as port:
        result = await TcpSocketProbe(TcpSocketSpec(port=port)).attempt(TIMEOUT)
    assert (result.outcome, result.message) == (Outcome.FAILURE, "timeout after 0.3s")
    assert TIMEOUT <= result.duration < TIMEOUT + SLACK


async def test_a_host_name_is_resolved_inside_the_attempt() -> None:
    async with listening() as port:
        result = await TcpSocketProbe(TcpSocketSpec(port=port, host="localhost")).attempt(TIMEOUT)
    assert (result.outcome, result.message) == (Outcome.SUCCESS, "connected")


async def test_ipv6_loopback_connects_and_refusals_show_brackets() -> None:
    if not _ipv6_loopback():
        pytest.skip("no IPv6 on lo")
    async with listening("::1") as port:
        connected = await TcpSocketProbe(TcpSocketSpec(port=port, host="::1")).attempt(TIMEOUT)
    with refusing("::1") as port:
        refused = await TcpSocketProbe(TcpSocketSpec(port=port, host="::1")).attempt(TIMEOUT)
    assert (connected.outcome, connected.message) == (Outcome.SUCCESS, "connected")
    assert (refused.outcome, refused.message) == (
        Outcome.FAILURE,
        f"connect ECONNREFUSED [::1]:{port}",
    )


async def test_the_target_sees_a_fin_never_a_reset() -> None:
    # The kubelet's ProbeDialer closes with FIN: its comment rejects SO_LINGER 0 because the
    # RST shows up as errors in applications (kubernetes pkg/probe/dialer_others.go, issue 89898).
    ends: list[str] = []

    async def watch_the_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ends.append("fin" if await reader.read(1) == b"" else "data")
        except ConnectionResetError:
            ends.append("rst")
        writer.close()

    server = await asyncio.start_server(watch_the_end, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = TcpSocketProbe(TcpSocketSpec(port=port))
        results = [await probe.attempt(TIMEOUT) for _ in range(20)]
        for _ in range(100):
            if len(ends) == 20:
                break
            await asyncio.sleep(0.01)
        lingering = _time_wait_sockets(port)
    finally:
        server.close()
        await server.wait_closed()
    assert {r.message for r in results} == {"connected"}
    assert ends == ["fin"] * 20
    # The closing side keeps TIME_WAIT for 60 s: the price of FIN, measured in docs/performance.md.
    assert lingering >= 20


async def test_cancellation_propagates_and_closes_the_socket() -> None:
    with black_hole() as port:
        before = len(os.listdir("/proc/self/fd"))
        attempt = asyncio.create_task(TcpSocketProbe(TcpSocketSpec(port=port)).attempt(5.0))
        await asyncio.sleep(0.05)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        assert len(os.listdir("/proc/self/fd")) == before


async def test_no_file_descriptors_leak_across_hundreds_of_failing_attempts() -> None:
    with refusing() as refused, black_hole() as hole:
        probes = [TcpSocketProbe(TcpSocketSpec(port=port)) for port in (refused, hole)]
        await probes[0].attempt(TIMEOUT)
        before = len(os.listdir("/proc/self/fd"))
        results = [await probe.attempt(0.002) for _ in range(150) for probe in probes]
        after = len(os.listdir("/proc/self/fd"))
    assert {r.outcome for r in results} == {Outcome.FAILURE}
    assert after == before


async def test_a_refused_connect_is_answered_without_the_event_loop() -> None:
    # The kernel has already refused a non-blocking loopback connect when the call returns:
    # no future, task or timeout scope is needed to learn it (probes/dial.py, dial_at_once).
    with refusing() as port:
        result = finishes_without_suspending(TcpSocketProbe(TcpSocketSpec(port=port)).attempt(TIMEOUT))
        started = TcpSocketProbe(TcpSocketSpec(port=port)).start(TIMEOUT)
    assert (result.outcome, result.message) == (Outcome.FAILURE, f"connect ECONNREFUSED 127.0.0.1:{port}")
    assert started == ProbeResult(result.outcome, result.message, started.duration), "start() answers it itself"
