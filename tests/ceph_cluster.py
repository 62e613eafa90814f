"""A one-node Ceph cluster for the RBD tests and benchmarks: a monitor and one BlueStore OSD (its block device a
sparse file beside, not inside, the OSD's data directory), no manager, no authentication (or cephx, the admin's
key in the keyring ceph.conf names), pools of one replica, on 127.0.0.1 ports of its own, everything under one
directory.

    with CephCluster(directory) as cluster:        # about 10 s to start
        cluster.create_image("lun0", 64 << 20)
        cluster.rbd("resize", "--size", "128M", "rbd/lun0")

The daemons run in the foreground (`-f`) as children of the test process: Debian's packages need no systemd for
that. Every wait has a deadline; a failure to start carries the daemons' logs. `ceph_cluster` in tests/conftest.py
is the session fixture that shares one cluster between every test that needs one.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

POOL = "rbd"
OSD_BLOCK_BYTES = 8 << 30           # sparse: only what is written takes space
START_TIMEOUT = 60.0                # each step of the start
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_TOOLS = ("ceph-mon", "ceph-osd", "ceph", "rbd", "rados", "monmaptool", "ceph-authtool")


class CephError(AssertionError):
    """The cluster could not be started or a command on it failed; the message carries the output."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_tools() -> list[str]:
    return [name for name in _TOOLS if shutil.which(name) is None]


class CephCluster:
    """The cluster under `directory` (created); `start()` or `with` brings it up, `stop()` tears it down."""

    def __init__(self, directory: Path, cephx: bool = False):
        self.dir = Path(directory)
        self.cephx = cephx                  # cephx authentication (the admin key in `keyring`), else none
        self.conf = self.dir / "ceph.conf"
        self.port = _free_port()
        self.fsid = str(uuid.uuid4())
        self.daemons: dict[str, subprocess.Popen] = {}
        self.start_seconds: float | None = None

    def __enter__(self) -> CephCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The environment for the ceph and rbd tools (and librados): this cluster's ceph.conf."""
        return {**os.environ, "CEPH_CONF": str(self.conf)}

    @property
    def keyring(self) -> Path:
        return self.dir / "keyring"

    def _write_conf(self) -> None:
        d = self.dir
        auth = "cephx" if self.cephx else "none"
        self.conf.write_text(f"""[global]
fsid = {self.fsid}
mon host = v2:127.0.0.1:{self.port}
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = {auth}
auth service required = {auth}
auth client required = {auth}
keyring = {self.keyring}
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
client mount timeout = 10
rados mon op timeout = 30
rados osd op timeout = 30

[mon]
mon data = {d}/mon

[osd]
osd data = {d}/osd
keyring = {d}/osd/keyring
osd objectstore = bluestore
bluestore block path = {d}/osd-block
bluestore block create = true
bluestore block size = {OSD_BLOCK_BYTES}
osd memory target = 939524096

[client]
admin socket = {d}/run/$name.$pid.$cctid.asok
""")

    def start(self) -> CephCluster:
        missing = missing_tools()
        if missing:
            raise CephError(f"{', '.join(missing)} not found: run `make test` (it installs ceph-mon, ceph-osd and "
                            "ceph-common)")
        started = time.monotonic()
        for sub in ("mon", "osd", "run", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._write_conf()
        try:
            monmap = self.dir / "monmap"
            self._run(["monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{self.port}]", "--fsid", self.fsid,
                       str(monmap)])
            keyring = []
            if self.cephx:
                for name, caps in (("mon.", ["--cap", "mon", "allow *"]),
                                   ("client.admin", ["--cap", "mon", "allow *", "--cap", "osd", "allow *"])):
                    create = ["--create-keyring"] if name == "mon." else []
                    self._run(["ceph-authtool", str(self.keyring), *create, "--gen-key", "-n", name, *caps])
                keyring = ["--keyring", str(self.keyring)]
            self._run(["ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap), "-c", str(self.conf), *keyring])
            self._daemon("mon.a", ["ceph-mon", "-f", "-i", "a", "-c", str(self.conf)])
            self._wait(lambda: self._try(["ceph", "mon", "stat"]), "the monitor to form a quorum")
            osd_uuid = str(uuid.uuid4())
            osd_id = self.ceph("osd", "new", osd_uuid).strip()
            if self.cephx:
                self.ceph("auth", "get-or-create", f"osd.{osd_id}", "mon", "allow profile osd", "osd", "allow *",
                          "-o", str(self.dir / "osd" / "keyring"))
            self._run(["ceph-osd", "--mkfs", "-i", osd_id, "--osd-uuid", osd_uuid, "-c", str(self.conf)])
            self._daemon(f"osd.{osd_id}", ["ceph-osd", "-f", "-i", osd_id, "-c", str(self.conf)])
            self._wait(lambda: '"num_up_osds":1' in self.ceph("osd", "stat", "-f", "json"), "the OSD to be up")
            self.ceph("osd", "pool", "create", POOL, "8", "8")
            self.rbd("pool", "init", POOL)         # returns once the pool's placement groups serve I/O
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _daemon(self, name: str, args: list[str]) -> None:
        out = open(self.dir / "log" / f"{name}.out", "wb")
        with out:
            self.daemons[name] = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                                  start_new_session=True)

    def _wait(self, predicate, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not predicate():
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise CephError(f"{name} exited {proc.returncode} while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise CephError(f"timed out after {START_TIMEOUT:g} s waiting for {what}\n{self.logs()}")
            time.sleep(0.1)

    def _try(self, args: list[str]) -> bool:
        try:
            return subprocess.run(args + ["-c", str(self.conf), "--connect-timeout", "5"], capture_output=True,
                                  timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _run(self, args: list[str]) -> str:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=COMMAND_TIMEOUT,
                                  stdin=subprocess.DEVNULL, env=self.env)
        except subprocess.TimeoutExpired:
            raise CephError(f"{' '.join(args)}: no answer within {COMMAND_TIMEOUT:g} s\n{self.logs()}") from None
        if proc.returncode != 0:
            raise CephError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def ceph(self, *args: str) -> str:
        """A `ceph` command on this cluster; its output (CephError if it fails)."""
        return self._run(["ceph", "-c", str(self.conf), "--connect-timeout", "10", *args])

    def rbd(self, *args: str) -> str:
        """An `rbd` command on this cluster; its output (CephError if it fails)."""
        return self._run(["rbd", "-c", str(self.conf), *args])

    def rados(self, *args: str) -> str:
        """A `rados` command on this cluster; its output (CephError if it fails)."""
        return self._run(["rados", "-c", str(self.conf), *args])

    def create_image(self, name: str, size: int) -> str:
        """A new image in the pool, without exclusive-lock (as ringtgt creates them); its pool/name."""
        self.rbd("create", "--size", f"{size}B", "--image-feature", "layering", f"{POOL}/{name}")
        return f"{POOL}/{name}"

    def client_ports(self) -> list[int]:
        """The ports a client reaches on 127.0.0.1: the monitor's and each OSD's public one (what a relay into a
        network namespace must carry: tests/e2e/netns.py)."""
        osds = json.loads(self.ceph("osd", "dump", "-f", "json"))["osds"]
        return [self.port, *sorted({int(a["addr"].rsplit(":", 1)[1]) for osd in osds
                                    for a in osd["public_addrs"]["addrvec"]})]

    def blocklist(self) -> list[str]:
        """The addresses in the OSD map's blocklist (`ceph osd blocklist ls`: its JSON list of addresses is
        followed by one of address ranges)."""
        entries, _ = json.JSONDecoder().raw_decode(self.ceph("osd", "blocklist", "ls", "-f", "json").strip())
        return [entry["addr"] for entry in entries]

    def client_keyring(self, name: str) -> Path:
        """A cephx client allowed RBD on the pool (cephx clusters): its keyring file."""
        path = self.dir / f"{name}.keyring"
        self.ceph("auth", "get-or-create", name, "mon", "profile rbd", "osd", f"profile rbd pool={POOL}",
                  "-o", str(path))
        return path

    def lun_keys(self, image: str, pool: str = POOL) -> str:
        """The [[target.lun]] keys of a ringtgt LUN on an image of this cluster."""
        return f'backstore = "rbd"\npool = "{pool}"\nimage = "{image}"\nceph_conf = "{self.conf}"'

    def logs(self, lines: int = 30) -> str:
        parts = []
        for path in sorted((self.dir / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM to every daemon, SIGKILL to any still running after STOP_TIMEOUT s."""
        for proc in self.daemons.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.daemons.values():
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.daemons.clear()


def main() -> None:
    """`python tests/ceph_cluster.py DIR`: a cluster under DIR until interrupted (to try an RBD LUN by hand)."""
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/ceph_cluster.py DIR")
    with CephCluster(Path(sys.argv[1])) as cluster:
        print(f"started in {cluster.start_seconds:.1f} s; CEPH_CONF={cluster.conf}; Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
