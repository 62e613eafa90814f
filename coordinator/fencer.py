"""Fencing a peer through Ceph before a takeover (README, Ceph RBD, Fencing): the pools and clients of this node's
RBD LUNs, and `python -m target.backstore.fencing` run in a process of its own, its output read by the coordinator's
loop (a cluster that does not answer never holds the loop), killed after FENCE_TIMEOUT seconds.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("ringtgt.coordinator")

FENCE_TIMEOUT = 30.0        # connecting (10 s at most), marking and reading each pool, one monitor command per address


@dataclass(frozen=True)
class Fenced:
    """What fencing a peer did: the RADOS client addresses blocklisted, and why it failed ("": it did not)."""
    addresses: list[str] = field(default_factory=list)
    error: str = ""
    seconds: dict = field(default_factory=dict)     # what each step took (connect, mark, blocklist, epoch)
    refused: bool = False                           # this node was fenced itself: it takes over no one
    epochs: dict = field(default_factory=dict)      # per cluster (its ceph.conf): the OSD map epoch with the blocklist


def rbd_pools(config) -> list[list]:
    """[ceph_conf, client_name, keyring, pool] of every pool holding one of `config`'s RBD LUNs, each once."""
    pools: list[list] = []
    for target in config.targets:
        for lun in target.luns:
            entry = [lun.ceph_conf, lun.client_name, lun.keyring, lun.pool]
            if lun.backstore == "rbd" and entry not in pools:
                pools.append(entry)
    return pools


class Fencer:
    """`fence(peer, done)`: blocklist the peer's recorded clients, then `done(Fenced)` from the loop."""

    def __init__(self, service, node: str, pools: Callable[[], list[list]]):
        self.service = service
        self.node = node
        self.pools = pools                  # () → rbd_pools of the running configuration

    def needed(self) -> bool:
        return bool(self.pools())

    def fence(self, peer: str, done: Callable[[Fenced], None]) -> None:
        spec = {"node": peer, "by": self.node, "pools": self.pools()}
        proc = subprocess.Popen([sys.executable, "-m", "target.backstore.fencing", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        output = bytearray()
        finished: list[bool] = []
        started = time.monotonic()

        def finish(error: str = "") -> None:
            if finished:
                return
            finished.append(True)
            self.service.unwatch(fd)
            if proc.poll() is None and error:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
            result = _result(output.decode(errors="replace"), proc.returncode, error)
            log.info("cluster: fencing %s took %.1f s (%s%s): %d RADOS clients blocklisted%s%s", peer,
                     time.monotonic() - started, ", ".join(f"{step} {s:.1f} s" for step, s in result.seconds.items()),
                     "".join(f"; OSD map epoch {epoch} of {conf}" for conf, epoch in result.epochs.items()),
                     len(result.addresses), f": {', '.join(result.addresses)}" if result.addresses else "",
                     f"; {result.error}" if result.error else "")
            done(result)

        def readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if chunk:
                output.extend(chunk)
            else:
                finish()

        self.service.watch(fd, readable)
        self.service.call_later(FENCE_TIMEOUT, lambda: finish(f"no answer from the cluster within {FENCE_TIMEOUT:g} s"))


def _result(output: str, returncode: int | None, error: str) -> Fenced:
    """The fencing process's JSON line read into Fenced."""
    lines = output.strip().splitlines()
    try:
        body = json.loads(lines[-1])
        addresses, errors, seconds = list(body["fenced"]), list(body["errors"]), dict(body["seconds"])
        refused, epochs = str(body["refused"]), {str(k): int(v) for k, v in dict(body["epochs"]).items()}
    except (IndexError, ValueError, KeyError, TypeError):
        return Fenced(error=error or f"the fencing process exited {returncode}: {output[-1000:].strip()}")
    return Fenced(addresses, "; ".join(filter(None, [error, refused, *errors])), seconds, bool(refused), epochs)
