"""Failover of a two-node cluster, in network namespaces this test builds and removes: a client and nodes a
and b on one bridge (192.0.2.0/24), the VIP first on node a, one backing file per LUN shared by both nodes
like a SAN LUN.

fio (libiscsi, verify=crc32c, default error handling) writes through the VIP. Node a's link goes down (so no
RST escapes) and its ringtgt is killed; the VIP moves to node b; with external takeover `ringtgt takeover a`
runs there. fio must finish without an error, node b must list the client's new session, and a persistent
reservation taken through node a must still be there. The same failover without the takeover call (no
tickles) shows the stall tickles cure: the client waits for its next TCP retransmission. Built-in takeover
(node b adds the VIP itself when a falls silent) gets the same checks. Pauses are printed, and asserted only
with a wide margin.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import REPO, fio_binary, fio_filename, poll, ringtgt_binary

import netns

NODES = {"a": "192.0.2.1", "b": "192.0.2.2"}
CLIENT = "192.0.2.10"
VIP = "192.0.2.100"
PORT = 3260
TARGET = "iqn.2026-11.org.ringtgt:ha"
FIO_INITIATOR = "iqn.2026-11.org.ringtgt:failover-fio"
KEY = 0xFE11CE
WRITE_EXCLUSIVE = 1
VIP_MOVES_AFTER = 4.0       # seconds after node a dies: the client is deep in retransmission backoff by then
FIO_RUNTIME = 16


@pytest.fixture
def lab_factory():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    return lambda: netns.Lab({**NODES, "client": CLIENT})


class Node:
    """`ringtgt serve` of one cluster node, inside its namespace."""

    def __init__(self, lab: netns.Lab, name: str, directory: Path, shared: Path, takeover: str):
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

[[target]]
iqn = "{TARGET}"
[[target.lun]]
id = 0
path = "{shared / 'lun0.img'}"
size = "16MiB"
[[target.lun]]
id = 1
path = "{shared / 'lun1.img'}"
size = "64MiB"

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

    def command(self, *args: str) -> str:
        proc = subprocess.run(self.lab.exec(self.name, [ringtgt_binary(), *args, "--config", str(self.config)]),
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"ringtgt {' '.join(args)}: {proc.stdout}{proc.stderr}\n{self.text()}"
        return proc.stdout

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def client_script(lab: netns.Lab, action: str) -> object:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'e2e'}:{REPO / 'tests'}:{REPO}"}
    proc = subprocess.run(lab.exec("client", [sys.executable, str(REPO / "tests/e2e/failover_client.py"), action,
                                              VIP, str(PORT), TARGET, str(KEY)]),
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def fio_sessions(node: Node) -> list[tuple[str, str]]:
    sessions = json.loads(node.command("sessions", "--json"))["sessions"]
    return [(s["node"], s["client"]) for s in sessions if s["initiator"] == FIO_INITIATOR]


def fio_job(path: Path, log: Path) -> Path:
    path.write_text("\n".join([
        "[failover]", "ioengine=libiscsi", f"filename={fio_filename(f'iscsi://{VIP}:{PORT}/{TARGET}/1')}",
        f"initiator={FIO_INITIATOR}", "rw=randwrite", "bs=4k", "iodepth=4", "size=32MiB", "time_based=1",
        f"runtime={FIO_RUNTIME}", "rate_iops=300", "verify=crc32c", "verify_backlog=256", "verify_fatal=1",
        f"write_lat_log={log}", "log_unix_epoch=1"]) + "\n")
    return path


def completions(log_prefix: Path) -> list[float]:
    """Completion times (seconds since the epoch) of every write fio logged."""
    times = []
    for path in log_prefix.parent.glob(f"{log_prefix.name}_lat.*.log"):
        times += [int(line.split(",")[0]) / 1000 for line in path.read_text().splitlines() if line.strip()]
    return sorted(times)


def failover(lab_factory, directory: Path, takeover: str, tickle: bool) -> dict:
    """One failover of node a to node b under fio; the pauses it caused, after checking what must hold."""
    directory.mkdir()
    shared = directory / "shared"
    shared.mkdir()
    with lab_factory() as lab:
        lab.add_address("a", VIP)
        nodes = {name: Node(lab, name, directory, shared, takeover) for name in NODES}
        fio = None
        try:
            poll(lambda: nodes["a"].ready("b") and nodes["b"].ready("a"), timeout=30, what="both nodes up")
            assert client_script(lab, "reserve") == [KEY, WRITE_EXCLUSIVE]
            log_prefix = directory / "lat"
            output = directory / "fio.out"
            with open(output, "wb") as out:
                fio = subprocess.Popen(lab.exec("client", [fio_binary(), str(fio_job(directory / "job.fio",
                                                                                     log_prefix))]),
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd=directory)      # where fio leaves its verify state when stopped
            poll(lambda: FIO_INITIATOR in nodes["b"].command("sessions"), timeout=30,
                 what="node b to list fio's session on node a")
            time.sleep(1.5)
            lab.link_down("a")                          # nothing, not even a RST, leaves node a now
            nodes["a"].kill()
            died = time.time()
            if takeover == "external":
                time.sleep(VIP_MOVES_AFTER)
                lab.add_address("b", VIP)
                subprocess.run(lab.exec("b", [sys.executable, "-c", "from coordinator.tickle import send_garp; "
                                              f"send_garp({lab.interface('b')!r}, {VIP!r})"]),
                               check=True, cwd=REPO)
                moved = time.time()
                if tickle:
                    said = nodes["b"].command("takeover", "a")
                    assert "1 connections tickled" in said, said
            else:
                moved = died
            if tickle:      # fio goes on for seconds after a tickled failover: its new session is listed, alone
                poll(lambda: fio_sessions(nodes["b"]) == [("b", CLIENT)], timeout=60,
                     what="fio's new session on node b, and node a's gone from the table")
            status = fio.wait(FIO_RUNTIME + 90)
            assert f"session of {FIO_INITIATOR}" in nodes["b"].text(), nodes["b"].text()   # untickled: it may
            # reconnect only when TCP gives up, after fio's run time, and log out at once
            text = output.read_text(errors="replace")
            assert status == 0 and "err= 0" in text, f"fio exit {status}:\n{text}\n{nodes['b'].text()}"
            if takeover == "builtin":
                assert f"VIP {VIP}/{netns.PREFIX} is on" in nodes["b"].text(), nodes["b"].text()
            assert client_script(lab, "show") == [KEY, WRITE_EXCLUSIVE]
            times = completions(log_prefix)
            return {"after_move": min(t for t in times if t > moved) - moved,
                    "stall": max(b - a for a, b in zip(times, times[1:]))}
        finally:
            if fio is not None and fio.poll() is None:
                os.killpg(fio.pid, signal.SIGKILL)
                fio.wait(10)
            for node in nodes.values():
                node.stop()


def test_external_takeover_with_and_without_tickles(lab_factory, tmp_path):
    tickled = failover(lab_factory, tmp_path / "tickled", "external", tickle=True)
    untickled = failover(lab_factory, tmp_path / "untickled", "external", tickle=False)
    print(f"failover, VIP moved {VIP_MOVES_AFTER:g} s after node a died: first write completed on node b "
          f"{tickled['after_move'] * 1000:.0f} ms after the VIP move and `ringtgt takeover` with tickles, "
          f"{untickled['after_move'] * 1000:.0f} ms without; longest stall {tickled['stall']:.2f} s vs "
          f"{untickled['stall']:.2f} s")
    assert untickled["after_move"] > 1.0, untickled
    assert tickled["after_move"] * 4 < untickled["after_move"], (tickled, untickled)


def test_builtin_takeover(lab_factory, tmp_path):
    result = failover(lab_factory, tmp_path / "builtin", "builtin", tickle=True)
    print(f"built-in takeover: longest stall {result['stall']:.2f} s, first write on node b "
          f"{result['after_move'] * 1000:.0f} ms after node a died (dead_after = 0.5 s)")
    assert result["stall"] < VIP_MOVES_AFTER, result
