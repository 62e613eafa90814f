"""What /proc tells of a process of this node, for `ringtgt status` and the metrics: how long it has run, the CPU
time it used, the CPUs it may run on, and the sockets it holds, to count among the namespace's established TCP
connections (its TCP tables, read once per `ringtgt status`). None where the process is gone."""
from __future__ import annotations

import os

TCP_ESTABLISHED = "01"
_TICKS = os.sysconf("SC_CLK_TCK")


def started(pid: int) -> float | None:
    """When `pid` started, in seconds after boot (CLOCK_BOOTTIME's count; its start time in /proc/PID/stat, clock
    ticks after boot: rounded down to a tick)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19]) / _TICKS
    except OSError:
        return None


def uptime(pid: int) -> float | None:
    """Seconds since `pid` started."""
    began = started(pid)
    try:
        with open("/proc/uptime") as f:
            booted_for = float(f.read().split()[0])
    except OSError:
        return None
    return None if began is None else round(max(0.0, booted_for - began), 1)


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds `pid` has used (utime and stime of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


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


def established_tcp() -> set[str]:
    """The socket inodes of every established TCP connection (IPv4 and IPv6) in this network namespace."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/self/net/{table}") as f:
                next(f)
                inodes.update(fields[9] for line in f if (fields := line.split())[3] == TCP_ESTABLISHED)
        except OSError:
            continue                        # no IPv6
    return inodes


def sockets(pid: int) -> set[str] | None:
    """The inodes of the sockets `pid` holds open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue                        # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    return inodes
