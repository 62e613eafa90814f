"""A takeover on one `serve` of the session's Ceph cluster whose aftermath cannot reach the OSD map of its blocklist:
the peer is a node that never runs, with one client address recorded for it (`recorded_peer`), and the monitor is
stopped (SIGSTOP) once fencing is done (`takeover_with_monitor_stopped`), so no `rados_wait_for_latest_osdmap` of
the node's RADOS clients (its workers', its coordinator's) can end until the test resumes it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import procfs
from harness import free_port, poll, ringtgt_binary

from target.backstore.fencing import CLAIMS


def cluster_section(node: str, peer: str) -> str:
    """The `[cluster]` of a one-node `serve` named `node` whose peer `peer` never runs."""
    return f"""[cluster]
node = "{node}"
listen = "tcp://127.0.0.1:{free_port()}"
peers = {{ {peer} = "tcp://127.0.0.1:{free_port()}" }}
"""


@contextmanager
def recorded_peer(cluster, node: str, peer: str, address: str) -> Iterator[str]:
    """`address` recorded as a worker client of `peer` in pool rbd (what its worker would have written), for a
    takeover by `node` to fence; the blocklist entry, the claim and both nodes' objects removed at exit."""
    cluster.rados("-p", "rbd", "setomapval", f"ringtgt.node.{peer}", f"client.0.{address}", "{}")
    try:
        yield address
    finally:
        cluster.ceph("osd", "blocklist", "rm", address)
        cluster.rados("-p", "rbd", "rmomapkey", CLAIMS, f"fenced.{peer}")
        for name in (peer, node):
            cluster.rados("-p", "rbd", "rm", f"ringtgt.node.{name}")


def fencing_process(coordinator: int) -> int | None:
    """The pid of the coordinator's fencing process (`python -m target.backstore.fencing`), once it runs."""
    for pid in procfs.children(coordinator):
        try:
            if b"target.backstore.fencing" in (Path(f"/proc/{pid}/cmdline")).read_bytes():
                return pid
        except FileNotFoundError:
            continue
    return None


@contextmanager
def takeover_with_monitor_stopped(cluster, tgt, peer: str) -> Iterator[tuple[str, int, Callable[[], None]]]:
    """`ringtgt takeover PEER` on `tgt`, with the monitor stopped right after fencing (the coordinator is held stopped
    meanwhile, so that what follows fencing — the workers' barrier push, its own store client's next write — comes
    after): yields (what the command printed, the blocklist's OSD map epoch, resume) once it returned 0; `resume()`
    lets the monitor run again. Every process stopped here runs again at exit."""
    mon, coordinator = cluster.daemons["mon.a"].pid, tgt.coordinator()
    assert coordinator is not None
    stopped: list[int] = []

    def stop(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)

    def resume(pid: int) -> None:
        if pid in stopped:
            os.kill(pid, signal.SIGCONT)
            stopped.remove(pid)

    try:
        stop(mon)                   # the fencing process cannot finish before the coordinator is held (below)
        takeover = subprocess.Popen([ringtgt_binary(), "takeover", peer, "--config", str(tgt.config)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        fencer = poll(lambda: fencing_process(coordinator), timeout=30, what="the fencing process")
        stop(coordinator)
        resume(mon)                 # fencing goes on (connecting waits 10 s for the monitor: this took far less)
        poll(lambda: not procfs.alive(fencer), timeout=60, what="fencing to end")
        stop(mon)                   # no wait for the latest OSD map can end now
        resume(coordinator)         # it reads what fencing did, and pushes the barrier
        said, errors = takeover.communicate(timeout=60)
        assert takeover.returncode == 0, (said, errors)
        epoch = int(re.search(r"OSD map epoch (\d+) of .*: this node's workers asked to wait for it", said).group(1))
        yield said, epoch, lambda: resume(mon)
    finally:
        for pid in list(stopped):
            resume(pid)
