"""A worker's side of "one image per LUN": open each file LUN's recorded image only, and check once a second that
the path still holds it. A LUN whose image is gone or replaced goes offline (NOT READY, MANUAL INTERVENTION
REQUIRED) on every worker: the first worker to see it writes the LUN's offline marker (backstore/images.py),
which the others see at their next check and a restarted worker at its start. A worker that still holds the
deleted file stops serving it too: what it acknowledged after the unlink would be lost at the next stop.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from coordinator.lograte import RateLimitedLog

from .backstore import Backstore, BackstoreError, ImageGone, RbdImage, open_backstore
from .backstore.rbd_image import CephClient
from .backstore import images
from .backstore.offline import OfflineBackstore

if TYPE_CHECKING:
    from .config import LunConfig
    from .reactor import Reactor
    from .scsi.lun import LogicalUnit

log = logging.getLogger(f"ringtgt.{__name__}")

CHECK_SECONDS = 1.0


class ImageWatch:
    """The file LUNs of one worker: opened by `open`, then watched from `watch` on."""

    def __init__(self, state_dir: str, call_later: Callable[[float, Callable[[], None]], object],
                 client_record: tuple[str, int] | None = None) -> None:
        """`client_record`: (node, worker index) under which an RBD LUN's client is recorded for fencing (a
        cluster node's worker; backstore/fencing.py), None: not recorded."""
        self._state_dir = state_dir
        self._client_record = client_record
        self._call_later = call_later       # (seconds, fn): the worker's timer
        self._identities: dict[tuple[str, int], images.ImageIdentity] = {}     # the LUNs opened, by (iqn, lun)
        self._gone: dict[tuple[str, int], str] = {}                          # the LUNs found gone, and why
        self._watched: list[tuple[str, LunConfig, LogicalUnit]] = []          # (iqn, lun config, unit)
        self._checking = False                                                # a check is scheduled
        self._limited_log = RateLimitedLog(log)

    def open(self, iqn: str, lun: LunConfig, reactor: Reactor) -> Backstore:
        """The LUN's store: for a file LUN its recorded image, or a stand-in when the image is gone (for an RBD LUN
        when this worker cannot open its image: the LUN goes offline until `serve` starts again)."""
        identity, reason = self._recorded(iqn, lun) if lun.backstore == "file" else (None, None)
        if reason is None:
            try:
                self._record(lun)
                store = open_backstore(lun.backstore, reactor, path=lun.path, size=lun.size, block_size=lun.block_size,
                                       direct=lun.direct, write_cache=lun.write_cache,
                                       encryption_key=lun.encryption_key, image=identity, rbd=rbd_image(lun),
                                       atomic_writes=lun.atomic_writes is not False,
                                       write_queue_depth=lun.write_queue_depth)
            except ImageGone as e:
                reason = str(e)
            except BackstoreError as e:
                if lun.backstore != "rbd":
                    raise
                reason = str(e)                 # the cluster did not answer this worker (the supervisor's check passed)
            else:
                if identity is not None:
                    self._identities[iqn, lun.id] = identity
                return store
        self._gone[iqn, lun.id] = reason
        return OfflineBackstore(reactor, path=lun.path, size=lun.size or lun.block_size, block_size=lun.block_size,
                                write_cache=lun.write_cache)

    def _record(self, lun: LunConfig) -> None:
        """An RBD LUN on a cluster node: this worker's RADOS client recorded for fencing first (BackstoreError if it
        cannot be, or the node was fenced: then the LUN is not served)."""
        rbd = rbd_image(lun)
        if rbd is not None and self._client_record is not None:
            from .backstore.fencing import record
            record(rbd.client, rbd.pool, *self._client_record)

    def _recorded(self, iqn: str, lun: LunConfig) -> tuple[images.ImageIdentity | None, str | None]:
        """The identity the supervisor recorded for the LUN's image, and why the LUN is offline already (or None)."""
        assert lun.path is not None             # asked for file LUNs only: they have one (config.py)
        try:
            identity = images.recorded(self._state_dir, iqn, lun.id, lun.path)
        except images.ImageError as e:
            return None, str(e)
        if identity is None:
            return None, f"image {lun.path}: no record of it under {self._state_dir}"
        return identity, images.offline_reason(self._state_dir, iqn, lun.id)

    def watch(self, iqn: str, lun: LunConfig, unit: LogicalUnit) -> None:
        """`unit` serves `lun`: offline at once if its image was gone at open, else checked from now on."""
        reason = self._gone.pop((iqn, lun.id), None)
        if reason is not None:
            self._offline(iqn, lun.id, unit, reason)
        elif (iqn, lun.id) in self._identities:
            self._watched.append((iqn, lun, unit))
            self._schedule()

    def _schedule(self) -> None:
        if self._watched and not self._checking:
            self._checking = True
            self._call_later(CHECK_SECONDS, self._check)

    def forget(self, iqn: str, lun_id: int) -> None:
        """The LUN is no longer served (a reload removed it): no more checks of its image."""
        self._identities.pop((iqn, lun_id), None)
        self._watched = [watched for watched in self._watched if (watched[0], watched[1].id) != (iqn, lun_id)]

    def _check(self) -> None:
        self._checking = False
        for iqn, lun, unit in self._watched:
            assert lun.path is not None         # only file LUNs have an identity to watch
            try:
                reason = (images.offline_reason(self._state_dir, iqn, lun.id)
                          or images.gone(lun.path, self._identities[iqn, lun.id]))
            except OSError as e:        # out of descriptors, say: the image may well be there, look again later
                self._limited_log.warning((iqn, lun.id), "%s LUN %d: cannot check its image %s now (%s); checking "
                                          "again in %g s", iqn, lun.id, lun.path, e.strerror, CHECK_SECONDS)
                continue
            if reason is not None:
                self._offline(iqn, lun.id, unit, reason)
        self._watched = [watched for watched in self._watched if not watched[2].offline]
        self._schedule()

    def _offline(self, iqn: str, lun_id: int, unit: LogicalUnit, reason: str) -> None:
        """Take the unit offline; the first worker to do so logs the error, the others that they followed."""
        unit.take_offline()
        if images.mark_offline(self._state_dir, iqn, lun_id, reason):
            log.error("%s LUN %d offline (NOT READY, MANUAL INTERVENTION REQUIRED): %s", iqn, lun_id, reason)
        else:
            log.info("%s LUN %d offline, as another worker found: %s", iqn, lun_id, reason)


def rbd_image(lun: LunConfig) -> RbdImage | None:
    """The RBD image of a backstore "rbd" LUN (None for the others)."""
    if lun.pool is None or lun.image is None:
        return None
    return RbdImage(lun.pool, lun.image, CephClient(lun.ceph_conf, lun.client_name, lun.keyring))
