"""What closing probe connections with FIN (as the kubelet does) costs, against RST.

    python -m benchmarks.close_cost --baseline-rev 5ad1e2f --seconds 60

1. The sidecar at two revisions, one closing with RST (the baseline, installed by
   benchmarks/baseline.py) and one with FIN (this checkout; the driver is always this
   checkout's), each probing an HTTP target for `--seconds` with the defaults: a target
   answering 503 (never ready: the aggressive phase, 5 ms widening to 100 ms) and one
   answering 200 (steady state, 1 s). It prints the TIME_WAIT sockets towards the target every 10 s, the
   attempts made, the ephemeral ports the run leaves free, and how the target saw each
   connection end: FIN (EOF) or RST (ECONNRESET).
2. The kernel's side, in a network namespace of our own with only 1000 ephemeral ports:
   connect+close to a loopback listener at the aggressive rate (200/s) for 10 s, with
   tcp_tw_reuse 0 and 2 (Linux's default, which lets new loopback connections reuse
   TIME_WAIT ports), counting connects that fail for want of a port (EADDRNOTAVAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.baseline import BaselineError, install_revision
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, SidecarProcess

# Linux's TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN); a run this long shows its plateau.
DEFAULT_SECONDS = 60
SAMPLE_EVERY = 10.0
NETNS = "rs-close-cost"

class _Target:
    """An HTTP target answering `status`, counting how each probe connection ended: FIN or RST."""

    def __init__(self, status: int) -> None:
        self.status, self.fin, self.rst = status, 0, 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.status)
            await writer.drain()
            if await reader.read(1) == b"":
                self.fin += 1
        except ConnectionResetError:
            self.rst += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _time_wait(port: int) -> int:
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"dst 127.0.0.1:{port}"],
                         capture_output=True, text=True, check=False).stdout
    return len(out.splitlines())


async def _run_side(install: SidecarInstall, status: int, seconds: float) -> dict[str, object]:
    """One side's sidecar (its own install) against one target, for `seconds`."""
    target = _Target(status)
    server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    car = await SidecarProcess.start(
        "--probe", f"app=http://127.0.0.1:{port}/", "--health-port", "0", "--grpc-port", "off",
        "--metrics-port", "off", "--drain-seconds", "0", python=install.python, environ=install.environ,
    )
    samples, started = [], time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            await asyncio.sleep(min(SAMPLE_EVERY, seconds - elapsed))
            samples.append(_time_wait(port))
        reader, writer = await asyncio.open_connection("127.0.0.1", car.health_port)
        writer.write(b"GET /status HTTP/1.0\r\n\r\n")
        status_doc = json.loads((await reader.read()).split(b"\r\n\r\n", 1)[1])
        writer.close()
    finally:
        await car.stop()
        server.close()
    (app,) = status_doc["containers"]
    return {"time_wait": samples, "attempts": app["attempts"], "fin": target.fin, "rst": target.rst,
            "last": app["message"]}


# connect+close at `rate` per second for `seconds` to a listener, in whatever netns this runs in.
_CHURN = r"""
import errno, json, socket, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(4096); listener.setblocking(False)
address = listener.getsockname()
ok = no_port = other = 0
next_at = time.monotonic()
end = next_at + seconds
while time.monotonic() < end:
    sock = socket.socket()
    try:
        sock.connect(address)
        ok += 1
    except OSError as exc:
        no_port += exc.errno == errno.EADDRNOTAVAIL
        other += exc.errno != errno.EADDRNOTAVAIL
    sock.close()  # FIN: the client's end goes to TIME_WAIT
    try:
        while True:
            listener.accept()[0].close()
    except BlockingIOError:
        pass
    next_at += 1 / rate
    time.sleep(max(0.0, next_at - time.monotonic()))
print(json.dumps({"connected": ok, "no_free_port": no_port, "other_errors": other}))
"""


def _free_ports() -> int:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    used = len(subprocess.run(["ss", "-Htan"], capture_output=True, text=True).stdout.splitlines())
    return high - low + 1 - used


def _churn_in_netns(reuse: int) -> dict[str, int]:
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        inside = ["ip", "netns", "exec", NETNS]
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*inside, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40999"], check=True)
        subprocess.run([*inside, "sysctl", "-q", "-w", f"net.ipv4.tcp_tw_reuse={reuse}"], check=True)
        done = subprocess.run([*inside, sys.executable, "-c", _CHURN, "200", "10"],
                              capture_output=True, text=True, check=True)
        result: dict[str, int] = json.loads(done.stdout)
        return result
    finally:
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="a revision that closes with RST")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    args = parser.parse_args(argv)
    print(f"host: tcp_tw_reuse={Path('/proc/sys/net/ipv4/tcp_tw_reuse').read_text().strip()}, ephemeral ports"
          f" {' - '.join(Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split())}, free now"
          f" {_free_ports()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="close-cost-") as scratch:
        try:
            baseline = install_revision(args.baseline_rev, Path(scratch))
        except BaselineError as exc:
            print(f"close_cost: {exc}", file=sys.stderr)
            return 2
        for status, phase in ((503, "never ready (aggressive phase)"), (200, "ready (steady period)")):
            for side, install in ((f"{args.baseline_rev} (RST)", baseline.install),
                                  ("this checkout (FIN)", THIS_CHECKOUT)):
                started = time.monotonic()
                result = asyncio.run(_run_side(install, status, args.seconds))
                print(f"{phase:32} {side:22} TIME_WAIT every {SAMPLE_EVERY:g}s {result['time_wait']},"
                      f" attempts {result['attempts']}, target saw FIN {result['fin']} / RST {result['rst']},"
                      f" free ports after {_free_ports()}, last {result['last']!r}"
                      f" ({time.monotonic() - started:.0f}s)", flush=True)
    if os.geteuid() == 0:
        for reuse in (0, 2):
            print(f"netns, 1000 ephemeral ports, connect+close (FIN) at 200/s for 10 s, tcp_tw_reuse={reuse}:"
                  f" {_churn_in_netns(reuse)}", flush=True)
    else:
        print("netns part skipped: needs root")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
