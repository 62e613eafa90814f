"""The iSCSI targets a benchmark compares, started on loopback with equal LUNs, and their CPU and memory.

`RingTgtServer` runs `ringtgt serve` with a generated config; `TgtdServer` runs Debian's tgtd in the
foreground on its own portal and management port, configured through tgtadm (nothing system-wide is
touched: no /etc/tgt, no service); `SpdkServer` runs SPDK's iscsi_tgt through the start.sh/stop.sh of an
SPDK build's directory (../shared/anchors/spdk has them). `direct` makes each bypass the page cache (ringtgt
`direct = true`, tgtd `--bsoflags direct`; SPDK's uring bdev always opens its file O_DIRECT). All expose `url`
(for fio), `pids()` (every process serving I/O), `serving()` (a context around each fio run: SPDK's reactor
spins its cores even when idle, so it runs only inside it) and `stop()`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
IQN_RINGTGT = "iqn.2026-11.org.ringtgt:bench"
IQN_TGTD = "iqn.2026-11.org.ringtgt:tgtd-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
        return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of the TCP sockets with this local port in this state (/proc/net/tcp hex code)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def listening_inodes(port: int) -> set[int]:
    return tcp_inodes(port, "0A")


def established(port: int) -> set[int]:
    return tcp_inodes(port, "01")


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def thread_files(pids: list[int], name: str) -> Iterator[str]:
    """The text of /proc/PID/task/TID/`name` for every thread of the processes (threads gone meanwhile skipped)."""
    for pid in pids:
        for path in Path(f"/proc/{pid}/task").glob(f"*/{name}"):
            try:
                yield path.read_text()
            except OSError:
                continue


def pin_threads(pid: int, cpus: list[int]) -> None:
    """Every thread of process `pid` on `cpus` (threads it starts later inherit the affinity of their parent)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:
            continue


def wakeups(pids: list[int]) -> int:
    """Voluntary context switches of the processes (all their threads): how often they slept and were woken."""
    return sum(int(text.partition("voluntary_ctxt_switches:")[2].split()[0]) for text in thread_files(pids, "status"))


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def prefill(path: Path, size: int) -> None:
    """Write every byte of the image (non-zero data) so reads hit allocated, cached pages, not holes."""
    if path.exists() and path.stat().st_size == size and path.stat().st_blocks * 512 >= size:
        return
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[:size % len(chunk)])


def drop_cached(path: Path) -> None:
    """Write back the file's dirty pages and drop its cached ones: an O_DIRECT reader then finds none to flush."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def stop(proc: subprocess.Popen, log) -> None:
    """SIGTERM to a server started in a session of its own; SIGKILL to that session after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()


def fio_url(url: str) -> str:
    """fio splits filename= at ':'; every colon is escaped."""
    return url.replace(":", "\\:")


class RingTgtServer:
    name = "ringtgt"

    def __init__(self, directory: Path, *, image: Path | None, size: int, workers: int, env: dict | None = None,
                 server_extra: str = "", binary: Path | None = None, direct: bool = False, store: str | None = None,
                 lun_extra: str = ""):
        """`store`: the LUN's backstore keys instead of a file `image` (e.g. an RBD image's); `lun_extra`: more
        keys for the LUN."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.workers = workers
        if store is None:
            store = f'path = "{image}"' if image is not None else 'backstore = "null"'
        lun = f"{store}\nsize = {size}"
        if direct:
            lun += "\ndirect = true"
        if lun_extra:
            lun += "\n" + lun_extra
        config = self.dir / "ringtgt.toml"
        config.write_text(f'[server]\nportals = ["{HOST}:{self.port}"]\nworkers = {workers}\n'
                          f'state_dir = "{self.dir / "state"}"\nlog_level = "warning"\nnop_interval = 0\n'
                          f'{server_extra}\n'
                          f'[[target]]\niqn = "{IQN_RINGTGT}"\n\n[[target.lun]]\nid = 0\n{lun}\n')
        binary = binary or Path(sys.executable).parent / "ringtgt"
        self.log = open(self.dir / "ringtgt.log", "wb")
        self.proc = subprocess.Popen([str(binary), "serve", "--config", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True,
                                     env=dict(os.environ, **(env or {})))
        wait_for(self._all_listening, START_TIMEOUT,
                 f"ringtgt's {workers} workers listening on port {self.port}")   # else fio's sessions may all
                                                                                # land on the first one up
        self.url = f"iscsi://{HOST}:{self.port}/{IQN_RINGTGT}/0"

    def _all_listening(self) -> bool:
        """Whether every worker listens; a server that exited (a configuration it refused, most often) fails at
        once with the last line it logged, not at the timeout."""
        rc = self.proc.poll()
        if rc is not None:
            self.log.flush()
            lines = (self.dir / "ringtgt.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(f"ringtgt exited ({rc}) before listening: {lines[-1] if lines else 'no output'}")
        return len(self.worker_pids()) >= self.workers

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def serving(self):
        return contextlib.nullcontext()

    def worker_pids(self) -> list[int]:
        """The children holding a listener on the portal (the coordinator child holds none)."""
        listeners = listening_inodes(self.port)
        return [pid for pid in children(self.proc.pid) if socket_inodes(pid) & listeners]

    def stop(self) -> None:
        stop(self.proc, self.log)


class TgtdServer:
    name = "tgtd"

    def __init__(self, directory: Path, *, image: Path | None, size: int, direct: bool = False,
                 rbd: tuple[str, Path] | None = None, cpus: list[int] | None = None):
        """`rbd`: (pool/image, ceph.conf) served by tgt's bs_rbd (Debian's tgt-rbd) instead of a file `image`;
        `cpus`: the CPUs all of tgtd's threads are pinned to (the cores the other servers of a comparison get)."""
        tgtd, self.tgtadm = shutil.which("tgtd"), shutil.which("tgtadm")
        if tgtd is None or self.tgtadm is None:
            raise RuntimeError("tgtd/tgtadm not found: install Debian's tgt (make bench does, as root)")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.control = 20000 + self.port % 10000       # management channel, distinct from any system tgtd
        self.log = open(self.dir / "tgtd.log", "wb")
        self.proc = subprocess.Popen([tgtd, "-f", "-C", str(self.control), "--iscsi", f"portal={HOST}:{self.port}"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        try:
            wait_for(lambda: self._alive() and listening(self.port), START_TIMEOUT, f"tgtd on port {self.port}")
            wait_for(lambda: self._adm("--mode", "target", "--op", "new", "--tid", "1", "-T", IQN_TGTD,
                                       check=False) == 0, START_TIMEOUT, "tgtadm to reach tgtd")
            backing = ["--bstype", "null", "-b", "null"] if image is None else ["-b", str(image)]
            if direct and image is not None:
                backing += ["--bsoflags", "direct"]
            if rbd is not None:
                backing = ["--bstype", "rbd", "-b", rbd[0], "--bsopts", f"conf={rbd[1]}"]
            self._adm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", *backing)
            self._adm("--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL")
            if cpus:
                pin_threads(self.proc.pid, cpus)
        except BaseException:
            self.stop()
            raise
        self.url = f"iscsi://{HOST}:{self.port}/{IQN_TGTD}/1"

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"tgtd exited {self.proc.returncode}: see {self.dir / 'tgtd.log'}")
        return True

    def _adm(self, *args: str, check: bool = True) -> int:
        proc = subprocess.run([self.tgtadm, "-C", str(self.control), "--lld", "iscsi", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and proc.returncode:
            raise RuntimeError(f"tgtadm {' '.join(args)} failed: {proc.stdout}")
        return proc.returncode

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def serving(self):
        return contextlib.nullcontext()

    def stop(self) -> None:
        stop(self.proc, self.log)


class SpdkServer:
    """SPDK's iscsi_tgt on the CPUs `cpus` (its reactor mask): a uring bdev on the image (O_DIRECT) or a null
    bdev, started by `serving()` and stopped when it ends, so that its spinning reactors burn no core between
    its runs. CPU per I/O counts the spinning: the reactor's core is spent whether it finds work or not."""

    name = "spdk"

    def __init__(self, directory: Path, *, spdk: Path, image: Path | None, size: int, cpus: list[int]):
        self.start_sh, self.stop_sh = spdk / "start.sh", spdk / "stop.sh"
        if not (os.access(self.start_sh, os.X_OK) and (spdk / "build/bin/iscsi_tgt").exists()):
            raise RuntimeError(f"no SPDK build with start.sh and build/bin/iscsi_tgt in {spdk}")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spdk = spdk
        self.image = image
        self.mask = hex(sum(1 << cpu for cpu in cpus))
        self.env = dict(os.environ, STATE=str(self.dir), SIZE_MB=str(size >> 20), SPDK_DIR=str(spdk))
        self.port = free_port()
        self.pid: int | None = None
        self.url = f"iscsi://{HOST}:{self.port}/iqn.2016-06.io.spdk:disk1/0"

    def pids(self) -> list[int]:
        return [self.pid] if self.pid else []

    @contextlib.contextmanager
    def serving(self):
        proc = subprocess.run([str(self.start_sh), str(self.port), self.mask, str(self.image or "null")],
                              env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=START_TIMEOUT + 30)
        if proc.returncode:
            self.stop()
            raise RuntimeError(f"SPDK start.sh failed ({proc.returncode}): {proc.stderr.strip()}")
        self.pid = int(proc.stdout.split()[-1])
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if (self.dir / f"tgt-{self.port}.pid").exists():
            subprocess.run([str(self.stop_sh), str(self.port)], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
