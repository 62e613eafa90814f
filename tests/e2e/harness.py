"""Run a real `ringtgt serve` for end-to-end tests, and run the real initiators against it.

Everything talks to 127.0.0.1 only.  Waiting is always polling a condition with a generous deadline.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import initiator as I
import procfs

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
IQN = "iqn.2026-11.org.ringtgt:test"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
EXIT_TIMEOUT = 30.0         # seconds a refused `serve` has to exit (it takes well under one)

_SIZE_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def poll(predicate, *, timeout: float, what: str, interval: float = 0.05):
    """Call predicate until it returns something truthy (returned); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tool(name: str, *, installed_by: str = "make setup") -> str:
    """Absolute path of a command-line tool the project's setup installs; fail (not skip) if missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found on PATH: run `{installed_by}` (it installs the test tools)")
    return path


def fio_binary() -> str:
    """fio built with the libiscsi engine: $RINGTGT_FIO, else the repo's .cache build."""
    path = os.environ.get("RINGTGT_FIO") or str(REPO / ".cache/fio/bin/fio")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"fio with the libiscsi engine not found at {path}: run `make test` "
                             "(it builds fio via scripts/build-fio.sh) or set RINGTGT_FIO")
    return path


def ringtgt_binary() -> str:
    """The `ringtgt` command: $RINGTGT_BIN, else the entry point beside this Python (the venv's)."""
    binary = os.environ.get("RINGTGT_BIN") or str(Path(sys.executable).parent / "ringtgt")
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"{binary} missing: run `make setup` (pip install -e .) or set RINGTGT_BIN")
    return binary


def run(args: list[str], *, timeout: float = 120.0, check: bool = True,
        merge_stderr: bool = True) -> subprocess.CompletedProcess:
    """Run a command (text, undecodable bytes replaced); stderr merged into .stdout unless told not to;
    a non-zero exit fails with the output when `check`."""
    stderr = subprocess.STDOUT if merge_stderr else subprocess.PIPE
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=stderr, text=True, errors="replace",
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr or ''}")
    return proc


@dataclass(frozen=True)
class Lun:
    id: int = 0
    size: str = "64MiB"
    block_size: int = 512
    extra: str = ""             # more keys for this [[target.lun]], e.g. "readonly = true"
    store: str | None = None    # the backstore's keys instead of a file's path (e.g. CephCluster.lun_keys)

    @property
    def size_bytes(self) -> int:
        for unit, factor in _SIZE_UNITS.items():
            if self.size.endswith(unit):
                return int(self.size[:-len(unit)]) * factor
        return int(self.size)

    @property
    def blocks(self) -> int:
        return self.size_bytes // self.block_size


class RingTgt:
    """One `ringtgt serve` process tree with its own config, state dir and port."""

    running: list[RingTgt] = []  # for attaching stderr to failing test reports

    def __init__(self, directory: Path, *, luns=(Lun(),), workers: int = 2, iqn: str = IQN,
                 server_extra: str = "", target_extra: str = "", lun_extra: str = "", extra: str = "",
                 open_files: tuple[int, int] | None = None, env: dict[str, str] | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.luns = {lun.id: lun for lun in luns}
        self.workers_wanted = workers
        self.iqn = iqn
        self.port = free_port()
        self.portal = f"{HOST}:{self.port}"
        self.config = self.dir / "ringtgt.toml"
        self.stderr_path = self.dir / "ringtgt.stderr"
        self.config.write_text(self._config_text(server_extra, target_extra, lun_extra, extra))
        self.proc: subprocess.Popen | None = None
        self.workers: list[int] = []
        self.stop_seconds: float | None = None  # SIGTERM to supervisor exit, once stopped
        self.open_files = open_files            # (soft, hard) RLIMIT_NOFILE to start `serve` under; None: ours
        self.env = env                          # variables added to ours for `serve` (e.g. NOTIFY_SOCKET)

    def _config_text(self, server_extra: str, target_extra: str, lun_extra: str, extra: str) -> str:
        """`target_extra` goes right after the target's iqn (keys, then [target.*] tables), `lun_extra` into
        every [[target.lun]], `extra` at the end (top-level tables such as [discovery.chap])."""
        lines = ["[server]", f'portals = ["{self.portal}"]', f"workers = {self.workers_wanted}",
                 f'state_dir = "{self.dir / "state"}"', server_extra, "", "[[target]]", f'iqn = "{self.iqn}"',
                 target_extra]
        for lun in self.luns.values():
            store = lun.store if lun.store is not None else f'path = "{self.lun_path(lun.id)}"'
            size = f'size = "{lun.size}"' if lun.size else ""     # "": the store's own size
            lines += ["", "[[target.lun]]", f"id = {lun.id}", store, size, f"block_size = {lun.block_size}", lun.extra,
                      lun_extra]
        return "\n".join(lines + ["", extra]) + "\n"

    def lun_path(self, lun: int = 0) -> Path:
        return self.dir / f"lun{lun}.img"

    def url(self, lun: int = 0) -> str:
        return f"iscsi://{self.portal}/{self.iqn}/{lun}"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle
    def start(self) -> RingTgt:
        binary = ringtgt_binary()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([binary, "serve", "--config", str(self.config)], cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True, env={**os.environ, **self.env} if self.env else None,
                                         preexec_fn=self._limit_open_files if self.open_files else None)
        RingTgt.running.append(self)
        try:
            self.workers = poll(self._ready, timeout=START_TIMEOUT,
                                what=f"{self.workers_wanted} workers listening and serving on {self.portal}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- ringtgt stderr ---\n{self.stderr()}") from None
        return self

    def _limit_open_files(self) -> None:
        """In the forked child before exec: the RLIMIT_NOFILE the test asked for."""
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def _ready(self) -> list[int] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"ringtgt serve exited {self.proc.returncode} during startup:\n{self.stderr()}")
        workers = self.listening_children()
        if len(workers) < self.workers_wanted or self.stderr().count(") serving on CPU") < self.workers_wanted:
            return None                 # (a worker listens at once, and accepts once it has the unit states)
        try:
            socket.create_connection((HOST, self.port), timeout=5).close()
        except OSError:
            return None
        return workers

    def listening_children(self) -> list[int]:
        """Children of the supervisor holding a listening socket on the portal: the workers."""
        listeners = procfs.tcp_sockets(self.port, procfs.TCP_LISTEN)
        return [pid for pid in procfs.children(self.proc.pid) if procfs.socket_inodes(pid) & listeners]

    def coordinator(self) -> int | None:
        """The pid of the supervisor's coordinator child (its child that is not a worker), if one runs."""
        others = [pid for pid in procfs.children(self.proc.pid) if pid not in self.workers and procfs.alive(pid)]
        return others[0] if len(others) == 1 else None

    def connections_per_worker(self) -> dict[int, set[int]]:
        """Socket inodes of the established connections each worker holds right now."""
        established = procfs.tcp_sockets(self.port, procfs.TCP_ESTABLISHED)
        return {pid: procfs.socket_inodes(pid) & established for pid in self.workers}

    def stop(self, timeout: float = STOP_TIMEOUT, group: bool = False) -> None:
        """SIGTERM (with `group`, to every process of the tree at once, as systemd does); the supervisor must exit 0
        within `timeout` s and take every worker with it."""
        if self not in RingTgt.running:
            return  # never started, or already stopped
        try:
            if self.proc.poll() is not None:
                raise AssertionError(f"ringtgt serve had already exited with {self.proc.returncode}")
            if group:
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            try:
                status = self.proc.wait(timeout)
                self.stop_seconds = time.monotonic() - sent
            except subprocess.TimeoutExpired:
                raise AssertionError(f"ringtgt serve still running {timeout:g} s after SIGTERM") from None
            assert status == 0, f"ringtgt serve exited {status} after SIGTERM"
            poll(lambda: not any(procfs.alive(p) for p in self.workers), timeout=timeout,
                 what=f"workers {self.workers} to exit after the supervisor")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- ringtgt stderr ---\n{self.stderr()}") from None
        finally:
            self._kill_leftovers()
            RingTgt.running.remove(self)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash (or a power loss, as far as ringtgt can tell)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
            poll(lambda: not any(procfs.alive(p) for p in self.workers), timeout=STOP_TIMEOUT,
                 what=f"workers {self.workers} to die")
        finally:
            RingTgt.running.remove(self)

    def _kill_leftovers(self) -> None:
        for pid in [self.proc.pid, *self.workers]:
            if procfs.alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.returncode is None:
            self.proc.wait(STOP_TIMEOUT)


# -------------------------------------------------------------------------------------------- fio

def fio_filename(url: str) -> str:
    """fio treats ':' in filename= as a separator between files: escape every one (fio's HOWTO)."""
    return url.replace(":", "\\:")


def write_fio_job(path: Path, url: str, **options) -> Path:
    """A one-section fio job file for the libiscsi engine on `url`; options go in as key=value lines."""
    lines = ["[ringtgt]", "ioengine=libiscsi", f"filename={fio_filename(url)}"]
    lines += [f"{key}={value}" for key, value in options.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def serve_expecting_exit(config, *, preexec_fn=None) -> tuple[int, list[str]]:
    """Run `ringtgt serve` that must stop by itself: its exit status and output lines. A serve still running
    after EXIT_TIMEOUT is killed with everything it started, and the test fails."""
    proc = subprocess.Popen([ringtgt_binary(), "serve", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                            start_new_session=True, preexec_fn=preexec_fn)
    try:
        output, _ = proc.communicate(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"ringtgt serve still running {EXIT_TIMEOUT:g} s later:\n{output[-4000:]}") from None
    print(f"exit status {proc.returncode}: {output!r}")
    return proc.returncode, output.splitlines()


def fio_json(path: Path) -> dict:
    """fio's JSON report; fio may print warnings into the output file before the JSON."""
    text = path.read_text()
    return json.loads(text[text.index("{"):])


class FioRun:
    """fio as a child process.  fio puts each job process it forks in a session of its own, so on exit
    every process of this run (fio and its job children, found while fio lives) gets SIGTERM, then, if
    still there 10 s later, SIGKILL — by pid."""

    def __init__(self, job: Path, output: Path, *args: str):
        self.output = output
        with open(output, "wb") as out:
            self.proc = subprocess.Popen([fio_binary(), *args, str(job)], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=output.parent)   # its verify state files

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"fio still running after {timeout:g} s:\n{self.text()}") from None

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def __enter__(self) -> FioRun:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is not None:
            return  # fio reaps its job processes before it exits
        pids = [*procfs.children(self.proc.pid), self.proc.pid]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in filter(procfs.alive, pids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                poll(lambda: not any(procfs.alive(p) for p in pids), timeout=10, what="fio to stop")
                break
            except AssertionError:
                continue
        self.proc.wait(10)


class ConnectionWatcher:
    """Samples, in a background thread, which worker holds which established connection — to tell
    afterwards which workers served a workload.  Use as a context manager around the workload."""

    def __init__(self, tgt: RingTgt, interval: float = 0.02):
        self.tgt, self.interval = tgt, interval
        self.seen: dict[int, set[int]] = {pid: set() for pid in tgt.workers}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for pid, inodes in self.tgt.connections_per_worker().items():
                    self.seen[pid] |= inodes
                self._stop.wait(self.interval)
        except BaseException as exc:  # handed to the test thread in __exit__
            self.error = exc

    def total(self) -> int:
        return sum(len(inodes) for inodes in self.seen.values())

    def counts(self) -> dict[int, int]:
        return {pid: len(inodes) for pid, inodes in self.seen.items()}

    def __enter__(self) -> ConnectionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error


def worker_of(tgt: RingTgt, sock: socket.socket, timeout: float = 10.0) -> int:
    """The pid of the worker holding the server side of our connected `sock`."""
    def owner():
        server_side = procfs.tcp_sockets(tgt.port, procfs.TCP_ESTABLISHED, remote_port=sock.getsockname()[1])
        return next((pid for pid in tgt.workers if procfs.socket_inodes(pid) & server_side), None)
    return poll(owner, timeout=timeout, what=f"a worker to accept a connection on {tgt.portal}")


def worker_accepting(tgt: RingTgt) -> int:
    """Open one TCP connection to the portal; return the pid of the worker that accepted it."""
    with socket.create_connection((HOST, tgt.port), timeout=10) as sock:
        return worker_of(tgt, sock)


# ------------------------------------------------------------------------- Python initiator sessions

@contextmanager
def session(tgt: RingTgt, initiator_name: str, **login):
    """A logged-in tests/initiator.py session on `tgt` with unit attentions cleared on LUN 0."""
    with I.Initiator.connect(HOST, tgt.port) as ini:
        ini.login(tgt.iqn, initiator_name=initiator_name, **login)
        ini.clear_unit_attentions()
        yield ini


def log_in(tgt: RingTgt, name: str, isid: bytes | None = None) -> I.Initiator:
    """A session of `name` (with `isid`: the I_T nexus of an earlier session), unit attentions untouched."""
    ini = I.Initiator.connect(HOST, tgt.port)
    if isid is not None:
        ini.isid = isid
    ini.login(tgt.iqn, initiator_name=name)
    return ini


def connect_to_worker(tgt: RingTgt, wanted, attempts: int = 64) -> tuple[int, I.Initiator]:
    """Open connections until one lands on a worker for which wanted(pid) is true (SO_REUSEPORT
    decides where each lands); return (pid, that connection).  The others are closed."""
    for _ in range(attempts):
        ini = I.Initiator.connect(HOST, tgt.port)
        pid = worker_of(tgt, ini.sock)
        if wanted(pid):
            return pid, ini
        ini.close()
    raise AssertionError(f"none of {attempts} connections landed on a wanted worker of {tgt.workers}")


def connections_on_every_worker(tgt: RingTgt) -> dict[int, I.Initiator]:
    """One fresh connection held by each worker."""
    held: dict[int, I.Initiator] = {}
    try:
        while len(held) < len(tgt.workers):
            pid, ini = connect_to_worker(tgt, lambda p: p not in held)
            held[pid] = ini
    except AssertionError:
        for ini in held.values():
            ini.close()
        raise
    return held


def sessions_on_every_worker(tgt: RingTgt, name: str = "iqn.2026-12.org.ringtgt:resize") -> list[I.Initiator]:
    """One logged-in session on each worker (initiator `name` and its index), its unit attentions cleared."""
    held = list(connections_on_every_worker(tgt).values())
    for index, ini in enumerate(held):
        ini.login(tgt.iqn, initiator_name=f"{name}{index}")
        ini.clear_unit_attentions()
    return held


def capacity(ini: I.Initiator) -> int:
    """READ CAPACITY(16)'s size of the unit in bytes."""
    result = ini.scsi(I.cdb_read_capacity16(), read_length=32)
    assert result.status == I.GOOD, result.sense
    last_lba, block_size = struct.unpack_from(">QI", result.data)
    return (last_lba + 1) * block_size


def assert_workers_serve(tgt: RingTgt, initiator_name: str) -> None:
    """The same worker processes as at startup are alive, and a fresh session on each writes and reads."""
    assert tgt.proc.poll() is None, f"supervisor exited {tgt.proc.returncode}"
    assert sorted(tgt.listening_children()) == sorted(tgt.workers), \
        f"workers now {tgt.listening_children()}, at startup {tgt.workers}"
    block_size = tgt.luns[0].block_size
    for index, (pid, ini) in enumerate(connections_on_every_worker(tgt).items()):
        with ini:
            ini.login(tgt.iqn, initiator_name=f"{initiator_name}-{index}")
            ini.clear_unit_attentions()
            data = os.urandom(16 * block_size)
            lba = 1000 + 64 * index
            assert ini.write(lba, data, block_size=block_size).status == I.GOOD, f"write via worker {pid}"
            result = ini.read(lba, 16, block_size=block_size)
            assert result.status == I.GOOD and result.data == data, f"read back via worker {pid}"
            ini.logout()

