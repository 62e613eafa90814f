"""What /proc tells of a process of this node, for `ringtgt status`: how long it has run, the CPUs it may run on,
and how many TCP connections it holds. Each call reads a few small /proc files; None where the process is gone."""
from __future__ import annotations

import os

TCP_ESTABLISHED = "01"
_TICKS = os.sysconf("SC_CLK_TCK")


def uptime(pid: int) -> float | None:
    """Seconds since `pid` started (its start time in /proc/PID/stat, clock ticks after boot)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / _TICKS
        with open("/proc/uptime") as f:
            booted_for = float(f.read().split()[0])
    except OSError:
        return None
    return round(max(0.0, booted_for - started), 1)


def cpus(pid: int) -> str | None:
    """The CPUs `pid` may run on, as a list like "0-3,6" (Cpus_allowed_list's notation)."""
    try:
        allowed = sorted(os.sched_getaffinity(pid))
    except OSError:
        return None
    ranges: list[list[int]] = []
    for cpu in allowed:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def tcp_connections(pid: int) -> int | None:
    """Established TCP connections (IPv4 and IPv6) whose socket `pid` holds open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    sockets = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue                        # closed meanwhile
        if link.startswith("socket:["):
            sockets.add(link[len("socket:["):-1])
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    count += fields[3] == TCP_ESTABLISHED and fields[9] in sockets
        except OSError:
            continue
    return count
