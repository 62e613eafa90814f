"""A worker's half of a takeover's OSD map barrier (the coordinator's: coordinator/cluster.py; why:
target/backstore/fencing.py): on an OsdMapBarrier push, every RADOS client of this worker waits for the latest OSD map
— the one with the fenced peer's blocklist — and the push is acked once they all have it, so the takeover tickles
(and the initiators come back to write here) only then.

The wait (`rados_wait_for_latest_osdmap`) blocks, and librados gives it no deadline: it runs in a thread of its own,
which writes an eventfd the worker's ring polls. Past WAIT_SECONDS (below the coordinator's ack deadline, so the
worker's own log says what happened) the push is acked anyway and that is logged as an error: the takeover goes on,
as it would if this worker did not answer at all, and the wait's end is logged when it comes.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time

from coordinator.messages import OsdMapBarrier

from .backstore.base import BackstoreError
from .backstore.rados import connections

log = logging.getLogger(f"ringtgt.{__name__}")

WAIT_SECONDS = 2.0          # below coordinator/service.py's ACK_TIMEOUT (3 s)


class OsdMapSync:
    """Answers the coordinator's OsdMapBarrier pushes for this worker's RADOS clients."""

    def __init__(self, coordinator, reactor):
        self.reactor = reactor
        coordinator.subscribe(OsdMapBarrier, self._barrier)

    def _barrier(self, barrier: OsdMapBarrier, ack) -> None:
        clients = connections()
        if not clients:
            ack()
            return
        started = time.monotonic()
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        errors: list[str] = []
        acked: list[bool] = []
        epochs = ", ".join(f"epoch {epoch} of {conf}" for conf, epoch in barrier.epochs.items())

        def wait() -> None:                 # the thread: nothing but librados and the eventfd
            for conn in clients:
                try:
                    conn.wait_for_latest_osdmap()
                except BackstoreError as e:
                    errors.append(str(e))
            os.eventfd_write(fd, 1)

        def done(res: int) -> None:
            if res < 0:                     # the poll itself failed (the ring stops): the thread may still write
                log.error("waiting for the takeover's OSD map: poll failed (%s)", os.strerror(-res))
                overdue()
                return
            os.close(fd)                    # the thread wrote it: it is done with it
            seconds = time.monotonic() - started
            if errors:
                log.error("RADOS clients not brought to the takeover's OSD map (%s): %s", epochs, "; ".join(errors))
            elif acked:
                log.warning("RADOS clients at the takeover's OSD map (%s) %.1f s after the push, late", epochs, seconds)
            else:
                log.info("RADOS clients (%d) at the takeover's OSD map (%s) in %.3f s", len(clients), epochs, seconds)
            if not acked:
                acked.append(True)
                ack()

        def overdue() -> None:
            if not acked:
                acked.append(True)
                log.error("RADOS clients not at the takeover's OSD map (%s) within %g s: acked without it, the "
                          "takeover goes on", epochs, WAIT_SECONDS)
                ack()

        self.reactor.ring.prep_poll_add(fd, select.POLLIN, self.reactor.token(done))
        self.reactor.call_later(WAIT_SECONDS, overdue)
        threading.Thread(target=wait, name="osdmap-wait", daemon=True).start()
