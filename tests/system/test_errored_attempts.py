"""An errored attempt through a real `run` process: retried at once, then thrown away.

The kubelet's prober retries an attempt that errs up to 3 times back to back
(pkg/kubelet/prober/prober.go, runProbeWithRetries with maxProbeRetries = 3), and its
worker throws the result away (pkg/kubelet/prober/worker.go, doProbe). An HTTP response
whose body breaks after the headers is such an error (pkg/probe/http/http.go).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.sidecar_process import SidecarProcess


class BreakableTarget:
    """A raw HTTP peer: 'ok' answers 200, 'truncate' sends a short body and hangs up, 'fail' 503."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.request_times: list[float] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.request_times.append(time.monotonic())
            if self.mode == "truncate":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort")
            elif self.mode == "fail":
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _bursts(times: list[float], gap: float = 0.02) -> list[int]:
    """Requests grouped into back-to-back bursts: how many in each."""
    sizes: list[int] = []
    last = -1.0
    for t in times:
        if sizes and t - last < gap:
            sizes[-1] += 1
        else:
            sizes.append(1)
        last = t
    return sizes


async def test_an_errored_attempt_is_retried_three_times_and_never_flips_ready() -> None:
    target = BreakableTarget()
    await target.start()
    car = await SidecarProcess.start(
        "--health-port", "0", "--grpc-port", "off", "--metrics-port", "0", "--drain-seconds", "0",
        # failureThreshold 1: were an error counted, one would flip the container at once.
        "--probe", f"app=http://127.0.0.1:{target.port}/;failure=1", "--steady-period", "100ms",
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(car.base + "/ready?wait=10s") as resp:
                assert resp.status == 200
            target.mode = "truncate"
            target.request_times.clear()
            statuses = []
            for _ in range(20):  # 1 s: about ten attempts at the 100 ms steady period
                async with session.get(car.base + "/ready") as resp:
                    statuses.append(resp.status)
                await asyncio.sleep(0.05)
            errored = list(target.request_times)
            async with session.get(car.base + "/status") as resp:
                (app,) = (await resp.json())["containers"]
            async with session.get(f"http://127.0.0.1:{car.metrics_port}/metrics") as resp:
                metrics = await resp.text()
            target.mode = "fail"
            async with session.get(car.base + "/ready") as resp:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # a real failure still counts, at once
                async with session.get(car.base + "/ready") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.01)
            flipped = resp.status
    finally:
        await car.stop()
        await target.stop()
    assert set(statuses) == {200}, "an errored attempt never makes the pod not ready"
    bursts = _bursts(errored)
    assert len(bursts) >= 5, bursts
    assert all(size == 3 for size in bursts[1:-1]), f"three tries back to back per attempt: {bursts}"
    assert (app["ready"], app["last_result"], app["consecutive_failures"]) == (True, "error", 0)
    assert app["message"] == "error reading body: connection closed during body"
    error_count = [line for line in metrics.splitlines()
                   if line.startswith("readiness_probe_total{") and 'result="error"' in line]
    assert error_count and float(error_count[0].rsplit(" ", 1)[1]) >= 5, error_count
    assert flipped == 503
