"""Where each logical unit keeps what must outlive the target. One home per fact, chosen per LUN (`UnitStores`):
- an RBD LUN: its whole SCSI state (registrations and reservations, APTPL or not, pending unit attentions, the
  initiators told of the power-on, mode parameters, the medium; `UnitState.record()`) and its sanitize record (a
  sanitize that runs or failed), in the LUN's RADOS object (coordinator/rados_store.py), so any node that serves
  the image finds it;
- a file LUN: its APTPL state (registrations and the persistent reservation, with APTPL) and its sanitize record,
  in files under <state_dir>/reservations (unit_state/files.py), <target>-<lun>.json and .sanitize.json.

A store offers
    where               what it is, for log lines
    deferred            False (files): keys APTPL and SANITIZE; `save` is done when it returns (an OSError raises).
                        True (RADOS): keys UNIT and SANITIZE; `done(result)` runs later from the coordinator's loop
    load()              (APTPL state or unit record, sanitize record) at start, each None when there is none;
                        StoreFailed if unread
    save(key, value, done=None, based_on=…)   value None to clear; result None when saved, a Stale when another
                        coordinator wrote the unit's state since this one last read or wrote it and its reservations
                        are not `based_on` (those the new value was derived from): the save is refused; a
                        StoreFailed when the store did not answer
    forget()            (deferred stores) a peer's state was adopted: what the store holds may have changed
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .unit_state.files import load_state, save_state
from target.backstore.rbd_image import RbdImage

if TYPE_CHECKING:
    from .rados_store import RadosStateClient

APTPL, SANITIZE, UNIT = "aptpl", "sanitize", "unit"


class StoreFailed(Exception):
    """The store did not answer (in time); the message names it and why."""


class StoreFenced(StoreFailed):
    """The store may not be written by this node: a takeover fenced it (target/backstore/fencing.py)."""


class StoreBehind(StoreFailed):
    """The store's RADOS client is not at a takeover's OSD map yet (coordinator/store_osdmap.py): its write is held
    (not made) until it is; a command that must save answers NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY,
    as the workers answer on the RBD LUNs of a cluster their clients are behind on."""


@dataclass(frozen=True)
class Stale:
    """A save refused: the unit's state (record, sanitize record) as another coordinator last wrote it."""
    unit: dict | None
    sanitize: dict | None


SaveResult = None | Stale | StoreFailed
Done = Callable[[SaveResult], None]


class FileStore:
    """The unit's state files: <directory>/<target>-<lun>.json and .sanitize.json beside it."""

    deferred = False

    def __init__(self, directory: str, target: str, lun: int):
        base = os.path.join(directory, f"{target}-{lun}")
        self._paths = {APTPL: f"{base}.json", SANITIZE: f"{base}.sanitize.json"}
        self.where = self._paths[SANITIZE]

    def load(self) -> tuple[dict | None, dict | None]:
        return load_state(self._paths[APTPL]), load_state(self._paths[SANITIZE])

    def save(self, key: str, value: dict | None, done: Done | None = None, based_on: object = None) -> None:
        save_state(self._paths[key], value)
        if done is not None:
            done(None)


class UnitStores:
    """The store of each unit: RADOS for an RBD LUN (`rbd_of(target, lun)` gives its image, None for the others),
    files under `directory` otherwise, none without a directory (tests). `attach(service)` once the coordinator's
    loop exists (RADOS answers reach it there); `close()` at its stop. `heartbeat()`: the supervisor's watchdog,
    told while a load waits for RADOS (a bounded wait, not a hang)."""

    def __init__(self, directory: str | None, rbd_of: Callable[[str, int], RbdImage | None] = lambda target, lun: None,
                 heartbeat: Callable[[], None] = lambda: None, node: str | None = None):
        self.directory = directory
        self.node = node                    # a cluster node's name: its RADOS client is recorded for fencing
        self.rbd_of = rbd_of
        self.heartbeat = heartbeat
        self._rados: RadosStateClient | None = None     # made for the first RBD LUN
        self._service = None

    def __call__(self, target: str, lun: int):
        rbd = self.rbd_of(target, lun)
        if rbd is not None:
            from .rados_store import RadosStateClient, RadosStore      # librados loaded only for RBD LUNs
            if self._rados is None:
                self._rados = RadosStateClient(self.heartbeat, self.node)
                if self._service is not None:
                    self._rados.attach(self._service)
            return RadosStore(self._rados, rbd, f"LUN {lun} of {target}")
        return None if self.directory is None else FileStore(self.directory, target, lun)

    def attach(self, service) -> None:
        self._service = service
        if self._rados is not None:
            self._rados.attach(service)

    def osdmap_barrier(self, epochs: dict[str, int], then: Callable[[dict[str, str]], None]) -> None:
        """A takeover blocklisted a peer in these OSD map epochs (per cluster): the RADOS client waits for that map
        from now on, and before every write there (coordinator/store_osdmap.py). `then(behind)`: by Ceph client, why
        it is not known to be at the map within the wait's deadline (at once, {}, without RBD LUNs)."""
        if self._rados is not None:
            self._rados.osdmap_barrier(epochs, then)
        else:
            then({})

    def close(self) -> None:
        if self._rados is not None:
            self._rados.close()
