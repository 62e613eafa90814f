"""The worker's half of the units' shared state, for one target: the ScsiTarget's dealings with the coordinator,
which is the authority for reservations, unit attentions, mode and medium (coordinator/unit_service.py; in unit
tests coordinator/in_process.py runs the same handlers).

Sessions attach their I_T nexus (`attach`/`detach`) with an object offering `abort_lun(lun, done)` (abort its
tasks on the unit, `done()` once those in flight have stopped; True if it had any) and `close()`, so that PREEMPT
AND ABORT, CLEAR TASK SET and resets can reach another nexus's tasks, and nexus loss can drop its SPC-2
reservation. Resets and CLEAR TASK SET go through the coordinator and come back to every worker (`apply_reset`,
`apply_clear`, pushed through target/unit_sync.py), and `done` runs once every worker has applied them.

Every request to the coordinator has the client's deadline (coordinator/client.py): past it a command ends BUSY and
a task management function is answered FUNCTION REJECTED (`done(rejected=True)`: the initiator escalates, to a
target reset, then a new session), and the coordinator drops the request unapplied. A request the coordinator
refuses or fails ends the command HARDWARE ERROR and rejects the function likewise (`failed_command`; nothing is
applied here that the coordinator did not apply). A reply that still comes (applied just before the deadline) is
applied here too (`late`), so the workers agree. A nexus that goes (`detach`) withdraws its commands still queued
at the coordinator.
"""
from __future__ import annotations

from typing import Any, Callable

import logging

from coordinator.messages import (AttachNexus, AttentionReported, ClearTaskSet, Failure, LunResized, MediumAnswer,
                                  MediumChange, MediumRequest, Message, ModeChange, ModeSelect, NexusAttentions,
                                  NexusLost, NexusLostChanges, ResizeAnswer, ResizeLun, UnitReset)
from coordinator.unit_state.medium import SANITIZE_FAILED, SANITIZE_STARTS, SANITIZING
from coordinator.unit_state.sense import CAPACITY_DATA_HAS_CHANGED

from .lun import LogicalUnit
from .reservations import ConflictView
from .sense import BUS_DEVICE_RESET, COMMANDS_CLEARED_BY_ANOTHER_INITIATOR, POWER_ON_OCCURRED, check_condition
from .shared_reservations import SharedReservations, failed_command
from .task import GOOD, Barrier

log = logging.getLogger(f"ringtgt.{__name__}")

ATTACH_WAIT = 5.0               # seconds a new session's commands wait for the coordinator's AttachNexus answer


class SharedUnits:
    """ScsiTarget's shared-state half (a base class: it uses the target's luns, nexuses, coordinator, iqn and
    attaching, and `execute` for the commands it held)."""

    __slots__ = ()
    # what it uses of the target (ScsiTarget's slots and method)
    luns: dict[int, LogicalUnit]
    nexuses: dict[str, Any]
    coordinator: Any                    # the worker's CoordinatorClient, or coordinator/in_process.py's
    iqn: str
    attaching: dict[str, list]
    copy_results: Any
    call_later: Callable[[float, Callable[[], None]], None] | None
    execute: Callable[[Any], None]

    def share_units(self) -> None:
        """Every unit's reservations and unit attentions through the coordinator."""
        for lun_id, unit in self.luns.items():
            self.share_unit(lun_id, unit)

    def share_unit(self, lun_id: int, unit: LogicalUnit) -> None:
        """One unit's reservations and unit attentions through the coordinator (a unit a reload adds, too)."""
        unit.reservations = SharedReservations(self.coordinator, self.iqn, lun_id, self._change_applier(lun_id))
        unit.attentions.on_take = self._consumed_reporter(lun_id)

    # -- sessions ---------------------------------------------------------------------------------------------
    def attach(self, nexus: str, session) -> None:
        """The session's first commands wait for what the coordinator says is pending for the nexus, at most
        ATTACH_WAIT seconds, and not at all while the coordinator is known not to answer: availability first,
        they then run without (the answer is applied when it comes)."""
        self.nexuses[nexus] = session
        if self.coordinator.responsive:
            self.attaching[nexus] = []

        def attached(reply: NexusAttentions) -> None:
            if nexus in self.nexuses:
                for lun, queue in reply.attentions:
                    unit = self.luns.get(lun)
                    if unit is not None:
                        unit.attentions.replace(nexus, queue)
                self.apply_views(reply.views)
            self._release_held(nexus)

        self.coordinator.request(AttachNexus(self.iqn, nexus), attached, lambda failure: self._release_held(nexus),
                                 late=attached, timeout=ATTACH_WAIT)

    def _release_held(self, nexus: str) -> None:
        """The coordinator answered the attach (or failed to: they run without): the first commands run."""
        for task in self.attaching.pop(nexus, []):
            self.execute(task)

    def detach(self, nexus: str, session) -> None:
        """I_T nexus loss: forget the session and release its SPC-2 reservations."""
        if self.nexuses.get(nexus) is not session:
            return
        del self.nexuses[nexus]
        self.attaching.pop(nexus, None)     # its first commands, still held: aborted with the nexus
        self.copy_results.forget(nexus)
        for unit in self.luns.values():
            unit.attentions.forget(nexus)
        self.coordinator.withdraw(nexus)
        self.coordinator.request(NexusLost(self.iqn, nexus), self._nexus_gone, _ignored, late=self._nexus_gone)

    def _nexus_gone(self, reply: NexusLostChanges) -> None:
        for change in reply.changes:
            unit = self.luns.get(change.lun)
            if unit is not None:
                unit.reservations.apply(change, _nothing)

    def _consumed_reporter(self, lun: int):
        def consumed(nexus: str, asc_ascq: int) -> None:
            self.coordinator.notify(AttentionReported(self.iqn, lun, nexus, asc_ascq))
        return consumed

    # -- reservation changes from the coordinator -------------------------------------------------------------
    def _change_applier(self, lun: int):
        def apply(view, attentions, aborts, done) -> None:
            unit = self.luns[lun]
            unit.reservations.view = view
            for nexus, asc_ascq in attentions:
                if nexus in self.nexuses:
                    unit.attentions.establish_for(nexus, asc_ascq)
            stopped = Barrier(done)
            for nexus in aborts:
                session = self.nexuses.get(nexus)
                if session is not None:
                    session.abort_lun(lun, stopped.hold())
            stopped.release()
        return apply

    # -- mode parameters shared by every worker -----------------------------------------------------------------
    def change_mode(self, unit: LogicalUnit, task, write_cache: bool, software_write_protect: bool) -> bytes | None:
        """MODE SELECT changed WCE or SWP: every worker's copy of the unit changes (through the coordinator, which
        pushes ModeChange), every other nexus gets MODE PARAMETERS CHANGED. The task finishes when it answers."""

        def decided(reply: ModeChange) -> None:
            self.apply_mode(reply)
            task.finish(GOOD)

        self._decide_remotely(task, ModeSelect(self.iqn, task.lun, task.nexus, write_cache, software_write_protect),
                              decided, self.apply_mode)
        return None

    def _decide_remotely(self, task, request: Message, decided: Callable, late: Callable,
                         undo: Callable[[], None] = lambda: None) -> None:
        """Ask the coordinator to decide for `task`; `decided(reply)` finishes it, unless the request failed
        (`undo()`, then `failed_command`; `late(reply)` if the coordinator applied it after all)."""
        task.remote = True

        def done(reply: Message) -> None:
            task.remote = False
            decided(reply)

        def failed(failure: Failure) -> None:
            task.remote = False
            undo()
            outcome = failed_command(failure)
            task.finish(outcome.status, None, outcome.sense)

        self.coordinator.request(request, done, failed, owner=task.nexus, late=late)

    def apply_mode(self, change: ModeChange) -> None:
        """A mode change made through any worker."""
        unit = self.luns.get(change.lun)
        if unit is None:
            return
        unit.set_mode(change.wce, change.swp)
        for nexus, asc_ascq in change.attentions:
            if nexus in self.nexuses:
                unit.attentions.establish_for(nexus, asc_ascq)

    # -- the medium (removable, sanitized) shared by every worker ----------------------------------------------
    def medium_request(self, unit: LogicalUnit, task, action: str, then: Callable[[], None] | None = None):
        """START STOP UNIT, PREVENT ALLOW, or the start of a SANITIZE or EXIT FAILURE MODE (medium.py), decided
        by the coordinator, which pushes what moves to every worker ("medium.change"). Once applied, `then()`
        runs, or the task ends GOOD; a refusal ends the task. A sanitize's start is this worker's at once (commands
        after it here wait for no round trip), undone if the coordinator does not answer it (a refusal's answer
        carries the unit's state)."""
        before = unit.sanitize
        if action in SANITIZE_STARTS:
            unit.set_medium(unit.medium_loaded, SANITIZING)

        def undo() -> None:
            if action in SANITIZE_STARTS and unit.sanitize == SANITIZING:
                unit.set_medium(unit.medium_loaded, before)

        def decided(reply: MediumAnswer) -> None:
            self.apply_medium(reply)
            if reply.refused is not None:
                check_condition(task, *reply.refused)
            elif then is None:
                task.finish(GOOD)
            else:
                then()

        def late(reply: MediumAnswer) -> None:
            self.apply_medium(reply)
            if action in SANITIZE_STARTS and reply.refused is None:
                self.medium_report(task.lun, SANITIZE_FAILED, _nothing)     # begun for a task that ended BUSY

        self._decide_remotely(task, MediumRequest(self.iqn, task.lun, task.nexus, action), decided, late, undo)
        return None

    def medium_report(self, lun: int, action: str, then: Callable[[], None]) -> None:
        """A sanitize ended (SANITIZED or SANITIZE_FAILED): every worker learns it, then `then()` runs."""

        def reported(reply: MediumAnswer) -> None:
            self.apply_medium(reply)
            then()

        self.coordinator.request(MediumRequest(self.iqn, lun, "", action), reported, lambda failure: then(),
                                 late=self.apply_medium)

    def apply_medium(self, change: MediumChange | MediumAnswer) -> None:
        """The medium of a unit changed through any worker."""
        unit = self.luns.get(change.lun)
        if unit is not None:
            unit.set_medium(change.loaded, change.sanitize)

    # -- the size, grown by `ringtgt resize` ---------------------------------------------------------------------
    def apply_resize(self, change: LunResized) -> None:
        """The unit grew (pushed between commands): later commands see the new size, and the nexuses named learn
        of it (CAPACITY DATA HAS CHANGED)."""
        unit = self.luns.get(change.lun)
        if unit is None:
            return
        unit.resize(change.size)
        for nexus, asc_ascq in change.attentions:
            if nexus in self.nexuses:
                unit.attentions.establish_for(nexus, asc_ascq)

    def store_resized(self, lun: int, size: int) -> None:
        """The unit's store changed size underneath (`rbd resize`: every worker's image watch sees it): the
        coordinator decides as for `ringtgt resize` (a shrink is refused); a growth it accepts from this worker
        is pushed to the others and applied here from the answer, every nexus of this worker told."""
        unit = self.luns.get(lun)
        if unit is None or size == unit.blocks * unit.block_size:
            return

        def answered(answer: ResizeAnswer) -> None:
            if answer.refused is not None:
                log.error("%s LUN %d: its store is now %d bytes: %s", self.iqn, lun, size, answer.refused)
            elif answer.size > answer.previous:
                self.apply_resize(LunResized(self.iqn, lun, answer.size,
                                             [[nexus, CAPACITY_DATA_HAS_CHANGED] for nexus in self.nexuses]))

        def failed(failure: Failure) -> None:
            log.error("%s LUN %d: its store grew to %d bytes, the coordinator did not answer: %s", self.iqn, lun,
                      size, failure)
        self.coordinator.request(ResizeLun(self.iqn, lun, size, unit.blocks * unit.block_size), answered, failed)

    def apply_views(self, views) -> None:
        for lun, view in views:
            unit = self.luns.get(lun)
            if unit is not None:
                unit.reservations.view = ConflictView.from_dict(view)

    # -- task management ----------------------------------------------------------------------------------------
    def reset_lun(self, lun: int, nexus: str, done: Callable[[], None]) -> None:
        """LOGICAL UNIT RESET (SAM-5 §7.7): every task on the unit is aborted, every I_T nexus, the issuing one
        included (libiscsi's MultipathIO.Reset expects it on every path), learns of it through a unit
        attention; an SPC-2 reservation is released, persistent reservations stay."""
        self._reset([lun], nexus, BUS_DEVICE_RESET, False, done)

    def reset_target(self, nexus: str, cold: bool, done: Callable[[], None]) -> None:
        """TARGET WARM/COLD RESET: a LUN reset of every unit; a cold reset also ends every other session."""
        self._reset(sorted(self.luns), nexus, POWER_ON_OCCURRED if cold else BUS_DEVICE_RESET, cold, done)

    def _reset(self, luns: list[int], nexus: str, asc_ascq: int, cold: bool, done: Callable[..., None]) -> None:
        self.coordinator.request(UnitReset(self.iqn, luns, nexus, asc_ascq, cold),
                                 lambda reply: self.apply_reset(reply, done), lambda failure: done(rejected=True),
                                 owner=nexus,
                                 late=lambda reply: self.apply_reset(reply, _nothing))

    def apply_reset(self, reset: UnitReset, done: Callable[[], None]) -> None:
        """A reset on this worker: `done()` once the tasks it aborted here have stopped."""
        nexus = reset.nexus
        stopped = Barrier(done)
        for lun in reset.luns:
            unit = self.luns.get(lun)
            if unit is None:
                continue
            self._abort_others(lun, nexus, stopped)
            unit.establish_ua(reset.asc)
        self.apply_views(reset.views)
        if reset.cold:
            for other, session in list(self.nexuses.items()):
                if other != nexus:
                    session.close()
        stopped.release()

    def clear_task_set(self, lun: int, nexus: str, done: Callable[..., None]) -> None:
        """CLEAR TASK SET: the other nexuses' tasks go too, and they learn of it (SAM-5 §7.4, TAS=0)."""
        self.coordinator.request(ClearTaskSet(self.iqn, lun, nexus), lambda reply: self.apply_clear(reply, done),
                                 lambda failure: done(rejected=True), owner=nexus,
                                 late=lambda reply: self.apply_clear(reply, _nothing))

    def apply_clear(self, clear: ClearTaskSet, done: Callable[[], None]) -> None:
        stopped = Barrier(done)
        unit = self.luns.get(clear.lun)
        if unit is not None:
            for other in self._abort_others(clear.lun, clear.nexus, stopped):
                unit.attentions.establish_for(other, COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)
        stopped.release()

    def _abort_others(self, lun: int, nexus: str, stopped: Barrier) -> list[str]:
        """Abort every other nexus's tasks on `lun`; the nexuses that had some."""
        return [other for other, session in list(self.nexuses.items())
                if other != nexus and session.abort_lun(lun, stopped.hold())]


def _nothing() -> None:
    pass


def _ignored(failure: Failure) -> None:
    """A nexus loss the coordinator did not take (logged by the client): its next restart or FetchUnitStates
    brings the units' state."""
