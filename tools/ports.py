"""TCP ports on this machine: is one free, and which program holds it.

`arcade run` checks its ports before it starts anything (a Mosquitto already on 1883 would
otherwise take our payments without our passwords or ACL), and afterwards that the process
listening on each port is the one it started. The holder is read from Linux's /proc; elsewhere,
or for another user's process without root, it is unknown and the message says how to look.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def addresses_to_check(host: str) -> list[str]:
    """Where a program would get in our way: a loopback host is also reached as `localhost`,
    which resolves to ::1 first on most systems."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "::1"]
    if host in ("0.0.0.0", ""):
        return ["0.0.0.0", "::"]
    return [host]


def port_taken(host: str, port: int) -> bool:
    """True when something listens on (any address that reaches) host:port."""
    for address in addresses_to_check(host):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As the servers we start do: a port left in TIME_WAIT by our last run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address, port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
                # No IPv6 on this machine (or no such address): nothing can listen there.
    return False


def listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on `port` (IPv4 and IPv6), or None without /proc."""
    found: set[str] = set()
    tables = [PROC / "net" / "tcp", PROC / "net" / "tcp6"]
    if not tables[0].is_file():
        return None
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                found.add(inode)
    return found


def listening_pids(port: int) -> set[int] | None:
    """Pids of the processes holding a listening socket on `port`.

    None when that cannot be known: no /proc, or a listener whose owner we may not look at.
    """
    inodes = listening_inodes(port)
    if inodes is None:
        return None
    pids: set[int] = set()
    seen: set[str] = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        held = {link[8:-1] for link in fd_links(entry) if link.startswith("socket:[")} & inodes
        if held:
            pids.add(int(entry.name))
            seen |= held
    return pids if seen == inodes else None


def fd_links(process: Path) -> list[str]:
    """What a process's open files are; empty for one we may not look at, or that is gone."""
    try:
        fds = list((process / "fd").iterdir())
    except OSError:
        return []
    links = []
    for fd in fds:
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
    return links


def process_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def holder(port: int) -> str:
    """'mosquitto (pid 812)', or a way to find out when we cannot see it."""
    pids = listening_pids(port)
    if pids:
        return ", ".join(f"{process_name(pid)} (pid {pid})" for pid in sorted(pids))
    return f"another program (`sudo ss -ltnp 'sport = :{port}'` shows which)"


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (gunicorn's workers under its master)."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {pid}, True
    while grew:
        below = {child for child, parent in parents.items() if parent in family}
        grew = not below <= family
        family |= below
    return family


def held_by(port: int, pid: int) -> bool | None:
    """Whether the listener on `port` is `pid` or one of its descendants (None: cannot tell)."""
    pids = listening_pids(port)
    if pids is None:
        return None
    return bool(pids) and pids <= descendants(pid)


def free_port_after(port: int, host: str = "127.0.0.1") -> int:
    """The first free port above `port`, to suggest in a message."""
    candidate = port + 1
    while candidate < 65535 and port_taken(host, candidate):
        candidate += 1
    return candidate
