"""What the two-node failover tests share (test_failover.py on a shared file, test_rbd_failover.py on one Ceph
cluster): nodes a and b and a client in network namespaces (netns.py) on 192.0.2.0/24 with a VIP, a node's
`ringtgt serve` inside its namespace, the client's initiator script, and the verified fio job through the VIP.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO, fio_binary, fio_filename, ringtgt_binary

import netns

NODES = {"a": "192.0.2.1", "b": "192.0.2.2"}
CLIENT = "192.0.2.10"
VIP = "192.0.2.100"
PORT = 3260
TARGET = "iqn.2026-11.org.ringtgt:ha"
FIO_INITIATOR = "iqn.2026-11.org.ringtgt:failover-fio"
KEY = 0xFE11CE
WRITE_EXCLUSIVE = 1
FIO_RUNTIME = 24          # past an untickled failover's wait for the client's next TCP retransmission
FIO_LUN = 1                 # fio writes LUN 1; the reservation is taken on LUN 0
FIO_BYTES = 32 << 20        # the part of LUN 1 fio writes


def new_lab() -> netns.Lab:
    return netns.Lab({**NODES, "client": CLIENT})


def file_luns(shared: Path) -> str:
    """LUN 0 (16 MiB) and LUN 1 (64 MiB) on files of the directory both nodes share, as a SAN LUN."""
    return f"""
[[target.lun]]
id = 0
path = "{shared / 'lun0.img'}"
size = "16MiB"
[[target.lun]]
id = 1
path = "{shared / 'lun1.img'}"
size = "64MiB"
"""


class Node:
    """`ringtgt serve` of one cluster node, inside its namespace; `luns`: its [[target.lun]] tables (the same on
    both nodes), `server`: more [server] keys."""

    def __init__(self, lab: netns.Lab, name: str, directory: Path, luns: str, takeover: str, server: str = ""):
        self.lab, self.name = lab, name
        self.dir = directory / name
        self.dir.mkdir(parents=True)
        other = next(n for n in NODES if n != name)
        keys = directory / "keys"
        if not keys.exists():
            for node in NODES:
                subprocess.run([ringtgt_binary(), "keygen", str(keys / node)], check=True, capture_output=True)
        self.config = self.dir / "ringtgt.toml"
        self.config.write_text(f"""
[server]
portals = ["{VIP}:{PORT}"]
workers = 2
state_dir = "{self.dir / 'state'}"
{server}

[[target]]
iqn = "{TARGET}"
{luns}

[cluster]
node = "{name}"
listen = "tcp://{NODES[name]}:5550"
peers = {{ {other} = "tcp://{NODES[other]}:5550" }}
curve_secret_key = "{keys / name}.key_secret"
peer_public_keys = {{ {other} = "{keys / other}.key" }}
vips = ["{VIP}/{netns.PREFIX}"]
vip_interface = "{lab.interface(name)}"
takeover = "{takeover}"
dead_after = 0.5
""")
        self.log = self.dir / "ringtgt.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(lab.exec(name, [ringtgt_binary(), "serve", "--config", str(self.config)]),
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self, peer: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"node {self.name} exited {self.proc.returncode}:\n{self.text()}")
        text = self.text()
        return text.count("serving on CPU") == 2 and f"peer {peer} is up" in text

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.lab.exec(self.name, [ringtgt_binary(), *args, "--config", str(self.config)]),
                              capture_output=True, text=True, timeout=60)

    def command(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, f"ringtgt {' '.join(args)}: {proc.stdout}{proc.stderr}\n{self.text()}"
        return proc.stdout

    def signal(self, signum: int) -> None:
        """`signum` to every process of the node (supervisor, coordinator, workers)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)        # a frozen node first resumes, to act on SIGTERM
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
            try:                # children the supervisor left behind (it was stopped, then told to stop at once)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def client_script(lab: netns.Lab, action: str, *args: str, member: str = "client") -> object:
    """failover_client.py's answer to `action` through the VIP, run in `member`'s namespace."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'e2e'}:{REPO / 'tests'}:{REPO}"}
    proc = subprocess.run(lab.exec(member, [sys.executable, str(REPO / "tests/e2e/failover_client.py"), action,
                                            VIP, str(PORT), TARGET, str(KEY), *args]),
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def move_vip(lab: netns.Lab, to: str) -> float:
    """The VIP added on node `to` and announced (gratuitous ARP): the time it moved."""
    lab.add_address(to, VIP)
    subprocess.run(lab.exec(to, [sys.executable, "-c", "from coordinator.tickle import send_garp; "
                                 f"send_garp({lab.interface(to)!r}, {VIP!r})"]), check=True, cwd=REPO)
    return time.time()


# ss prints a timer as minutes, whole seconds, then milliseconds: "12sec", "6.236ms" (6 s 236 ms), "188ms", "1min5sec";
# "on" is the retransmission timer, "keepalive" runs instead while nothing sent is unacknowledged
_TIMER = re.compile(r"timer:\((?:on|keepalive),(?:(\d+)min)?(?:(\d+)(?:sec|\.))?(?:(\d+)ms)?,")


def next_send_due(lab: netns.Lab) -> tuple[float, str]:
    """Seconds until the client's TCP next sends to the VIP of its own accord (0: no timer), and the `ss` lines it
    was read from. That is its retransmission timer; or, when node a had acknowledged every byte before its link
    went down (the client then waits for iSCSI answers with nothing to resend), its keepalive timer."""
    out = subprocess.run(lab.exec("client", ["ss", "-tnoH", "dst", VIP]), capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return max((int(m[1] or 0) * 60 + int(m[2] or 0) + int(m[3] or 0) / 1000 for m in _TIMER.finditer(out)),
               default=0.0), out


def fio_sessions(node: Node) -> list[tuple[str, str]]:
    sessions = json.loads(node.command("sessions", "--json"))["sessions"]
    return [(s["node"], s["client"]) for s in sessions if s["initiator"] == FIO_INITIATOR]


def fio_job(path: Path, log: Path) -> Path:
    path.write_text("\n".join([
        "[failover]", "ioengine=libiscsi", f"filename={fio_filename(f'iscsi://{VIP}:{PORT}/{TARGET}/{FIO_LUN}')}",
        f"initiator={FIO_INITIATOR}", "rw=randwrite", "bs=4k", "iodepth=4", f"size={FIO_BYTES}", "time_based=1",
        f"runtime={FIO_RUNTIME}", "rate_iops=300", "verify=crc32c", "verify_backlog=256", "verify_fatal=1",
        f"write_lat_log={log}", "log_unix_epoch=1"]) + "\n")
    return path


def start_fio(lab: netns.Lab, directory: Path) -> tuple[subprocess.Popen, Path, Path]:
    """fio_job run in the client's namespace: (the process, its output file, its latency log prefix)."""
    log_prefix, output = directory / "lat", directory / "fio.out"
    with open(output, "wb") as out:
        fio = subprocess.Popen(lab.exec("client", [fio_binary(), str(fio_job(directory / "job.fio", log_prefix))]),
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                               cwd=directory)      # where fio leaves its verify state when stopped
    return fio, output, log_prefix


def stop_fio(fio: subprocess.Popen | None) -> None:
    if fio is not None and fio.poll() is None:
        os.killpg(fio.pid, signal.SIGKILL)
        fio.wait(10)


def completions(log_prefix: Path) -> list[float]:
    """Completion times (seconds since the epoch) of every write fio logged."""
    times = []
    for path in log_prefix.parent.glob(f"{log_prefix.name}_lat.*.log"):
        times += [int(line.split(",")[0]) / 1000 for line in path.read_text().splitlines() if line.strip()]
    return sorted(times)


def pauses(log_prefix: Path, moved: float) -> dict:
    """From fio's log: the first write completed after `moved` (seconds after it), and the longest stall."""
    times = completions(log_prefix)
    return {"after_move": min(t for t in times if t > moved) - moved,
            "stall": max(b - a for a, b in zip(times, times[1:]))}
