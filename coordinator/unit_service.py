"""Reservations and unit attentions of every logical unit: the coordinator is their authority (the worker's
half: target/unit_sync.py and target/scsi/shared_reservations.py), and its message handlers.

Messages (coordinator/messages.py; each names its unit by `target` iqn and `lun`; nexuses are I_T nexus names):
    ReservationRequest  PR IN/OUT, RESERVE/RELEASE: runs the unit's `Reservations`; reply ReservationAnswer
                        {outcome, change}. A change (ReservationChange: view, attentions, aborts) is pushed to every
                        other worker first, so a reply means every worker's per-I/O conflict view is current. With
                        APTPL the unit's file is rewritten (atomically) before the reply. An RBD LUN's RADOS object
                        is, for every change of its registrations or persistent reservation (APTPL or not): the
                        request waits (deferred, the unit's later requests behind it) and is applied only once its
                        record is saved; unsaved, it fails with a sense (`_saved`).
    UnitReset           LUN reset / target warm or cold reset: SPC-2 reservations and medium preventions go, every
                        nexus of those units gets the unit attention `asc`; replied and pushed with the `views`
                        (workers abort other nexuses' tasks there, a cold reset closes them).
    ClearTaskSet        CLEAR TASK SET, replied and pushed as is.
    AttachNexus         a session of this nexus started on the origin worker; reply NexusAttentions: what the
                        nexus has pending, and the views. The RADOS objects of the target's RBD LUNs are read first
                        (deferred): what another coordinator left there since this one last wrote is taken.
    AttentionReported   notification: a worker reported (and cleared) a unit attention.
    NexusLost           I_T nexus loss: its SPC-2 reservation and medium prevention go; reply NexusLostChanges,
                        each change also pushed.
    ModeSelect          MODE SELECT changed WCE or SWP: every other nexus of the unit gets MODE PARAMETERS CHANGED;
                        replied and pushed as ModeChange.
    MediumRequest       START STOP UNIT or PREVENT ALLOW on a removable unit, a SANITIZE beginning, ending or
                        failing, EXIT FAILURE MODE (unit_state/medium.py); reply MediumAnswer (with `refused`); what
                        moves is pushed as MediumChange. The death of the worker running a sanitize fails it. An RBD
                        LUN's sanitize start waits in the unit's line as a reservation change does, and begins only
                        once its record is saved (its worker overwrites nothing before the answer); unsaved, it is
                        refused with that change's sense (`unsaved_sense`).
    ResizeLun           control (`ringtgt resize`): the unit grew; every nexus of it gets CAPACITY DATA HAS CHANGED;
                        pushed as LunResized, replied ResizeAnswer. A smaller size is refused (`refused`: data beyond
                        the new end would go), the same size changes nothing. The size lasts until `serve` stops:
                        the next start serves the configured `size` (the operator raises it too; README).
    (reload)            coordinator/reload_service.py adds and removes units, grows them and establishes REPORTED LUNS
                        DATA HAS CHANGED (`reconfigure`); its push ConfigChanged carries the attentions.
    FetchUnitStates     every unit's view, the modes changed since the start and each medium's state (UnitStates),
                        for a worker that (re)connected. Units changed by a worker's death (its nexuses' SPC-2
                        reservations released; a hook cannot push) are pushed to the other workers then: the
                        supervisor restarts the dead worker at once, and the new one asks for the states.

A sanitize that runs or failed is also saved (removed when it ends): a new `serve` finds a unit whose sanitize did not
finish in sanitize failure mode (a deferred store's start saved before its answer, as above; a failure's record whose
save failed is written again behind). Where a unit's
APTPL state and sanitize record live: coordinator/unit_store.py (<state_dir>/reservations/<target>-<lun>.json and
.sanitize.json, or the RADOS object of an RBD LUN).

An RBD LUN's RADOS object keeps the whole unit (`UnitState.record()`: registrations and the persistent reservation,
pending unit attentions, the initiators told of the power-on, mode parameters, the medium), so that a coordinator
that never heard this one serves the unit as it was: at start (`take_at_start`, or `UnitState` itself with no live
or stopped file), when a reload adds it, at every login (AttachNexus), and when a save finds another coordinator's
write (Stale) it takes what is stored (`take_record`, and `take_sanitize`: a sanitize record there is a sanitize
failure here; `StoredStateTaken` pushes it to the workers). What a command's answer promises (a reservation
change, a sanitize begun) is saved before the answer; the rest (an initiator greeted, an attention reported, a MODE
SELECT, a nexus lost, a sanitize's end…) is written behind after every change (`_write_behind`: one write per unit
at a time, the changes meanwhile coalesced into the next; retried after RETRY_SECONDS when the cluster failed;
flushed at a clean stop). A crash before such a write lands costs that fact: an attention reported again, a
power-on reported twice, a MODE SELECT undone (README, Ceph RBD).

Coordinator restarts: after every change the whole state (`snapshot()`) is also written to
<state_dir>/reservations/live-<supervisor incarnation>.json; a coordinator restarted by the same supervisor resumes
from it (registrations, reservations, pending unit attentions), while a new `serve` removes stale live files.

Planned restarts: a coordinator stopped by SIGTERM (after the workers: the supervisor stops them first) writes the
same snapshot to <state_dir>/reservations/stopped.json (`save_at_stop`); the next `serve` resumes from it and
removes it at once, so only a clean stop's state is ever honoured: after a crash or a power loss there is none,
and the target starts as a power cycle does — POWER ON for every initiator, only what APTPL saved. Registrations
without APTPL survive a planned restart too: SPC-4 drops them on a power loss of the logical unit, and the
initiator learns of that loss from POWER ON; a planned restart of the target software reports none, so nothing
the initiator was not told of may go (as in a failover, which keeps the same state on the peer). Every I_T nexus
is lost by the stop (its SPC-2 reservation and medium prevention go; its pending unit attentions stay for its
return) and a sanitize the stop cut short failed. A target whose set of LUNs changed meanwhile greets its
initiators with POWER ON again.

POWER ON rule (issue 4: after a failover the reconnecting initiator, with a new ISID, must not be told the unit
was reset): a nexus gets POWER ON, RESET OR BUS DEVICE RESET OCCURRED on a unit only if its initiator *name* has
not been seen by that unit since the coordinator state began (`UnitState.greeted`, part of `snapshot()` and so
replicated with it, and of an RBD LUN's record). A new ISID of a known initiator starts with nothing pending.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable

from .unit_state.files import load_state, save_state
from .unit_store import APTPL, SANITIZE, UNIT, SaveResult, Stale, StoreBehind, StoreFailed, StoreFenced, UnitStores
from .unit_state.medium import (ACTIONS, ALLOW, EJECT, IDLE, LOAD, MOVES, PREVENT, SANITIZE_FAILURE, SANITIZE_STARTS,
                                SANITIZING, MediumState)
from .unit_state.reservations import Outcome, Reservations, run_request
from .unit_state.sense import (ABORTED_COMMAND, BECOMING_READY, CAPACITY_DATA_HAS_CHANGED,
                              LOGICAL_UNIT_COMMUNICATION_FAILURE, MODE_PARAMETERS_CHANGED, NO_ADDITIONAL_SENSE,
                              NOT_READY, POWER_ON_RESET, REPORTED_LUNS_DATA_HAS_CHANGED, build_sense)
from .unit_state.status import CHECK_CONDITION

from .messages import (AttachNexus, AttentionReported, ClearTaskSet, FetchUnitStates, LunResized, MediumAnswer,
                       MediumChange, MediumRequest, Message, ModeChange, ModeSelect, NexusAttentions, NexusLost,
                       NexusLostChanges, Nothing, ReservationAnswer, ReservationChange, ReservationRequest,
                       ResizeAnswer, ResizeLun, StoredStateTaken, UnitReset, UnitStates)
from .service import CoordinatorService, Deferred, Reply
from target.backstore.rbd_image import RbdImage

log = logging.getLogger("ringtgt.coordinator")

STOPPED = "stopped.json"        # in <state_dir>/reservations: the state a clean stop left for the next start
RETRY_SECONDS = 1.0             # a unit record's write behind that failed is tried again after this
FLUSH_SECONDS = 1.0             # at a clean stop, within the supervisor's COORDINATOR_STOP (target/supervisor.py)


def unsaved_sense(result: Stale | StoreFailed) -> tuple[int, int]:
    """The sense key and ASC/ASCQ of a command whose state a deferred store did not save (a reservation change, a
    sanitize's start; neither applied): the cluster not answering, NOT READY, LOGICAL UNIT COMMUNICATION FAILURE (as
    LIO answers an APTPL file it could not write); another coordinator's state saved meanwhile (Stale), ABORTED
    COMMAND (the unit now has that state, and a retry runs on it); the store's client not at a takeover's OSD map
    yet (StoreBehind), NOT READY, BECOMING READY, as the workers answer on RBD LUNs behind it (initiators retry it)."""
    if isinstance(result, Stale):
        return ABORTED_COMMAND, NO_ADDITIONAL_SENSE
    return NOT_READY, BECOMING_READY if isinstance(result, StoreBehind) else LOGICAL_UNIT_COMMUNICATION_FAILURE


@dataclasses.dataclass
class Waiting:
    """A request of a deferred store's unit, waiting its turn (`UnitAuthority._run_waiting`): a reservation request,
    or a sanitize's start (`gone` once its worker died)."""
    message: ReservationRequest | MediumRequest
    origin: str
    deferred: Deferred
    gone: bool = False


class UnitState:
    """One logical unit: its reservations, the unit attentions pending per nexus, its changed mode parameters,
    its removable medium, the initiators told of its power-on; `store` keeps what must outlive the target
    (coordinator/unit_store.py: for a deferred store, all of it but the size, as `record()`)."""

    def __init__(self, store=None):
        self.reservations = Reservations()
        self.pending: dict[str, list[int]] = {}
        self.mode: list[bool] | None = None         # [wce, swp] once a MODE SELECT changed them
        self.medium = MediumState()
        self.greeted: set[str] = set()              # initiator names told of the power-on (the module doc)
        self.size: int | None = None                # bytes, once `ringtgt resize` grew it (else the configured)
        self.store = store
        self.waiting: deque[Waiting] = deque()      # a deferred store's requests, in order
        self.saving = False                         # the first of `waiting` waits for its save
        self.writing = False                        # a deferred store: `record()` is being written behind
        self.sanitize_stored = False                # the sanitize record of this failure mode is known in the store
        self.sanitize_due = False                   # this coordinator's sanitize record, whose save did not land
        if store is not None:
            saved, sanitize = store.load()
            if saved is not None and store.deferred:
                self.take_record(saved)
                self.lose_every_nexus()
            elif saved is not None:
                self.reservations.restore(saved)
            self.take_sanitize(sanitize, "a sanitize did not finish before the target stopped")

    def establish(self, nexus: str, asc_ascq: int) -> None:
        queue = self.pending.setdefault(nexus, [])
        if asc_ascq not in queue:
            queue.append(asc_ascq)

    def establish_all(self, asc_ascq: int) -> None:
        for nexus in self.pending:
            self.establish(nexus, asc_ascq)

    def consumed(self, nexus: str, asc_ascq: int) -> None:
        queue = self.pending.get(nexus)
        if queue and asc_ascq in queue:
            queue.remove(asc_ascq)

    def nexus_lost(self, nexus: str) -> bool:
        """The nexus is gone: its SPC-2 reservation and medium lock go, and so does its unit attention queue if
        empty (a nexus that comes back starts with an empty one anyway; without this every login's new ISID
        would stay here for good). True if the reservations changed."""
        self.medium.nexus_lost(nexus)
        if not self.pending.get(nexus, True):
            del self.pending[nexus]
        return self.reservations.nexus_lost(nexus)

    def persist_sanitize(self, saved: bool = False) -> None:
        """A sanitize began, ended or failed here: a restart of the target must find an unfinished one failed. Until
        its record is saved the store is not known to hold it (`take_sanitize`); a deferred store's that is not saved
        is written again behind (`UnitAuthority._write_behind`). `saved`: the store holds it already (a deferred
        store's sanitize start, saved before it began)."""
        self.sanitize_stored = False
        if self.store is not None and not saved:
            self.save_sanitize()

    def save_sanitize(self, then: Callable[[SaveResult], None] | None = None) -> None:
        """Save the sanitize record as it is now; `then(result)` once saved or not."""
        medium, record = self.medium, self.medium.sanitize_record()

        def saved(result: SaveResult) -> None:
            if self.medium is medium:       # (not replaced by a peer's state meanwhile: `restore`)
                self.sanitize_due = result is not None or medium.sanitize_record() != record
            if result is None and record is not None and self.medium is medium and \
                    medium.sanitize == SANITIZE_FAILURE and medium.sanitize_record() == record:
                self.sanitize_stored = True
            if then is not None:
                then(result)
        self.store.save(SANITIZE, record, saved)

    def record(self, reservations: Reservations | None = None, attentions: Iterable[tuple[str, int]] = ()) -> dict:
        """The unit's state as a deferred store keeps it (JSON); with the `reservations` and `attentions` of a
        request about to be applied. Not its SPC-2 reservation: that goes with its I_T nexus, and a coordinator that
        takes the record has none of the nexuses of the one that wrote it."""
        pending = {nexus: list(queue) for nexus, queue in self.pending.items()}
        for nexus, asc_ascq in attentions:
            if asc_ascq not in pending.setdefault(nexus, []):
                pending[nexus].append(asc_ascq)
        return {"reservations": (reservations or self.reservations).persistent_state(), "pending": pending,
                "mode": self.mode, "medium": [self.medium.loaded, sorted(self.medium.preventing)],
                "greeted": sorted(self.greeted)}

    def take_record(self, record: dict | None) -> None:
        """The state saved in the unit's RADOS object (by another coordinator, or before this one started) replaces
        this one's, but for the unit attentions pending here, the initiators greeted here and the medium removal
        preventions held here, which stay beside the saved ones (at worst an attention reported twice; never a
        power-on unreported nor a prevention lost), and the SPC-2 reservation (`record`). None: an empty unit."""
        record = record or {}
        state = record.get("reservations") or Reservations().persistent_state()
        self.reservations.restore({**state, "spc2_holder": self.reservations.spc2_holder})
        for nexus, queue in record.get("pending", {}).items():
            for asc_ascq in queue:
                self.establish(nexus, asc_ascq)
        self.mode = record.get("mode")
        loaded, preventing = record.get("medium") or (True, [])
        self.medium.loaded = loaded
        self.medium.preventing |= set(preventing)       # a prevention held by a nexus here stays with it too
        self.greeted |= set(record.get("greeted", []))

    def take_sanitize(self, record: dict | None, why: str) -> None:
        """What the store holds of the unit's sanitize, as read (at start) or as the newest write of another
        coordinator has it (`_take`: a login's read, a refused save). The store is the one truth of a shared image.

        A record (`why`: whose it is): the sanitize it names did not finish here, nor could this coordinator see it
        finish, so the unit is in sanitize failure mode (left by a sanitize that completes, or EXIT FAILURE MODE after
        an AUSE one), unless a sanitize runs or failed here already; either way the store now holds this failure
        mode's record (`sanitize_stored`).

        None (no record): the failure mode ends here too, but only where the store is known to have held its record
        since it began here (`sanitize_stored`: taken from the store, or our own record saved there), since then a
        write without it came after, and removed it: a sanitize completed, or EXIT FAILURE MODE, through another node
        (SBC-4: either ends the mode for the unit). The races this leaves alone:
        - our own record not written yet (a sanitize failed here, its worker died, a takeover interrupted it, and
          `persist_sanitize`'s save is queued, failed, or held behind a takeover's OSD map): the object lacks it only
          because it is not there yet, so the mode stays, and the record is written behind (`_write_behind`) until
          the store holds it; should another node end the mode meanwhile, that record puts it back there (the
          conservative side: a failure mode no initiator was told had ended);
        - a sanitize running here (SANITIZING; beginning one resets `sanitize_stored`): its record may not have landed
          yet, and the other coordinator's write only predates it; the sanitize ends or fails here, as ever;
        - a failure mode adopted from a peer over the cluster bus that this coordinator has not read in the store
          (`restore`): the peer saves its own record, and ends it over the bus."""
        if record is not None:
            if self.medium.sanitize == IDLE:
                log.error("%s: %s: sanitize failure mode", self.store.where, why)
                self.medium.after_restart(record)
            self.sanitize_stored = self.medium.sanitize == SANITIZE_FAILURE
        elif self.sanitize_stored and self.medium.sanitize == SANITIZE_FAILURE:
            log.warning("%s: its sanitize record is gone from the store (another node's sanitize completed, or its "
                        "EXIT FAILURE MODE): sanitize failure mode ends here too", self.store.where)
            self.medium.failure_ended()
            self.sanitize_stored = False

    def take_at_start(self, resumed_live: bool) -> None:
        """A deferred store's unit at start, after the node's live or stopped file was restored: the record read
        from the store is the unit's state, unless the live file (a coordinator restarted under the same supervisor:
        its workers and their nexuses are still there) has the same registrations and reservation (it then knows
        the rest at least as well)."""
        stored = self.store.record
        if not isinstance(stored, dict):        # none, or unread (the unit started without it: _loaded_unit)
            return
        if (stored.get("reservations") or Reservations().persistent_state()) != self.reservations.persistent_state():
            log.warning("%s: changed since this node saved its state (another node served the LUN): its state is "
                        "taken", self.store.where)
        elif resumed_live:
            return
        self.take_record(stored)
        if not resumed_live:
            self.lose_every_nexus()

    def lose_every_nexus(self) -> None:
        """The target stopped (or another node served the unit): every nexus was lost with it."""
        for nexus in {*self.pending, *self.medium.preventing, self.reservations.spc2_holder or ""} - {""}:
            self.nexus_lost(nexus)

    def aptpl_state(self) -> dict | None:
        return self.reservations.persistent_state() if self.reservations.aptpl else None

    def persist(self) -> None:
        """After a reservation change, with a store that saves at once (a deferred one saved it before)."""
        if self.store is not None and not self.store.deferred:
            self.store.save(APTPL, self.aptpl_state())


class UnitAuthority:
    """Every unit of the node's targets, keyed by (target iqn, lun)."""

    def __init__(self, units: list[tuple[str, int]], state_dir: str | None = None, incarnation: str | None = None,
                 rbd_of: Callable[[str, int], RbdImage | None] = lambda target, lun: None,
                 heartbeat: Callable[[], None] = lambda: None, node: str | None = None):
        """`rbd_of(target, lun)`: the unit's RBD image, whose RADOS object keeps its state (None: files under
        state_dir); StoreFailed when a unit's state cannot be read; `heartbeat()` while waiting for one; `node`:
        a cluster node's name (its RADOS client recorded for fencing, target/backstore/fencing.py)."""
        directory = None if state_dir is None else os.path.join(state_dir, "reservations")
        self.stores = UnitStores(directory, rbd_of, heartbeat, node)
        self._defer: Callable[[], Deferred] | None = None
        self._service: CoordinatorService | None = None
        self.units = {(target, lun): self._loaded_unit(target, lun, StoreFenced) for target, lun in units}
        self.attached: dict[str, set[tuple[str, str]]] = {}     # origin -> (target, nexus) it hosts
        self.attaching: dict[tuple[str, str, str], bool] = {}    # (origin, target, nexus) read for -> lost since
        self._retry_due = False                                   # a _write_behind is due in RETRY_SECONDS
        self.unpushed: set[tuple[str, int]] = set()                # units changed by a worker's death
        self.interrupted: set[tuple[str, int]] = set()             # units whose sanitize a worker's death failed
        self.version = int(any(unit.reservations.keys for unit in self.units.values()))   # see `adopt`
        self._hooks: list = []
        self.live_path = None
        if directory is not None and incarnation is not None:
            self.live_path = os.path.join(directory, f"live-{incarnation}.json")
            for stale in glob.glob(os.path.join(directory, "live-*.json")):
                if stale != self.live_path:
                    os.unlink(stale)
            live = load_state(self.live_path)
            stopped_path = os.path.join(directory, STOPPED)
            resumed = live is not None or os.path.exists(stopped_path)
            if live is not None:
                log.info("reservations: resuming the state of the previous coordinator")
                self.restore(live)
            elif resumed:
                self._resume_after_stop(stopped_path)
            save_state(stopped_path, None)                  # honoured once: a crash later finds none
            for unit in self.units.values():
                if resumed and unit.store is not None and unit.store.deferred:
                    unit.take_at_start(live is not None)

    def attach_loop(self, service: CoordinatorService) -> None:
        """The loop of the coordinator: deferred replies, the answers of the RADOS stores, the writes behind."""
        self._defer = service.defer
        self._service = service
        self.stores.attach(service)

    def close(self) -> None:
        self.stores.close()

    def _loaded_unit(self, target: str, lun: int, tolerated: type[StoreFailed]) -> UnitState:
        """A unit with the state its store holds. When that cannot be read for a `tolerated` reason (at start: the
        node is fenced, and its workers serve the unit offline; at a reload: any), it starts without (logged): its
        first save is then refused as stale if the store has some, and the unit takes it (or fails, fenced)."""
        store = self.stores(target, lun)
        try:
            return UnitState(store)             # with a deferred store, the state another node left (if any)
        except tolerated as exc:
            log.error("%s: the unit starts without its saved state until its first save", exc)
            unit = UnitState()
            unit.store = store
            store.forget()
            return unit

    def reconfigure(self, added: list[tuple[str, int]], removed: list[tuple[str, int]],
                    grown: list[tuple[str, int, int]], moved: set[str]) -> list[list]:
        """A reload: units `added` and `removed`, units `grown` to a size (CAPACITY DATA HAS CHANGED for their
        nexuses), and the targets `moved` whose set of LUNs changed (REPORTED LUNS DATA HAS CHANGED for every
        nexus of theirs, on each of their units). The attentions established, as [[target, lun, nexus, asc]…]."""
        nexuses = {target: {nexus for (t, _), unit in self.units.items() if t == target for nexus in unit.pending}
                   for target in moved}
        for key in removed:
            del self.units[key]
        for target, lun in added:
            self.units[target, lun] = self._loaded_unit(target, lun, StoreFailed)
        attentions: list[list] = []
        for target, lun, size in grown:
            unit = self.units[target, lun]
            unit.size = size
            unit.establish_all(CAPACITY_DATA_HAS_CHANGED)
            attentions += [[target, lun, nexus, CAPACITY_DATA_HAS_CHANGED] for nexus in unit.pending]
        for target in sorted(moved):
            for lun in self.luns_of(target):
                for nexus in sorted(nexuses[target]):
                    self.units[target, lun].establish(nexus, REPORTED_LUNS_DATA_HAS_CHANGED)
                    attentions.append([target, lun, nexus, REPORTED_LUNS_DATA_HAS_CHANGED])
        self._changed()
        return attentions

    def save_at_stop(self) -> None:
        """A clean stop (SIGTERM, the workers gone): the next start resumes this state (see the module doc)."""
        self._flush()
        if self.live_path is None:
            return
        path = os.path.join(os.path.dirname(self.live_path), STOPPED)
        try:
            save_state(path, self.snapshot())
        except OSError as exc:
            log.error("%s: the units' state could not be saved (%s): the next start is a power on", path, exc)

    def _resume_after_stop(self, path: str) -> None:
        """Take the state a clean stop saved in `path`, unless it is malformed (then the start is a power on)."""
        fresh = self.snapshot()                             # what the APTPL and sanitize files gave
        try:
            self._resume(load_state(path) or {})       # gone meanwhile: KeyError, a power on
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s: malformed (%r), ignored: the units start as after a power loss", path, exc)
            self.restore(fresh)
            return
        log.info("reservations: resuming the units' state saved when the target stopped")
        self._save_live()

    def _resume(self, snapshot: dict) -> None:
        """The state a clean stop saved, for the units still configured; every nexus it names was lost with the
        stop; a sanitize the stop cut short failed; a target whose LUNs changed greets every initiator anew."""
        configured: dict[str, set[int]] = {}
        saved: dict[str, set[int]] = {}
        for target, lun in self.units:
            configured.setdefault(target, set()).add(lun)
        for target, lun, *_ in snapshot["units"]:
            saved.setdefault(target, set()).add(lun)
        self.restore({**snapshot, "units": [unit for unit in snapshot["units"] if tuple(unit[:2]) in self.units],
                      "sizes": []})           # a new `serve` serves the configured sizes
        for (target, _), unit in self.units.items():
            if saved.get(target) != configured.get(target):
                unit.greeted.clear()
            unit.lose_every_nexus()
            if unit.medium.sanitize == SANITIZING:      # cut short by the stop (UnitState logged it, from its file)
                unit.medium.after_restart({"ause": unit.medium.ause})
                unit.persist_sanitize()

    def _changed(self) -> None:
        """After every change: a new version, the live file, the records written behind, the hooks (the cluster
        bus replicates it)."""
        self.version += 1
        self._save_live()
        self._write_behind()
        for hook in self._hooks:
            hook()

    def _write_behind(self) -> None:
        """A deferred store's unit whose record is not what the store holds: written, not waited for. One write at a
        time per unit, none while a reservation request's save runs (whose record is ahead); what changes
        meanwhile goes with the next. Then its sanitize record, when this coordinator's save of it did not land (it
        failed, or was held behind a takeover's OSD map): never a record adopted from a peer, which saves its own
        (written here, it could put back a failure mode the peer has ended since)."""
        if self._service is None:
            return
        for key, unit in self.units.items():
            if unit.store is None or not unit.store.deferred or unit.writing or unit.saving:
                continue
            record_due = unit.record() != unit.store.record
            if not record_due and not unit.sanitize_due:
                continue
            if unit.store.busy:             # its thread still has an earlier job (answered at its deadline)
                self._retry_write_behind()
                continue
            unit.writing = True
            written = functools.partial(self._written, key, unit)
            if record_due:
                unit.store.save(UNIT, unit.record(), written, based_on=unit.reservations.persistent_state())
            else:
                unit.save_sanitize(written)

    def _retry_write_behind(self) -> None:
        """_write_behind again in RETRY_SECONDS (one timer at a time)."""
        if not self._retry_due:
            self._retry_due = True
            assert self._service is not None
            self._service.call_later(RETRY_SECONDS, self._retried)

    def _retried(self) -> None:
        self._retry_due = False
        self._write_behind()

    def _written(self, key: tuple[str, int], unit: UnitState, result: SaveResult) -> None:
        unit.writing = False
        if self.units.get(key) is not unit:         # a reload removed it meanwhile
            return
        assert self._service is not None
        if isinstance(result, Stale):               # another coordinator's reservations: take them
            self._take(key, {UNIT: result.unit, SANITIZE: result.sanitize})
        elif isinstance(result, StoreFailed):     # again in RETRY_SECONDS (or at the next change), not at once;
            if not isinstance(result, StoreFenced):     # fenced: at the next change only (an operator unfences)
                self._retry_write_behind()
            self._run_waiting(unit)
            return
        self._run_waiting(unit)
        self._write_behind()

    def _flush(self) -> None:
        """A clean stop: what is still to be written behind is written now, for at most FLUSH_SECONDS."""
        if self._service is None:
            return
        self._write_behind()
        end = time.monotonic() + FLUSH_SECONDS
        while any(unit.writing for unit in self.units.values()) and time.monotonic() < end:
            self._service.run_once(0.05)

    def _save_live(self) -> None:
        if self.live_path is not None:
            save_state(self.live_path, self.snapshot())

    def on_change(self, hook) -> None:
        self._hooks.append(hook)

    def adopt(self, snapshot: dict) -> bool:
        """A peer node's state, if newer than ours (a higher version); True if adopted. No hooks run: it came
        from the cluster. State restored from APTPL files at start counts as version 1, so a node that starts
        with saved reservations does not take an empty peer's."""
        if snapshot.get("version", 0) <= self.version:
            return False
        self.restore(snapshot)
        for unit in self.units.values():
            if unit.store is not None and unit.store.deferred:
                unit.store.forget()             # the peer saved its state in the unit's RADOS object
            else:
                unit.persist_sanitize()
        self._save_live()
        return True

    def views_of_every_unit(self) -> list[Message]:
        """Pushes that bring a worker's copy of every unit up to this state (after adopting a peer's)."""
        return [push for target, lun in sorted(self.units) for push in self._views_of(target, lun)]

    def _views_of(self, target: str, lun: int) -> list[Message]:
        unit = self.units[target, lun]
        pushes: list[Message] = [self._change(target, lun, unit)]
        if unit.mode:
            pushes.append(ModeChange(target, lun, unit.mode[0], unit.mode[1], []))
        if unit.size is not None:
            pushes.append(LunResized(target, lun, unit.size, []))
        pushes.append(self._medium(target, lun, unit))
        return pushes

    def unit(self, target: str, lun: int) -> UnitState:
        unit = self.units.get((target, lun))
        if unit is None:
            raise KeyError(f"no logical unit {lun!r} in target {target!r}")
        return unit

    def luns_of(self, target: str) -> list[int]:
        return sorted(lun for t, lun in self.units if t == target)

    # -- handlers -------------------------------------------------------------------------------------------
    def request(self, message: ReservationRequest, origin: str) -> Reply | Deferred:
        unit = self.unit(message.target, message.lun)
        if unit.store is None or not unit.store.deferred:
            return self._apply(unit, message)
        return self._wait(unit, message, origin)

    def _wait(self, unit: UnitState, message: ReservationRequest | MediumRequest, origin: str) -> Deferred:
        """A deferred store's request: answered in its turn (`_run_waiting`)."""
        if self._defer is None:
            raise RuntimeError("the unit authority is not attached to the coordinator's loop")
        deferred = self._defer()
        unit.waiting.append(Waiting(message, origin, deferred))
        self._run_waiting(unit)
        return deferred

    def _apply(self, unit: UnitState, message: ReservationRequest) -> Reply:
        outcome = run_request(unit.reservations, message.kind, message.nexus, message.cdb, message.parameters)
        if not outcome.changed:
            return Reply(ReservationAnswer(outcome.to_dict(), None))
        for other, asc_ascq in outcome.attentions:
            unit.establish(other, asc_ascq)
        unit.persist()
        self._changed()
        change = self._change(message.target, message.lun, unit, outcome)
        return Reply(ReservationAnswer(outcome.to_dict(), change), [change])

    def _run_waiting(self, unit: UnitState) -> None:
        """A deferred store's unit: its requests in order (reservation requests, sanitize starts). One whose answer
        promises a change the store must hold (a change of the registrations or reservation; a sanitize begun, whose
        record must be there before its worker overwrites anything) runs on a copy first; the record that copy gives
        is saved, and only then is the request applied (or, if the save failed, answered with a sense and not
        applied: `_saved`); the requests behind it wait until then."""
        while unit.waiting and not unit.saving:
            waiting = unit.waiting[0]
            deferred = waiting.deferred
            save = self._to_save(unit, waiting)
            # its worker answers the command itself at its deadline: one that waited past it (or would pass it
            # while saving) is not applied behind that answer's back; nor is a sanitize whose worker is gone
            if deferred.time_left() < (unit.store.save_deadline if save else 0) or save and waiting.gone:
                unit.waiting.popleft()
                if waiting.gone:
                    deferred.drop("gone", "its worker died while it waited")
                else:
                    deferred.drop("expired", "its deadline passed, or would during its save, while it waited")
                continue
            if save is not None:
                unit.saving = True
                key, value, based_on = save
                unit.store.save(key, value, lambda result: self._saved(unit, result), **based_on)
                return
            unit.waiting.popleft()
            deferred.resolve(self._answer(unit, waiting))

    def _to_save(self, unit: UnitState, waiting: Waiting) -> tuple[str, dict | None, dict] | None:
        """What the store must hold before a waiting request is applied, found on a copy of the unit's state: (key,
        value, the save's keywords), or None (nothing: it is answered at once)."""
        message = waiting.message
        if isinstance(message, MediumRequest):
            trial = MediumState.restored(unit.medium.snapshot())
            if trial.request(message.nexus, message.action, waiting.origin) is not None:
                return None
            return SANITIZE, trial.sanitize_record(), {}
        reservations = Reservations()
        reservations.restore(unit.reservations.snapshot())
        outcome = run_request(reservations, message.kind, message.nexus, message.cdb, message.parameters)
        if not outcome.changed or reservations.persistent_state() == unit.reservations.persistent_state():
            return None
        return (UNIT, unit.record(reservations, outcome.attentions),
                {"based_on": unit.reservations.persistent_state()})

    def _answer(self, unit: UnitState, waiting: Waiting, saved: bool = False) -> Reply:
        """A waiting request applied (`saved`: what it promises is in the store)."""
        message = waiting.message
        if isinstance(message, ReservationRequest):
            return self._apply(unit, message)
        reply = self._apply_medium(unit, message, waiting.origin, saved)
        if waiting.gone and unit.medium.interrupted(waiting.origin):      # its worker died while it was saved
            log.error("the worker starting the sanitize of LUN %d of %s is gone: the unit is in sanitize failure "
                      "mode", message.lun, message.target)
            unit.persist_sanitize()
            self._changed()
            reply = Reply(reply.body, [self._medium(message.target, message.lun, unit)])
        return reply

    def _saved(self, unit: UnitState, result: SaveResult) -> None:
        unit.saving = False
        waiting = unit.waiting.popleft()
        message, deferred = waiting.message, waiting.deferred
        if result is None:
            deferred.resolve(self._answer(unit, waiting, saved=True))
        else:
            change = None
            if isinstance(result, Stale):               # another coordinator's state: take it, fail the command
                self._take((message.target, message.lun), {UNIT: result.unit, SANITIZE: result.sanitize})
                change = self._change(message.target, message.lun, unit)
            sense = unsaved_sense(result)
            if isinstance(message, MediumRequest):      # not begun: the worker's own view of it goes with the answer
                medium = self._medium(message.target, message.lun, unit)
                deferred.resolve(Reply(MediumAnswer(**medium.to_body(), refused=list(sense))))
            else:
                outcome = Outcome(CHECK_CONDITION, build_sense(*sense))
                deferred.resolve(Reply(ReservationAnswer(outcome.to_dict(), change), [change] if change else []))
        self._run_waiting(unit)
        self._write_behind()

    @staticmethod
    def _change(target: str, lun: int, unit: UnitState, outcome: Outcome | None = None) -> ReservationChange:
        return ReservationChange(target, lun, unit.reservations.view(),
                                 [list(a) for a in outcome.attentions] if outcome else [],
                                 list(outcome.aborts) if outcome else [])

    @staticmethod
    def _medium(target: str, lun: int, unit: UnitState) -> MediumChange:
        return MediumChange(target, lun, unit.medium.loaded, unit.medium.sanitize)

    def reset(self, message: UnitReset, origin: str) -> Reply:
        views = []
        for lun in message.luns:
            unit = self.unit(message.target, lun)
            unit.reservations.reset()
            unit.medium.reset()
            unit.establish_all(message.asc)
            views.append([lun, unit.reservations.view()])
        self._changed()
        change = dataclasses.replace(message, views=views)
        return Reply(change, [change])

    def stored_taken(self, message: StoredStateTaken, origin: str) -> Reply:
        """The unit took the state another coordinator saved (`_take`): every worker gets it."""
        return Reply(Nothing(), self._views_of(message.target, message.lun))

    def clear(self, message: ClearTaskSet, origin: str) -> Reply:
        self.unit(message.target, message.lun)
        return Reply(message, [message])

    def attach(self, message: AttachNexus, origin: str) -> Reply | Deferred:
        """A deferred store's units of the target are read first: another coordinator (one that no cluster bus links
        to this one) may have served them since; the nexus then gets what that one left (`_take`)."""
        keys = [(message.target, lun) for lun in self.luns_of(message.target)
                if (store := self.units[message.target, lun].store) is not None and store.deferred]
        if not keys or self._defer is None:
            return self._attach(message, origin)
        deferred = self._defer()
        left = set(keys)
        attaching = (origin, message.target, message.nexus)
        self.attaching[attaching] = False

        def refreshed(key: tuple[str, int], result: object) -> None:
            left.discard(key)
            if isinstance(result, dict) and self.units.get(key) is not None:
                log.warning("%s: written by another coordinator since this one last did: its state is taken",
                            self.units[key].store.where)
                self._take(key, result)
            if left:
                return
            if self.attaching.pop(attaching, False):        # the nexus (or its worker) went meanwhile
                deferred.resolve(Reply(NexusAttentions([], [])))
            else:                           # (an attach has no deadline: its reply is taken late too)
                deferred.resolve(self._attach(message, origin))

        for key in keys:
            self.units[key].store.refresh(lambda result, key=key: refreshed(key, result))
        return deferred

    def _take(self, key: tuple[str, int], stored: dict) -> None:
        """Another coordinator wrote the unit's object since this one last did: what it holds (`stored`: the unit
        record under UNIT, the sanitize record under SANITIZE, each only if new) is taken, and pushed (the medium
        too: a sanitize that failed or runs there puts the unit in sanitize failure mode, `take_sanitize`)."""
        assert self._service is not None
        unit = self.units[key]
        if UNIT in stored:
            unit.take_record(stored[UNIT])
        if SANITIZE in stored:
            unit.take_sanitize(stored[SANITIZE], "a sanitize another coordinator ran did not finish here")
        self._changed()
        self._service.submit(StoredStateTaken(*key))

    def _attach(self, message: AttachNexus, origin: str) -> Reply:
        target, nexus = message.target, message.nexus
        self.attached.setdefault(origin, set()).add((target, nexus))
        name = nexus.split(",", 1)[0]
        attentions, views = [], []
        for lun in self.luns_of(target):
            unit = self.units[(target, lun)]
            queue = unit.pending.setdefault(nexus, [])
            if name not in unit.greeted and POWER_ON_RESET not in queue:
                queue.insert(0, POWER_ON_RESET)
            unit.greeted.add(name)
            attentions.append([lun, list(queue)])
            views.append([lun, unit.reservations.view()])
        self._changed()
        return Reply(NexusAttentions(attentions, views))

    def mode_select(self, message: ModeSelect, origin: str) -> Reply:
        unit = self.unit(message.target, message.lun)
        unit.mode = [message.wce, message.swp]
        others = [nexus for nexus in unit.pending if nexus != message.nexus]
        for nexus in others:
            unit.establish(nexus, MODE_PARAMETERS_CHANGED)
        self._changed()
        attentions: list[list] = [[nexus, MODE_PARAMETERS_CHANGED] for nexus in others]
        change = ModeChange(message.target, message.lun, unit.mode[0], unit.mode[1], attentions)
        return Reply(change, [change])

    def resize(self, message: ResizeLun, origin: str) -> Reply:
        unit = self.unit(message.target, message.lun)
        previous = message.configured if unit.size is None else unit.size
        if message.size < previous:
            return Reply(ResizeAnswer(previous, previous, f"LUN {message.lun} of {message.target} is {previous} "
                                      f"bytes: shrinking it to {message.size} would drop the data beyond the new end"))
        if message.size == previous:
            return Reply(ResizeAnswer(previous, previous, None))
        unit.size = message.size
        unit.establish_all(CAPACITY_DATA_HAS_CHANGED)
        self._changed()
        log.info("LUN %d of %s grew from %d to %d bytes", message.lun, message.target, previous, message.size)
        change = LunResized(message.target, message.lun, message.size,
                            [[nexus, CAPACITY_DATA_HAS_CHANGED] for nexus in unit.pending])
        return Reply(ResizeAnswer(previous, message.size, None), [change])

    def medium_request(self, message: MediumRequest, origin: str) -> Reply | Deferred:
        """A deferred store's sanitize start waits its turn with the unit's reservation requests, and is answered
        only once its record is saved (`_run_waiting`): a node that serves the unit after this one died then finds
        it failed, never a medium half overwritten as if whole. A file store saves it before the answer anyway."""
        unit = self.unit(message.target, message.lun)
        if message.action not in ACTIONS:
            raise ValueError(f"unknown medium action {message.action!r}")
        if message.action in SANITIZE_STARTS and unit.store is not None and unit.store.deferred:
            return self._wait(unit, message, origin)
        return self._apply_medium(unit, message, origin)

    def _apply_medium(self, unit: UnitState, message: MediumRequest, origin: str, saved: bool = False) -> Reply:
        action = message.action
        refused = unit.medium.request(message.nexus, action, origin)
        if refused is None and action not in (PREVENT, ALLOW, LOAD, EJECT):
            unit.persist_sanitize(saved)
        self._changed()
        change = self._medium(message.target, message.lun, unit)
        moved = refused is None and action in MOVES
        return Reply(MediumAnswer(**change.to_body(), refused=refused and list(refused)), [change] if moved else [])

    def consumed(self, message: AttentionReported, origin: str) -> Reply:
        self.unit(message.target, message.lun).consumed(message.nexus, message.asc)
        self._changed()
        return Reply(Nothing())

    def nexus_lost(self, message: NexusLost, origin: str) -> Reply:
        target, nexus = message.target, message.nexus
        self.attached.get(origin, set()).discard((target, nexus))
        if (origin, target, nexus) in self.attaching:
            self.attaching[origin, target, nexus] = True
        changes = []
        for lun in self.luns_of(target):
            unit = self.units[(target, lun)]
            if unit.nexus_lost(nexus):
                changes.append(self._change(target, lun, unit))
        self._changed()
        return Reply(NexusLostChanges(changes), changes)

    def states(self, message: FetchUnitStates, origin: str) -> Reply:
        changes: list[Message] = [self._change(target, lun, self.units[(target, lun)])
                                  for target, lun in sorted(self.unpushed)]
        changes += [self._medium(target, lun, self.units[(target, lun)]) for target, lun in sorted(self.interrupted)]
        self.interrupted.clear()
        self.unpushed.clear()
        units = sorted(self.units.items())
        return Reply(UnitStates([[target, lun, unit.reservations.view()] for (target, lun), unit in units],
                                [[target, lun, *unit.mode] for (target, lun), unit in units if unit.mode],
                                [[target, lun, unit.medium.loaded, unit.medium.sanitize]
                                 for (target, lun), unit in units],
                                [[target, lun, unit.size] for (target, lun), unit in units if unit.size is not None]),
                     changes)

    def worker_gone(self, origin: str) -> None:
        """A dead worker's nexuses are lost: their SPC-2 reservations go, and the sanitize it ran fails (pushed at
        the next FetchUnitStates)."""
        for target, nexus in self.attached.pop(origin, set()):
            for lun in self.luns_of(target):
                if self.units[(target, lun)].nexus_lost(nexus):
                    self.unpushed.add((target, lun))
        for attaching in self.attaching:
            if attaching[0] == origin:
                self.attaching[attaching] = True
        for key, unit in self.units.items():
            for waiting in unit.waiting:
                if waiting.origin == origin and isinstance(waiting.message, MediumRequest):
                    waiting.gone = True         # a sanitize start: not begun for a worker that is gone
            if unit.medium.interrupted(origin):
                log.error("the worker sanitizing LUN %d of %s is gone: the unit is in sanitize failure mode", key[1],
                          key[0])
                unit.persist_sanitize()
                self.interrupted.add(key)
        self._changed()

    def interrupt_sanitizes(self, workers: set[str]) -> bool:
        """After a takeover: a sanitize that none of `workers` (this node's) runs was the dead peer's, and fails
        (sanitize failure mode) instead of leaving the unit NOT READY for good. True if any did."""
        interrupted = False
        for (target, lun), unit in self.units.items():
            medium = unit.medium
            if medium.sanitize == SANITIZING and medium.sanitizer not in workers:
                log.error("the sanitize of LUN %d of %s ran on a node taken over: sanitize failure mode", lun, target)
                interrupted = medium.interrupted(medium.sanitizer or "") or interrupted
                unit.persist_sanitize()
        if interrupted:
            self._changed()
        return interrupted

    # -- replication ----------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"units": [[target, lun, unit.reservations.snapshot(),
                           {nexus: list(queue) for nexus, queue in unit.pending.items()}, unit.mode,
                           unit.medium.snapshot(), sorted(unit.greeted)]
                          for (target, lun), unit in sorted(self.units.items())],
                "sizes": [[target, lun, unit.size] for (target, lun), unit in sorted(self.units.items())
                          if unit.size is not None],
                "version": self.version}

    def restore(self, snapshot: dict) -> None:
        greeted = snapshot.get("greeted", {})         # by target: a snapshot of an older ringtgt
        for target, lun, reservations, pending, mode, medium, *names in snapshot["units"]:
            unit = self.units.setdefault((target, lun), UnitState())
            unit.reservations.restore(reservations)
            unit.pending = {nexus: list(queue) for nexus, queue in pending.items()}
            unit.mode = mode
            unit.medium = MediumState.restored(medium)
            # the store is known to hold this failure mode's record if the last read of it had that record (a
            # resume from the live or stopped file, or a peer's state the store showed too); else see `take_sanitize`
            stored = getattr(unit.store, "sanitize", None)
            unit.sanitize_stored = unit.medium.sanitize == SANITIZE_FAILURE and stored == unit.medium.sanitize_record()
            unit.sanitize_due = False                   # a peer's state is saved by the peer
            unit.greeted = set(names[0] if names else greeted.get(target, []))
        sizes = {(target, lun): size for target, lun, size in snapshot.get("sizes", [])}
        for key, unit in self.units.items():
            unit.size = sizes.get(key)
        self.version = snapshot.get("version", 0)


def register_unit_handlers(service: CoordinatorService, authority: UnitAuthority) -> None:
    service.register(ReservationRequest, authority.request)
    service.register(UnitReset, authority.reset)
    service.register(ClearTaskSet, authority.clear)
    service.register(StoredStateTaken, authority.stored_taken)
    service.register(AttachNexus, authority.attach)
    service.register(AttentionReported, authority.consumed)
    service.register(ModeSelect, authority.mode_select)
    service.register(MediumRequest, authority.medium_request)
    service.register(ResizeLun, authority.resize)
    service.register(NexusLost, authority.nexus_lost)
    service.register(FetchUnitStates, authority.states)
    service.on_worker_gone(authority.worker_gone)
