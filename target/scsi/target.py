"""The SCSI target of one iSCSI target name: the 256-entry opcode table and the checks made before dispatch.

Order of checks (SPC-4 5.14, SAM-5 5.3): logical unit exists (INQUIRY, REPORT LUNS and REQUEST SENSE are
served for any LUN), pending unit attention (not reported to INQUIRY, REPORT LUNS, REQUEST SENSE),
reservation conflict (the unit's cached `ConflictView`, see reservations.py), supported opcode, CDB length and
CONTROL byte, then what the unit refuses in its state (no medium, write protection); then the handler.
Nothing raised by a handler escapes: `ScsiError` becomes CHECK CONDITION with its sense, anything else is
logged and answered HARDWARE ERROR / INTERNAL TARGET FAILURE.
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple

from coordinator.messages import (AttachNexus, AttentionReported, ClearTaskSet, Failure, MediumAnswer, MediumChange,
                                  MediumRequest, Message, ModeChange, ModeSelect, NexusAttentions, NexusLost,
                                  NexusLostChanges, UnitReset)
from coordinator.unit_state.medium import SANITIZE, SANITIZE_AUSE, SANITIZE_FAILED

from . import cdb as C
from . import data_out as D
from . import compare_and_write, mode, opcodes, pr, provisioning, sanitize, sbc, spc, xcopy
from .reservations import ConflictView
from .lun import BUSY, MAX_TRANSFER_BYTES, MEDIUM, WRITES, LogicalUnit
from .sense import (BUS_DEVICE_RESET, COMMANDS_CLEARED_BY_ANOTHER_INITIATOR, HARDWARE_ERROR,
                    ILLEGAL_REQUEST, INTERNAL_TARGET_FAILURE, INVALID_COMMAND_OPERATION_CODE, INVALID_FIELD_IN_CDB,
                    LOGICAL_UNIT_NOT_SUPPORTED, POWER_ON_OCCURRED, UNIT_ATTENTION, ScsiError, check_condition, fail,
                    invalid_cdb)
from .shared_reservations import SharedReservations, failed_command
from .task import GOOD, RESERVATION_CONFLICT, Barrier

log = logging.getLogger(__name__)

# Op flags
ANY_LUN = 0x01          # served for LUNs that do not exist
KEEPS_UA = 0x02         # neither reports nor clears a pending unit attention
# WRITES and MEDIUM (lun.py): refused while the unit is write-protected / its removable medium is ejected;
# BUSY (lun.py), refused while a sanitize runs, is added to every command but those served for any LUN and
# MAINTENANCE IN (SBC-4 4.11.2 lists INQUIRY, REPORT LUNS and REQUEST SENSE among those still served)

_CONTROL_UNSUPPORTED = 0x07     # NACA, obsolete FLAG, LINK
_MAINTENANCE_IN = 0xA3
ATTACH_WAIT = 5.0               # seconds a new session's commands wait for the coordinator's ua.attach answer


class Op(NamedTuple):
    name: str
    handler: Callable | None    # (target, unit, task) -> data-in bytes, or None when it finishes later
    length: int                 # CDB length
    flags: int
    data_out: Callable | None   # (cdb, block size) -> bytes of data-out the CDB asks for; None: carries none


UNSUPPORTED = Op("unsupported", None, 0, 0, None)


def _ops() -> list[Op]:
    table = [UNSUPPORTED] * 256
    for opcode, name, handler, flags, data_out in (
        (0x00, "TEST UNIT READY", spc.unit_ready, MEDIUM, None),
        (0x03, "REQUEST SENSE", spc.request_sense, ANY_LUN | KEEPS_UA, None),
        (0x08, "READ(6)", sbc.make_read(C.LBA6), MEDIUM, None),
        (0x0A, "WRITE(6)", sbc.make_write(C.LBA6), WRITES | MEDIUM, D.blocks(C.LBA6)),
        (0x12, "INQUIRY", spc.inquiry, ANY_LUN | KEEPS_UA, None),
        (0x15, "MODE SELECT(6)", mode.mode_select6, 0, D.field(4, 1)),
        (0x16, "RESERVE(6)", pr.reserve, 0, None),
        (0x17, "RELEASE(6)", pr.release, 0, None),
        (0x1A, "MODE SENSE(6)", mode.mode_sense6, 0, None),
        (0x1B, "START STOP UNIT", spc.start_stop_unit, 0, None),
        (0x1E, "PREVENT ALLOW MEDIUM REMOVAL", spc.prevent_allow_medium_removal, 0, None),
        (0x25, "READ CAPACITY(10)", sbc.read_capacity10, MEDIUM, None),
        (0x28, "READ(10)", sbc.make_read(C.LBA10), MEDIUM, None),
        (0x2A, "WRITE(10)", sbc.make_write(C.LBA10), WRITES | MEDIUM, D.blocks(C.LBA10)),
        (0x2E, "WRITE AND VERIFY(10)", sbc.make_write_and_verify(C.LBA10), WRITES | MEDIUM, D.blocks(C.LBA10)),
        (0x2F, "VERIFY(10)", sbc.make_verify(C.LBA10), MEDIUM, D.verify(C.LBA10)),
        (0x34, "PRE-FETCH(10)", sbc.make_prefetch(C.LBA10), MEDIUM, None),
        (0x35, "SYNCHRONIZE CACHE(10)", sbc.make_synchronize_cache(C.LBA10), MEDIUM, None),
        (0x37, "READ DEFECT DATA(10)", sbc.read_defect_data10, 0, None),
        (0x41, "WRITE SAME(10)", provisioning.make_write_same(C.LBA10), WRITES | MEDIUM, D.one_block),
        (0x42, "UNMAP", provisioning.unmap, WRITES | MEDIUM, D.field(7, 2)),
        (0x48, "SANITIZE", sanitize.sanitize, WRITES, D.field(7, 2)),
        (0x55, "MODE SELECT(10)", mode.mode_select10, 0, D.field(7, 2)),
        (0x56, "RESERVE(10)", pr.reserve, 0, None),
        (0x57, "RELEASE(10)", pr.release, 0, None),
        (0x5A, "MODE SENSE(10)", mode.mode_sense10, 0, None),
        (0x5E, "PERSISTENT RESERVE IN", pr.persistent_reserve_in, 0, None),
        (0x5F, "PERSISTENT RESERVE OUT", pr.persistent_reserve_out, 0, D.field(5, 4)),
        (0x83, "EXTENDED COPY", xcopy.extended_copy, MEDIUM, D.field(10, 4)),
        (0x84, "RECEIVE COPY RESULTS", xcopy.receive_copy_results, 0, None),
        (0x88, "READ(16)", sbc.make_read(C.LBA16), MEDIUM, None),
        (0x89, "COMPARE AND WRITE", compare_and_write.compare_and_write, WRITES | MEDIUM, D.compare_and_write),
        (0x8A, "WRITE(16)", sbc.make_write(C.LBA16), WRITES | MEDIUM, D.blocks(C.LBA16)),
        (0x8B, "ORWRITE(16)", compare_and_write.orwrite, WRITES | MEDIUM, D.blocks(C.LBA16)),
        (0x8E, "WRITE AND VERIFY(16)", sbc.make_write_and_verify(C.LBA16), WRITES | MEDIUM, D.blocks(C.LBA16)),
        (0x8F, "VERIFY(16)", sbc.make_verify(C.LBA16), MEDIUM, D.verify(C.LBA16)),
        (0x90, "PRE-FETCH(16)", sbc.make_prefetch(C.LBA16), MEDIUM, None),
        (0x91, "SYNCHRONIZE CACHE(16)", sbc.make_synchronize_cache(C.LBA16), MEDIUM, None),
        (0x93, "WRITE SAME(16)", provisioning.make_write_same(C.LBA16), WRITES | MEDIUM, D.write_same16),
        (0x9C, "WRITE ATOMIC(16)", sbc.write_atomic16, WRITES | MEDIUM, D.field(12, 2, in_blocks=True)),
        (0x9E, "SERVICE ACTION IN(16)", provisioning.service_action_in16, MEDIUM, None),
        (0xA0, "REPORT LUNS", spc.report_luns, ANY_LUN | KEEPS_UA, None),
        (_MAINTENANCE_IN, "MAINTENANCE IN", opcodes.make_maintenance_in(lambda: OPS), 0, None),
        (0xA8, "READ(12)", sbc.make_read(C.LBA12), MEDIUM, None),
        (0xAA, "WRITE(12)", sbc.make_write(C.LBA12), WRITES | MEDIUM, D.blocks(C.LBA12)),
        (0xAE, "WRITE AND VERIFY(12)", sbc.make_write_and_verify(C.LBA12), WRITES | MEDIUM, D.blocks(C.LBA12)),
        (0xAF, "VERIFY(12)", sbc.make_verify(C.LBA12), MEDIUM, D.verify(C.LBA12)),
        (0xB7, "READ DEFECT DATA(12)", sbc.read_defect_data12, 0, None),
    ):
        busy = 0 if flags & ANY_LUN or opcode == _MAINTENANCE_IN else BUSY
        table[opcode] = Op(name, handler, C.CDB_LENGTH[opcode >> 5], flags | busy, data_out)
    return table


OPS = _ops()


def _nothing() -> None:
    pass


def _ignored(failure: Failure) -> None:
    """A nexus loss the coordinator did not take (logged by the client): its next restart or FetchUnitStates
    brings the units' state."""


class ScsiTarget:
    """Executes SCSI tasks for the logical units of one target.

    Sessions attach their I_T nexus (`attach`/`detach`) with an object offering `abort_lun(lun, done)` (abort
    its tasks on the unit, `done()` once those in flight have stopped; True if it had any) and `close()`,
    so that PREEMPT AND ABORT, CLEAR TASK SET and resets can reach another nexus's tasks, and nexus loss can
    drop its SPC-2 reservation. The coordinator (`coordinator`: the worker's CoordinatorClient, or in unit tests
    coordinator/in_process.py's client, running the same handlers) is the authority for reservations, unit
    attentions, mode and medium: resets and CLEAR TASK SET go through it and come back to every worker
    (`apply_reset`, `apply_clear`, pushed by target/unit_sync.py), and `done` runs once every worker has
    applied them.

    Every request to the coordinator has the client's deadline (coordinator/client.py): past it a command ends
    BUSY and a task management function is answered FUNCTION REJECTED (`done(rejected=True)`: the initiator
    escalates, to a target reset, then a new session), and the coordinator drops the request unapplied. A
    request the coordinator refuses or fails ends the command HARDWARE ERROR and rejects the function likewise
    (`failed_command`; nothing is applied here that the coordinator did not apply). A reply
    that still comes (applied just before the deadline) is applied here too (`late`), so the workers agree.
    A nexus that goes (`detach`) withdraws its commands still queued at the coordinator.
    """

    __slots__ = ("luns", "nexuses", "coordinator", "iqn", "attaching", "call_later", "copy_results")

    def __init__(self, luns: dict[int, LogicalUnit], coordinator, call_later=None):
        self.luns = luns
        self.nexuses: dict[str, object] = {}
        self.coordinator = coordinator
        self.iqn = next(iter(luns.values())).identity.target_iqn if luns else ""
        self.attaching: dict[str, list] = {}    # nexus -> its tasks held until the coordinator said what is pending
        self.call_later = call_later            # (seconds, fn) -> None: the worker's timer (None: none, in tests)
        self.copy_results = xcopy.HeldResults()     # EXTENDED COPY results held for RECEIVE COPY RESULTS
        for lun_id, unit in luns.items():
            unit.reservations = SharedReservations(coordinator, self.iqn, lun_id, self._change_applier(lun_id))
            unit.attentions.greets_new = False          # the coordinator decides (AttachNexus)
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

    def _decide_remotely(self, task, request: Message, decided: Callable, late: Callable) -> None:
        """Ask the coordinator to decide for `task`; `decided(reply)` finishes it, unless the request failed
        (`failed_command`; `late(reply)` if the coordinator applied it after all)."""
        task.remote = True

        def done(reply: Message) -> None:
            task.remote = False
            decided(reply)

        def failed(failure: Failure) -> None:
            task.remote = False
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
        runs, or the task ends GOOD; a refusal ends the task."""

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
            if action in (SANITIZE, SANITIZE_AUSE) and reply.refused is None:
                self.medium_report(task.lun, SANITIZE_FAILED, _nothing)     # begun for a task that ended BUSY

        self._decide_remotely(task, MediumRequest(self.iqn, task.lun, task.nexus, action), decided, late)
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

    def apply_views(self, views) -> None:
        for lun, view in views:
            unit = self.luns.get(lun)
            if unit is not None:
                unit.reservations.view = ConflictView.from_dict(view)

    # -- task management ----------------------------------------------------------------------------------------
    def has_lun(self, lun: int) -> bool:
        return lun in self.luns

    def reset_lun(self, lun: int, nexus: str, done: Callable[[], None]) -> None:
        """LOGICAL UNIT RESET (SAM-5 §7.7): every task on the unit is aborted, every I_T nexus, the issuing one
        included (libiscsi's MultipathIO.Reset expects it on every path), learns of it through a unit
        attention; an SPC-2 reservation is released, persistent reservations stay."""
        self._reset([lun], nexus, BUS_DEVICE_RESET, False, done)

    def reset_target(self, nexus: str, cold: bool, done: Callable[[], None]) -> None:
        """TARGET WARM/COLD RESET: a LUN reset of every unit; a cold reset also ends every other session."""
        self._reset(sorted(self.luns), nexus, POWER_ON_OCCURRED if cold else BUS_DEVICE_RESET, cold, done)

    def _reset(self, luns: list[int], nexus: str, asc_ascq: int, cold: bool, done: Callable[..., None]) -> None:
        self.coordinator.request(UnitReset(self.iqn, luns, nexus, asc_ascq, cold), lambda reply: self.apply_reset(reply, done),
                                 lambda failure: done(rejected=True), owner=nexus,
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

    def data_out_length(self, lun: int, cdb) -> int:
        """How many bytes of data-out `cdb` asks for, at most the largest transfer a command may carry (0 for a
        command that carries none, or a LUN that does not exist): the transport solicits and holds no more than
        this (it asks once per command with data-out, before any data arrives; data_out.py)."""
        decode = OPS[cdb[0]].data_out
        unit = self.luns.get(lun)
        if decode is None or unit is None:
            return 0
        return min(decode(cdb, unit.block_size), MAX_TRANSFER_BYTES)

    def execute(self, task) -> None:
        if self.attaching and task.nexus in self.attaching:
            task.remote = True                              # first commands of a session, before ua.attach
            self.attaching[task.nexus].append(task)
            return
        task.remote = False
        cdb = task.cdb
        _, handler, length, flags, _ = OPS[cdb[0]] if cdb else UNSUPPORTED
        unit = self.luns.get(task.lun)
        try:
            if unit is None:
                if not flags & ANY_LUN:
                    raise ScsiError(ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED)
            else:
                if not flags & KEEPS_UA:
                    asc_ascq = unit.attentions.take(task.nexus)
                    if asc_ascq is not None:
                        raise ScsiError(UNIT_ATTENTION, asc_ascq)
                view = unit.reservations.view
                if view.reserved and view.conflicts(task.nexus, cdb[0]):
                    task.finish(RESERVATION_CONFLICT)
                    return
            if handler is None:
                raise ScsiError(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)
            if len(cdb) < length:
                raise ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
            control = cdb[length - 1] & _CONTROL_UNSUPPORTED
            if control:
                raise invalid_cdb(length - 1, control.bit_length() - 1)
            refused = flags & unit.refused if unit is not None else 0
            if refused:
                raise unit.refusal(refused)
            data = handler(self, unit, task)
        except ScsiError as error:
            fail(task, error)
            return
        except Exception:
            log.exception("SCSI command %s on LUN %s failed", bytes(cdb[:16]).hex(), task.lun)
            check_condition(task, HARDWARE_ERROR, INTERNAL_TARGET_FAILURE)
            return
        if data is not None:
            task.finish(GOOD, data or None)
