"""What /proc says about processes and their TCP sockets (IPv4 and IPv6, this network namespace)."""
from __future__ import annotations

import os
from pathlib import Path

TCP_ESTABLISHED, TCP_LISTEN = 0x01, 0x0A


def children(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(found))


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def rss_bytes(pid: int) -> int:
    """Resident set size of the process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for {pid}")


def open_files_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of the process, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise LookupError(f"no open files limit for {pid}")


def cpus_allowed(pid: int) -> str:
    """Cpus_allowed_list of the process's main thread, e.g. '1' or '0-1'."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise LookupError(f"no Cpus_allowed_list for {pid}")


def thread_cpus(pid: int) -> dict[str, set[int]]:
    """The CPUs each thread of the process may run on, by thread name (the union over threads of one name)."""
    found: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            found.setdefault(name, set()).update(cpu_list(cpus_allowed(int(task.name))))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def cpu_list(text: str) -> set[int]:
    """'0-2,5' → {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets among the process's open files."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_sockets(local_port: int, state: int, remote_port: int | None = None) -> set[int]:
    """Inodes of TCP sockets with this local port (and remote port, if given) in this state."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rpartition(":")[2], 16)
            peer_port = int(fields[2].rpartition(":")[2], 16)
            if port == local_port and int(fields[3], 16) == state and remote_port in (None, peer_port):
                inodes.add(int(fields[9]))
    return inodes
