"""What a process holds, read from /proc: descriptors, memory, threads, children, sockets.

    fds = open_fds(pid)                 # Counter({"socket": 12, "pipe": 4, "anon_inode": 3, ...})
    rss_bytes(pid), thread_count(pid)
    children(pid)                       # [Proc(pid=..., state="S", pgrp=...), ...]
    listening_sockets(pid)              # [("tcp", "127.0.0.1", 8550), ...]
"""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    state: str  # R, S, D, Z, ...
    ppid: int
    pgrp: int
    session: int


def proc(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return Proc(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]))


def open_fds(pid: int) -> Counter[str]:
    """Open descriptors by kind: socket, pipe, anon_inode, file, ..."""
    kinds: Counter[str] = Counter()
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:  # closed while we looked
            continue
        kinds[target.split(":", 1)[0] if ":" in target else "file"] += 1
    return kinds


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def rss_bytes(pid: int) -> int:
    return int(_status_field(pid, "VmRSS").split()[0]) * 1024


def thread_count(pid: int) -> int:
    return int(_status_field(pid, "Threads"))


def children(pid: int) -> list[Proc]:
    """Direct children, zombies included, from every thread's list."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            listing = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found += [p for child in listing.split() if (p := proc(int(child))) is not None]
    return found


def tagged(name: str, value: str) -> list[Proc]:
    """Every process whose environment holds name=value: a process and all it starts, however
    they regroup, change session or get reparented (unless one clears its environment)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or a kernel thread
            continue
        if needle in environ.split(b"\0") and (p := proc(int(entry))) is not None:
            found.append(p)
    return found


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16))), int(port, 16)
    words = struct.unpack("<4I", raw)  # each 32-bit word is in host (little-endian) order
    return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words)), int(port, 16)


def tcp_peer_ports(pid: int) -> list[int]:
    """The remote port of each TCP socket the process holds (0 for listening ones)."""
    inodes = socket_inodes(pid)
    ports = []
    for proto in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[2].rpartition(":")[2], 16))
    return ports


def listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every listening TCP socket and every unconnected
    UDP socket the process holds, from /proc/net/{tcp,tcp6,udp,udp6}."""
    inodes = socket_inodes(pid)
    found = []
    for proto, wanted in (("tcp", _TCP_LISTEN), ("tcp6", _TCP_LISTEN), ("udp", _UDP_UNCONNECTED),
                          ("udp6", _UDP_UNCONNECTED)):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in inodes and state == wanted:
                found.append((proto, *_address(local)))
    return found
