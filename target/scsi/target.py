"""The SCSI target of one iSCSI target name: the 256-row opcode table and the checks made before dispatch.

Each row (op.py) holds everything about its opcode. Order of checks (SPC-4 5.14, SAM-5 5.3): logical unit exists
(INQUIRY, REPORT LUNS and REQUEST SENSE are served for any LUN), pending unit attention (not reported to INQUIRY,
REPORT LUNS, REQUEST SENSE), reservation conflict (the unit's cached `ConflictView`, see reservations.py, asked
with the row's access class), supported opcode, CDB length and CONTROL byte, then what the unit refuses in its
state (no medium, write protection) or kind (not thin); then, for a row addressing blocks, its `LbaCheck`
(PROTECT, the command's own fields, range, largest transfer); then the handler.
Nothing raised by a handler escapes: `ScsiError` becomes CHECK CONDITION with its sense, anything else is
logged and answered HARDWARE ERROR / INTERNAL TARGET FAILURE.
"""
from __future__ import annotations

import logging
from typing import Callable, Final

from coordinator.unit_state import reservations as R

from . import cdb as C
from . import data_out as D
from . import compare_and_write, mode, opcodes, pr, provisioning, sanitize, sbc, spc, xcopy
from .lun import MAX_TRANSFER_BYTES, LogicalUnit
from .op import ANY_LUN, ATOMIC, BUSY, KEEPS_UA, MEDIUM, MODIFIES, THIN, UNIT_WIDE, LbaCheck, Op, ServiceActions
from .reservations import PR_ALLOWED, PR_READ, PR_WRITE, SPC2_ALLOWED
from .sense import (HARDWARE_ERROR, ILLEGAL_REQUEST, INTERNAL_TARGET_FAILURE, INVALID_COMMAND_OPERATION_CODE,
                    INVALID_FIELD_IN_CDB, LBA_OUT_OF_RANGE, LOGICAL_UNIT_NOT_SUPPORTED, UNIT_ATTENTION, ScsiError,
                    check_condition, fail, invalid_cdb)
from .shared_units import SharedUnits
from .task import GOOD, RESERVATION_CONFLICT, ScsiTask

log = logging.getLogger(f"ringtgt.{__name__}")

_CONTROL_UNSUPPORTED: Final = 0x07  # NACA, obsolete FLAG, LINK
_MAINTENANCE_IN: Final = 0xA3

UNSUPPORTED = Op("unsupported", None, 0, 0, None, PR_WRITE, None, None)    # conflicts with reservations as a write


def _blocks(layout: C.LbaLayout, fields=None, held: bool = True) -> LbaCheck:
    """The LbaCheck of a command reading or writing blocks: PROTECT refused, at most the largest transfer."""
    return LbaCheck(layout.decode, layout.count_byte, C.PROTECT, fields, held)


def _range(layout: C.LbaLayout) -> LbaCheck:
    """The LbaCheck of a command naming blocks it does not transfer (SYNCHRONIZE CACHE, PRE-FETCH): the range."""
    return LbaCheck(layout.decode, layout.count_byte, 0, None, False)


def _ops() -> list[Op]:
    table = [UNSUPPORTED] * 256

    def row(opcode: int, name: str, handler: Callable | None, flags: int, access: int, data_out=None,
            actions: ServiceActions | None = None, lba: LbaCheck | None = None) -> None:
        busy = 0 if flags & ANY_LUN or opcode == _MAINTENANCE_IN or handler is None else BUSY
        length = C.CDB_LENGTH[opcode >> 5] if handler is not None else 0
        table[opcode] = Op(name, handler, length, flags | busy, data_out, access, actions, lba)

    everyone = PR_ALLOWED | SPC2_ALLOWED
    row(0x00, "TEST UNIT READY", spc.unit_ready, MEDIUM, PR_ALLOWED)
    row(0x03, "REQUEST SENSE", spc.request_sense, ANY_LUN | KEEPS_UA, everyone)
    row(0x08, "READ(6)", sbc.read, MEDIUM, PR_READ, lba=_blocks(C.LBA6))
    row(0x0A, "WRITE(6)", sbc.write, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA6), lba=_blocks(C.LBA6))
    row(0x12, "INQUIRY", spc.inquiry, ANY_LUN | KEEPS_UA, everyone)
    row(0x15, "MODE SELECT(6)", mode.mode_select6, 0, PR_WRITE, D.field(4, 1))
    row(0x16, "RESERVE(6)", pr.reserve, 0, PR_WRITE | SPC2_ALLOWED)
    row(0x17, "RELEASE(6)", pr.release, 0, PR_WRITE | SPC2_ALLOWED)
    row(0x1A, "MODE SENSE(6)", mode.mode_sense6, 0, PR_READ)
    row(0x1B, "START STOP UNIT", spc.start_stop_unit, 0, PR_WRITE)
    row(0x1E, "PREVENT ALLOW MEDIUM REMOVAL", spc.prevent_allow_medium_removal, 0, PR_WRITE)
    row(0x25, "READ CAPACITY(10)", sbc.read_capacity10, MEDIUM, PR_ALLOWED)
    row(0x28, "READ(10)", sbc.read, MEDIUM, PR_READ, lba=_blocks(C.LBA10))
    row(0x2A, "WRITE(10)", sbc.write, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA10), lba=_blocks(C.LBA10))
    row(0x2E, "WRITE AND VERIFY(10)", sbc.write_and_verify, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA10),
        lba=_blocks(C.LBA10, sbc.write_and_verify_fields))
    row(0x2F, "VERIFY(10)", sbc.verify, MEDIUM, PR_READ, D.verify(C.LBA10), lba=_blocks(C.LBA10, sbc.verify_fields))
    row(0x34, "PRE-FETCH(10)", sbc.prefetch, MEDIUM, PR_READ, lba=_range(C.LBA10))
    row(0x35, "SYNCHRONIZE CACHE(10)", sbc.synchronize_cache, MEDIUM, PR_WRITE, lba=_range(C.LBA10))
    row(0x37, "READ DEFECT DATA(10)", sbc.read_defect_data10, 0, PR_READ)
    row(0x41, "WRITE SAME(10)", provisioning.make_write_same(C.LBA10), MODIFIES | MEDIUM, PR_WRITE, D.one_block,
        lba=_blocks(C.LBA10, provisioning.write_same_fields))
    row(0x42, "UNMAP", provisioning.unmap, MODIFIES | MEDIUM | THIN, PR_WRITE, D.field(7, 2))
    row(0x48, "SANITIZE", sanitize.sanitize, MODIFIES | UNIT_WIDE, PR_WRITE, D.field(7, 2),
        ServiceActions(sanitize.ACTIONS, 0xBF, ((sanitize.CRYPTO_ERASE, "crypto_erasable"),)))
    row(0x4D, "LOG SENSE", None, 0, PR_ALLOWED)        # not served, but not a reservation conflict either
    row(0x55, "MODE SELECT(10)", mode.mode_select10, 0, PR_WRITE, D.field(7, 2))
    row(0x56, "RESERVE(10)", pr.reserve, 0, PR_WRITE | SPC2_ALLOWED)
    row(0x57, "RELEASE(10)", pr.release, 0, PR_WRITE | SPC2_ALLOWED)
    row(0x5A, "MODE SENSE(10)", mode.mode_sense10, 0, PR_READ)
    row(0x5E, "PERSISTENT RESERVE IN", pr.persistent_reserve_in, 0, everyone, actions=ServiceActions(
        (R.READ_KEYS, R.READ_RESERVATION, R.REPORT_CAPABILITIES, R.READ_FULL_STATUS), 0x1F))
    row(0x5F, "PERSISTENT RESERVE OUT", pr.persistent_reserve_out, 0, everyone, D.field(5, 4), ServiceActions(
        (R.REGISTER, R.RESERVE, R.RELEASE, R.CLEAR, R.PREEMPT, R.PREEMPT_AND_ABORT,
         R.REGISTER_AND_IGNORE_EXISTING_KEY, R.REGISTER_AND_MOVE), 0x1F))
    row(0x83, "EXTENDED COPY", xcopy.extended_copy, MEDIUM, PR_WRITE, D.field(10, 4),
        ServiceActions(xcopy.EXTENDED_COPY_ACTIONS, 0x1F))
    row(0x84, "RECEIVE COPY RESULTS", xcopy.receive_copy_results, 0, PR_ALLOWED,
        actions=ServiceActions(xcopy.RECEIVE_COPY_RESULTS_ACTIONS, 0x1F))
    row(0x88, "READ(16)", sbc.read, MEDIUM, PR_READ, lba=_blocks(C.LBA16))
    row(0x89, "COMPARE AND WRITE", compare_and_write.compare_and_write, MODIFIES | MEDIUM, PR_WRITE,
        D.compare_and_write, lba=_blocks(compare_and_write.LAYOUT, compare_and_write.compare_and_write_fields,
                                     held=False))
    row(0x8A, "WRITE(16)", sbc.write, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA16), lba=_blocks(C.LBA16))
    row(0x8B, "ORWRITE(16)", compare_and_write.orwrite, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA16),
        lba=_blocks(C.LBA16))
    row(0x8E, "WRITE AND VERIFY(16)", sbc.write_and_verify, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA16),
        lba=_blocks(C.LBA16, sbc.write_and_verify_fields))
    row(0x8F, "VERIFY(16)", sbc.verify, MEDIUM, PR_READ, D.verify(C.LBA16), lba=_blocks(C.LBA16, sbc.verify_fields))
    row(0x90, "PRE-FETCH(16)", sbc.prefetch, MEDIUM, PR_READ, lba=_range(C.LBA16))
    row(0x91, "SYNCHRONIZE CACHE(16)", sbc.synchronize_cache, MEDIUM, PR_WRITE, lba=_range(C.LBA16))
    row(0x93, "WRITE SAME(16)", provisioning.make_write_same(C.LBA16), MODIFIES | MEDIUM, PR_WRITE, D.write_same16,
        lba=_blocks(C.LBA16, provisioning.write_same_fields))
    row(0x9C, "WRITE ATOMIC(16)", sbc.write_atomic16, MODIFIES | MEDIUM | ATOMIC, PR_WRITE, D.blocks(sbc.ATOMIC16),
        lba=_blocks(sbc.ATOMIC16, sbc.write_atomic_fields))
    row(0x9E, "SERVICE ACTION IN(16)", provisioning.service_action_in16, MEDIUM, PR_ALLOWED,
        actions=ServiceActions((C.READ_CAPACITY16, provisioning.GET_LBA_STATUS), 0x1F))
    row(0xA0, "REPORT LUNS", spc.report_luns, ANY_LUN | KEEPS_UA, everyone)
    row(_MAINTENANCE_IN, "MAINTENANCE IN", opcodes.make_maintenance_in(lambda: OPS), 0, everyone,
        actions=ServiceActions((opcodes.REPORT_SUPPORTED_OPCODES, opcodes.REPORT_SUPPORTED_TMFS), 0x1F))
    row(0xA8, "READ(12)", sbc.read, MEDIUM, PR_READ, lba=_blocks(C.LBA12))
    row(0xAA, "WRITE(12)", sbc.write, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA12), lba=_blocks(C.LBA12))
    row(0xAE, "WRITE AND VERIFY(12)", sbc.write_and_verify, MODIFIES | MEDIUM, PR_WRITE, D.blocks(C.LBA12),
        lba=_blocks(C.LBA12, sbc.write_and_verify_fields))
    row(0xAF, "VERIFY(12)", sbc.verify, MEDIUM, PR_READ, D.verify(C.LBA12), lba=_blocks(C.LBA12, sbc.verify_fields))
    row(0xB7, "READ DEFECT DATA(12)", sbc.read_defect_data12, 0, PR_READ)
    return table


OPS = _ops()


# What execute reads of a row, as plain tuples typed to the field (CPython unpacks a NamedTuple through the iterator
# protocol, a few times slower than a tuple; compiled, a typed tuple is unpacked by index into native ints):
# handler, CDB length, flags, access, and the LbaCheck's decode, count_byte, protect, fields and held, or None
_LbaFields = tuple[Callable[[bytes], tuple[int, int, int]], int, int, Callable | None, bool]
_ExecuteRow = tuple[Callable | None, int, int, int, _LbaFields | None]


def _for_execute(op: Op) -> _ExecuteRow:
    lba = op.lba
    return (op.handler, op.length, op.flags, op.access,
            (lba.decode, lba.count_byte, lba.protect, lba.fields, lba.held) if lba else None)


_EXECUTE: Final[list[_ExecuteRow]] = [_for_execute(op) for op in OPS]
_EXECUTE_UNSUPPORTED: Final = _for_execute(UNSUPPORTED)


class ScsiTarget(SharedUnits):
    """Executes SCSI tasks for the logical units of one target; its dealings with the coordinator (sessions,
    reservations, unit attentions, mode, medium, task management) are SharedUnits' (target/scsi/shared_units.py).
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
        self.share_units()

    # -- dispatch -------------------------------------------------------------------------------------------------
    def has_lun(self, lun: int) -> bool:
        return lun in self.luns

    def data_out_length(self, lun: int, cdb) -> int:
        """How many bytes of data-out `cdb` asks for, at most the largest transfer a command may carry (0 for a
        command that carries none, or a LUN that does not exist): the transport solicits and holds no more than
        this (it asks once per command with data-out, before any data arrives; data_out.py)."""
        decode = OPS[cdb[0]].data_out
        unit = self.luns.get(lun)
        if decode is None or unit is None:
            return 0
        return min(decode(cdb, unit.block_size), MAX_TRANSFER_BYTES)

    def data_out_buffers(self, lun: int) -> Callable[[int], memoryview] | None:
        """Where the transport gathers a write's data-out: `get(length)` of the unit's buffer pool (page-aligned
        for an O_DIRECT store, which then writes from it as it is); None for a LUN that does not exist."""
        luns: dict[int, LogicalUnit] = self.luns    # (typed: as in `execute`)
        unit = luns.get(lun)
        return unit.data_buffers.get if unit is not None else None

    @staticmethod
    def unit_wide(cdb) -> bool:
        """Whether `cdb` changes what every later command of its unit sees: while it waits for its data-out the
        transport holds the unit's later commands, so that they keep the order they were sent in."""
        return bool(OPS[cdb[0]].flags & UNIT_WIDE)

    def execute(self, task: ScsiTask) -> None:
        if self.attaching and task.nexus in self.attaching:
            task.remote = True                              # first commands of a session, before AttachNexus
            self.attaching[task.nexus].append(task)
            return
        task.remote = False
        cdb = task.cdb
        handler, length, flags, access, lba_check = _EXECUTE[cdb[0]] if cdb else _EXECUTE_UNSUPPORTED
        luns: dict[int, LogicalUnit] = self.luns    # (typed here: the unit's attributes are read natively, compiled;
        unit = luns.get(task.lun)                   # the class's own are looked up by name, its base being Python)
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
                if view.reserved and view.conflicts(task.nexus, access):
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
                raise unit.refusal(refused)      # type: ignore[union-attr]  # refused is 0 without a unit
            if lba_check is None:
                data = handler(self, unit, task)
            else:                                           # op.LbaCheck, inline: the hot path
                addressed: LogicalUnit = unit  # type: ignore[assignment]  # no LbaCheck row has ANY_LUN
                decode, count_byte, protect, fields, held = lba_check
                lba_flags, lba, count = decode(cdb)
                if lba_flags & protect:
                    raise invalid_cdb(1, 7)
                if fields is not None:
                    fields(addressed, task, lba_flags, count)
                if lba + count > addressed.blocks:
                    raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
                if held and count > addressed.max_transfer_blocks:
                    raise invalid_cdb(count_byte)
                data = handler(self, addressed, task, lba_flags, lba, count)
        except ScsiError as error:
            fail(task, error)
            return
        except Exception:
            log.exception("SCSI command %s on LUN %s failed", bytes(cdb[:16]).hex(), task.lun)
            check_condition(task, HARDWARE_ERROR, INTERNAL_TARGET_FAILURE)
            return
        if data is not None:
            task.finish(GOOD, data or None)

