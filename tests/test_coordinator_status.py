"""`ringtgt status`'s parts that need no running node: the text it prints (target/cli.py format_status), the
worker restarts the coordinator counts, its own starts per supervisor, and what /proc tells of a process."""
import os
import socket
import subprocess
import sys

from coordinator import procinfo
from coordinator.status_service import WorkerRestarts, count_start
from target.cli import format_status

T = "iqn.2026-11.org.ringtgt:t"
STATUS = {
    "node": "a", "supervisor": {"pid": 10, "uptime": 93784.0}, "coordinator": {"pid": 11, "uptime": 7383.2,
                                                                               "restarts": 1},
    "workers": [{"index": 0, "pid": 12, "cpus": "0", "uptime": 423.0, "restarts": 0, "connections": 2, "sessions": 1},
                {"index": 1, "pid": 13, "cpus": "1-3", "uptime": 2.5, "restarts": 2, "connections": None,
                 "sessions": 0}],
    "peers": [{"name": "b", "state": "alive", "heartbeat_age": 0.4}, {"name": "c", "state": "unknown",
                                                                       "heartbeat_age": None}],
    "luns": [{"target": T, "lun": 0, "backstore": "file", "path": "/i/0.img", "size": 64 << 20, "state": "online",
              "reason": None, "sanitizing": False, "ejected": False},
             {"target": T, "lun": 1, "backstore": "null", "path": None, "size": 1536 << 10, "state": "offline",
              "reason": "gone", "sanitizing": True, "ejected": True}],
    "sessions": 1,
}


def test_the_table_shows_every_part_with_units():
    text = format_status(STATUS)
    assert text.splitlines() == [
        "node a",
        "supervisor   pid 10  up 1d2h",
        "coordinator  pid 11  up 2h3m  restarts 1",
        "",
        "WORKER  PID  CPUS  UPTIME  RESTARTS  CONNECTIONS  SESSIONS",
        "0       12   0     7m3s    0         2            1",
        "1       13   1-3   2.5s    2         -            0",
        "",
        "PEER  STATE    HEARTBEAT",
        "b     alive    0.4s",
        "c     unknown  -",
        "",
        f"{'TARGET':{len(T)}}  LUN  BACKSTORE  PATH      SIZE     STATE    SANITIZING  EJECTED",
        f"{T}  0    file       /i/0.img  64MiB    online   no          no",
        f"{T}  1    null       -         1536KiB  offline  yes         yes",
        "",
        "1 session",
    ]


def test_a_node_without_peers_or_workers_prints_no_empty_tables():
    text = format_status({**STATUS, "workers": [], "peers": [], "sessions": 0})
    assert "WORKER" not in text and "PEER" not in text and "TARGET" in text and text.endswith("\n0 sessions\n")


def test_each_new_pid_of_a_worker_index_counts_one_restart():
    restarts = WorkerRestarts()
    restarts.seen(0, 100)
    restarts.seen(1, 200)
    restarts.seen(0, 100)
    assert restarts.restarts == {}
    restarts.gone("w0.100")             # seen again as it dies: no restart yet
    restarts.gone("w0.101")             # its successor died too before anyone asked
    restarts.seen(0, 102)
    restarts.gone("control")            # not a worker's origin: ignored
    assert restarts.restarts == {0: 2}


def test_coordinator_starts_are_counted_per_supervisor(tmp_path):
    assert [count_start(str(tmp_path), "s1") for _ in range(3)] == [0, 1, 2]
    assert count_start(str(tmp_path), "s2") == 0            # a new `serve`: its coordinator starts afresh
    (tmp_path / "coordinator.starts").write_text("[")        # torn or foreign: counted from 0 again
    assert count_start(str(tmp_path), "s2") == 0


def test_procinfo_reads_a_real_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.sched_setaffinity(child.pid, {0})
        assert procinfo.cpus(child.pid) == "0"
        assert 0 <= procinfo.uptime(child.pid) < 30
        assert procinfo.sockets(child.pid) == set()
    finally:
        child.kill()
        child.wait()
    assert procinfo.uptime(child.pid) is None and procinfo.cpus(child.pid) is None
    assert procinfo.sockets(child.pid) is None


def test_an_established_connection_is_found_among_its_holder_s_sockets():
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client, server.accept()[0]:
        mine = procinfo.sockets(os.getpid())
        established = procinfo.established_tcp()
        assert str(os.fstat(client.fileno()).st_ino) in mine & established
        assert str(os.fstat(server.fileno()).st_ino) in mine - established      # listening, not established
