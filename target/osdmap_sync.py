"""A worker's half of a takeover's OSD map barrier (the coordinator's: coordinator/cluster.py; why:
target/backstore/fencing.py): on an OsdMapBarrier push, the RADOS clients of this worker on each cluster named wait
for the latest OSD map — the one with the fenced peer's blocklist — and the push is acked once they all have it, so
the takeover tickles (and the initiators come back to write here) only then.

The wait (`rados_wait_for_latest_osdmap`) blocks, and librados gives it no deadline: an attempt runs in a thread of
its own, which writes an eventfd the worker's ring polls. Past WAIT_SECONDS after the push was sent (below the
coordinator's ack deadline; a worker whose loop got the push late gets there at once, before it serves a command
that came after), the clients of a cluster not at the map yet are behind: that cluster's RBD LUNs of this worker
answer NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY (scsi/lun.py; initiators retry it) from then on, and
only then is the push acked, saying which clusters are behind (the takeover's report names the worker). Their writes
would carry an OSD map older than the blocklist, and an OSD that has not seen it yet could apply a fenced node's
write after them. The wait goes on: an attempt that fails is made again RETRY_SECONDS later (logged, rate-limited);
one still blocked ATTEMPT_SECONDS after it began is logged (rate-limited) and waited on, as librados cannot be told
to give it up and a second call would wait for the same monitor answer. A worker that connected after the takeover's
push, its process started before it, gets it again, alone (`again`: coordinator/cluster.py), before its WELCOME and
so before its unit states and before it accepts anyone: its clients may have connected before the blocklist, and no
ack of it held the tickles, so its LUNs of a cluster named are NOT READY at once, until its clients have the map
(their waits counted from its arrival).
Once an attempt begun after the push completes, the clients have a map at least as new as the monitors had then,
which has the blocklist: the LUNs serve again (logged).
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING

from coordinator.lograte import RateLimitedLog
from coordinator.messages import OsdMapBarrier

from .backstore.fencing import cluster_of
from .backstore.rados import connections

if TYPE_CHECKING:
    from .backstore.rados import Connection
    from .reactor import Reactor
    from .scsi.lun import LogicalUnit

log = logging.getLogger(f"ringtgt.{__name__}")

WAIT_SECONDS = 2.0          # before the ack: below coordinator/service.py's ACK_TIMEOUT (3 s)
ATTEMPT_SECONDS = 10.0      # an attempt still blocked this long after it began is logged (and again each time)
RETRY_SECONDS = 1.0         # after a failed attempt, before the next


@dataclass(eq=False)
class _Attempt:
    number: int
    epoch: int                      # the epoch wanted when it began: reached when it completes without error
    began: float
    errors: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Cluster:
    """This worker's wait for one cluster's OSD map."""
    key: str                        # fencing.cluster_of: its ceph.conf
    wanted: int = 0                 # the newest epoch a barrier asked for
    reached: int = 0                # the newest epoch its clients are known to have
    since: float = 0.0              # the push that made it wait (monotonic)
    attempt: _Attempt | None = None     # running
    retrying: bool = False          # a failed attempt's retry is scheduled
    behind: bool = False            # its RBD LUNs are NOT READY until the map is reached
    joined: bool = False            # its barrier came again, this worker having connected after the takeover


@dataclass(eq=False)
class _Barrier:
    pending: dict[str, int]         # cluster → epoch, not reached yet
    ack: Callable


class OsdMapSync:
    """Answers the coordinator's OsdMapBarrier pushes for this worker's RADOS clients, and holds the RBD LUNs of a
    cluster whose clients are behind NOT READY until they are not."""

    def __init__(self, coordinator, reactor: Reactor, units: Callable[[str], list[LogicalUnit]],
                 clients: Callable[[], list[Connection]] = connections, wait_seconds: float = WAIT_SECONDS,
                 attempt_seconds: float = ATTEMPT_SECONDS, retry_seconds: float = RETRY_SECONDS):
        """`units(cluster)`: this worker's units of the RBD LUNs on that cluster (fencing.cluster_of of their
        client); `clients()`: this worker's RADOS clients."""
        self.reactor = reactor
        self._units = units
        self._clients = clients
        self.wait_seconds, self.attempt_seconds, self.retry_seconds = wait_seconds, attempt_seconds, retry_seconds
        self._clusters: dict[str, _Cluster] = {}
        self._barriers: list[_Barrier] = []
        self._numbers = count(1).__next__
        self._limited_log = RateLimitedLog(log)
        coordinator.subscribe(OsdMapBarrier, self._barrier)

    def behind(self, cluster: str) -> bool:
        """Whether the RBD LUNs on `cluster` are to be NOT READY now (a unit made now, by a reload, too)."""
        found = self._clusters.get(cluster)
        return found is not None and found.behind

    def _clients_of(self, key: str) -> list[Connection]:
        return [conn for conn in self._clients() if cluster_of(conn.client) == key]

    def _barrier(self, barrier: OsdMapBarrier, ack: Callable) -> None:
        pending = {}
        arrived = time.monotonic()
        sent = min(barrier.sent or arrived, arrived)
        for key, epoch in barrier.epochs.items():
            if not self._clients_of(key):
                continue
            cluster = self._clusters.setdefault(key, _Cluster(key))
            if cluster.reached >= epoch:    # reached by an attempt begun after an earlier push: had it already
                continue
            if barrier.again:               # for this worker alone, which connected after the takeover's push
                cluster.joined = True
            if cluster.wanted <= cluster.reached:
                cluster.since = arrived if barrier.again else sent
            cluster.wanted = max(cluster.wanted, epoch)
            if cluster.attempt is None and not cluster.retrying:
                self._begin(cluster)
            pending[key] = epoch
        if not pending:
            ack()
            return
        waiting = _Barrier(pending, ack)
        self._barriers.append(waiting)
        left = sent + self.wait_seconds - time.monotonic()
        if left > 0 and not barrier.again:
            self.reactor.call_later(left, lambda: self._overdue(waiting))
        else:       # a worker that got the push late, or connected after it: before any command of this turn
            self._overdue(waiting)

    # -- attempts -----------------------------------------------------------------------------------------------
    def _begin(self, cluster: _Cluster) -> None:
        clients = self._clients_of(cluster.key)
        attempt = cluster.attempt = _Attempt(self._numbers(), cluster.wanted, time.monotonic())
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

        def wait() -> None:                 # the thread: nothing but librados and the eventfd
            try:
                for conn in clients:
                    conn.wait_for_latest_osdmap()
            except Exception as e:          # (BackstoreError mostly): the attempt failed, whatever the cause
                attempt.errors.append(str(e) or repr(e))
            finally:
                os.eventfd_write(fd, 1)

        self.reactor.ring.prep_poll_add(fd, select.POLLIN,
                                        self.reactor.token(lambda res: self._ended(cluster, attempt, fd, res)))
        self.reactor.call_later(self.attempt_seconds, lambda: self._still_blocked(cluster, attempt))
        threading.Thread(target=wait, name="osdmap-wait", daemon=True).start()

    def _ended(self, cluster: _Cluster, attempt: _Attempt, fd: int, res: int) -> None:
        cluster.attempt = None
        if res < 0:                         # the poll itself failed (the ring stops): the thread may still write
            log.error("RADOS clients of %s: waiting for the takeover's OSD map: poll failed (%s); trying again in "
                      "%g s", cluster.key, os.strerror(-res), self.retry_seconds)
            cluster.retrying = True
            self.reactor.call_later(self.retry_seconds, lambda: self._retry(cluster))
            return
        os.close(fd)                        # the thread wrote it: it is done with it
        if attempt.errors:
            self._limited_log.error(("failed", cluster.key), "RADOS clients of %s: waiting for the takeover's OSD "
                                    "map (epoch %d) failed (attempt %d): %s; trying again in %g s", cluster.key,
                                    cluster.wanted, attempt.number, "; ".join(attempt.errors), self.retry_seconds)
            cluster.retrying = True
            self.reactor.call_later(self.retry_seconds, lambda: self._retry(cluster))
            return
        cluster.reached = max(cluster.reached, attempt.epoch)
        for barrier in list(self._barriers):
            barrier.pending = {key: epoch for key, epoch in barrier.pending.items()
                               if self._clusters[key].reached < epoch}
            if not barrier.pending:
                self._barriers.remove(barrier)
                barrier.ack()
        if cluster.reached < cluster.wanted:
            self._begin(cluster)            # a later push asked for a newer map while this attempt ran
        else:
            self._at_map(cluster)

    def _retry(self, cluster: _Cluster) -> None:
        cluster.retrying = False
        if cluster.attempt is None and cluster.reached < cluster.wanted:
            self._begin(cluster)

    def _still_blocked(self, cluster: _Cluster, attempt: _Attempt) -> None:
        if cluster.attempt is not attempt:
            return
        self._limited_log.warning(("blocked", cluster.key), "RADOS clients of %s still not at the takeover's OSD map "
                                  "(epoch %d) %.0f s after the push: attempt %d waits on in rados_wait_for_latest_"
                                  "osdmap (no deadline of its own)%s", cluster.key, cluster.wanted,
                                  time.monotonic() - cluster.since, attempt.number,
                                  "; its RBD LUNs NOT READY until then" if cluster.behind else "")
        self.reactor.call_later(self.attempt_seconds, lambda: self._still_blocked(cluster, attempt))

    # -- the LUNs -----------------------------------------------------------------------------------------------
    def _overdue(self, barrier: _Barrier) -> None:
        """WAIT_SECONDS after the push: the clusters not reached are behind, their LUNs NOT READY; then the ack."""
        if barrier not in self._barriers:
            return                          # acked already: every cluster reached its map
        self._barriers.remove(barrier)
        for key, epoch in barrier.pending.items():
            cluster = self._clusters[key]
            if not cluster.behind:
                cluster.behind = True
                units = self._units(key)
                for unit in units:
                    unit.set_becoming_ready(True)
                if cluster.joined:
                    log.info("RADOS clients of %s: this worker connected after a takeover's OSD map barrier (epoch "
                             "%d): its %d RBD LUNs here answer NOT READY (becoming ready) until they have that map",
                             key, epoch, len(units))
                    continue
                log.error("RADOS clients of %s not at the takeover's OSD map (epoch %d) within %g s: its %d RBD LUNs "
                          "here answer NOT READY (becoming ready) until they are; acked saying so, the takeover goes "
                          "on", key, epoch, self.wait_seconds, len(units))
        barrier.ack({"behind": dict(barrier.pending)})

    def _at_map(self, cluster: _Cluster) -> None:
        seconds = time.monotonic() - cluster.since
        clients = len(self._clients_of(cluster.key))
        joined, cluster.joined = cluster.joined, False
        if cluster.behind:
            cluster.behind = False
            units = self._units(cluster.key)
            for unit in units:
                unit.set_becoming_ready(False)
            if joined:
                log.info("RADOS clients (%d) of %s at the takeover's OSD map (epoch %d): its %d RBD LUNs here serve",
                         clients, cluster.key, cluster.reached, len(units))
                return
            log.warning("RADOS clients (%d) of %s at the takeover's OSD map (epoch %d) %.1f s after the push, late: "
                        "its %d RBD LUNs here serve again", clients, cluster.key, cluster.reached, seconds, len(units))
        else:
            log.info("RADOS clients (%d) of %s at the takeover's OSD map (epoch %d) in %.3f s", clients, cluster.key,
                     cluster.reached, seconds)
