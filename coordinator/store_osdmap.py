"""The coordinator's RADOS client (coordinator/rados_store.py: the units' state objects) brought to a takeover's OSD
map before it writes, as the workers' are (target/osdmap_sync.py; why: target/backstore/fencing.py): a write of ours
carrying an OSD map older than the blocklist could be applied by an OSD that has not seen the blocklist yet before a
write the fenced node's coordinator had in flight, which would then land on top of it (a reservation change lost).

`want(epochs)` (the loop, once fencing reports the blocklist's epoch per cluster) records the epoch, and the store's
thread then runs `at_takeover(conns)` at once, in turn with its other jobs: every client of the thread on a cluster
named begins its wait there, at the takeover rather than at its next write, and those not at the map within
WAIT_SECONDS are reported (the takeover's report names the coordinator, as it names the workers behind). The thread
also calls `before_write(conn)` before each write of a unit object: a client not known to be at the newest epoch
wanted for its cluster waits for the latest map (`rados_wait_for_latest_osdmap`) in an attempt of its own thread
(librados gives that wait no deadline and cannot be told to give it up), for at most WAIT_SECONDS after the attempt
began (the one the takeover began, if it still runs). A client not there by then is behind: the write raises
StoreBehind (held: written behind, the unit's record is retried every second; a command that must save answers NOT
READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY), logged once per client and epoch, and every later write only
looks whether the attempt has ended, without waiting, so the thread's other jobs (other units, reads) are not held
behind it. An attempt that failed is made again by the next write (the retry; failures logged rate-limited). Once an
attempt begun after the blocklist completes, the client has a map at least as new as the monitors had then: writes
go through again (logged when it was behind).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from target.backstore.fencing import cluster_of

from .lograte import RateLimitedLog
from .unit_store import StoreBehind

if TYPE_CHECKING:
    from target.backstore.rados import Connection
    from target.backstore.rbd_image import CephClient

log = logging.getLogger("ringtgt.coordinator")

WAIT_SECONDS = 1.0          # after an attempt began: leaves the write its OP_TIMEOUT within the 3 s save deadline


@dataclass(eq=False)
class _Attempt:
    epoch: int                      # the epoch wanted when it began: reached when it ends without error
    began: float
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""


class OsdMapWaits:
    """The epochs a takeover wants (`want`, from the loop) and the store's thread's waits for them (`before_write`,
    `waiting`): thread-safe between those two sides."""

    def __init__(self, wait_seconds: float = WAIT_SECONDS):
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._wanted: dict[str, int] = {}               # by cluster (fencing.cluster_of): the newest epoch wanted
        self._reached: dict[CephClient, int] = {}       # the thread's: the newest epoch each client is known to have
        self._attempts: dict[CephClient, _Attempt] = {}     # the thread's: running, or ended and not looked at yet
        self._behind: set[tuple[CephClient, int]] = set()   # the thread's: (client, epoch) logged behind
        self._limited_log = RateLimitedLog(log)

    def want(self, epochs: dict[str, int]) -> None:
        """(The loop) a takeover's blocklists, as OSD map epochs per cluster: writes wait for them from now on."""
        with self._lock:
            for cluster, epoch in epochs.items():
                self._wanted[cluster] = max(self._wanted.get(cluster, 0), epoch)

    def at_takeover(self, conns: list[Connection]) -> dict[CephClient, str]:
        """(The thread, right after `want`) begin the wait of every client in `conns` on a cluster a takeover wants
        a map of, all at once, then give each the rest of its WAIT_SECONDS: the clients not at the map by then, and
        why (their writes are held meanwhile, as `before_write` says)."""
        wanted = []
        for conn in conns:
            with self._lock:
                epoch = self._wanted.get(cluster_of(conn.client), 0)
            if self._reached.get(conn.client, 0) < epoch:
                wanted.append(conn)
                if conn.client not in self._attempts:
                    self._attempts[conn.client] = self._begin(conn, epoch)
        behind = {}
        for conn in wanted:
            try:
                self.before_write(conn)
            except StoreBehind as e:
                behind[conn.client] = str(e)
        return behind

    def waiting(self, client: CephClient) -> bool:
        """(The thread) whether an attempt of `client` still blocks in librados (its connection is not closed)."""
        attempt = self._attempts.get(client)
        return attempt is not None and not attempt.done.is_set()

    def before_write(self, conn: Connection) -> None:
        """(The thread) return once `conn` is at the newest epoch wanted for its cluster; StoreBehind if it is not
        within the current attempt's WAIT_SECONDS (or that attempt failed)."""
        client = conn.client
        began_here = False
        while True:
            with self._lock:
                wanted = self._wanted.get(cluster_of(client), 0)
            if self._reached.get(client, 0) >= wanted:
                return
            attempt = self._attempts.get(client)
            if attempt is not None and attempt.done.is_set():
                del self._attempts[client]
                if not attempt.error:
                    self._reached[client] = max(self._reached.get(client, 0), attempt.epoch)
                    self._at_map(client, attempt)
                    continue                # a newer epoch may be wanted since it began
                self._limited_log.error(("failed", client), "units' state: the coordinator's RADOS client %s: "
                                        "waiting for the takeover's OSD map (epoch %d) failed: %s; its writes wait, "
                                        "tried again at the next", client, attempt.epoch, attempt.error)
                if began_here:
                    raise StoreBehind(f"not at the takeover's OSD map (epoch {wanted}) yet: {attempt.error}")
                attempt = None              # the retry
            if attempt is None:
                attempt = self._attempts[client] = self._begin(conn, wanted)
                began_here = True
            if not attempt.done.wait(max(0.0, attempt.began + self.wait_seconds - time.monotonic())):
                self._fell_behind(client, wanted)
                raise StoreBehind(f"not at the takeover's OSD map (epoch {wanted}) yet: waiting for it")

    @staticmethod
    def _begin(conn: Connection, epoch: int) -> _Attempt:
        attempt = _Attempt(epoch, time.monotonic())

        def wait() -> None:
            try:
                conn.wait_for_latest_osdmap()
            except Exception as e:          # (BackstoreError mostly): the attempt failed, whatever the cause
                attempt.error = str(e) or repr(e)
            finally:
                attempt.done.set()

        threading.Thread(target=wait, name="rados-state-osdmap", daemon=True).start()
        return attempt

    def _fell_behind(self, client: CephClient, epoch: int) -> None:
        if (client, epoch) not in self._behind:
            self._behind.add((client, epoch))
            log.error("units' state: the coordinator's RADOS client %s is not at the takeover's OSD map (epoch %d) "
                      "within %g s: its writes of the units' state objects wait until it is (written behind: retried "
                      "every second; a PR OUT that must save answers NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING "
                      "READY)", client, epoch, self.wait_seconds)

    def _at_map(self, client: CephClient, attempt: _Attempt) -> None:
        seconds = time.monotonic() - attempt.began
        if any(behind == client for behind, _ in self._behind):
            self._behind = {entry for entry in self._behind if entry[0] != client}
            log.warning("units' state: the coordinator's RADOS client %s at the takeover's OSD map (epoch %d) %.1f s "
                        "after it began waiting, late: its writes go through again", client, attempt.epoch, seconds)
        else:
            log.info("units' state: the coordinator's RADOS client %s at the takeover's OSD map (epoch %d) in %.3f s",
                     client, attempt.epoch, seconds)
