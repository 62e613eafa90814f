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

from . import cdb as C
from . import data_out as D
from . import compare_and_write, mode, opcodes, pr, provisioning, sanitize, sbc, spc, xcopy
from .lun import BUSY, MAX_TRANSFER_BYTES, MEDIUM, WRITES, LogicalUnit
from .sense import (HARDWARE_ERROR, ILLEGAL_REQUEST, INTERNAL_TARGET_FAILURE, INVALID_COMMAND_OPERATION_CODE,
                    INVALID_FIELD_IN_CDB, LOGICAL_UNIT_NOT_SUPPORTED, UNIT_ATTENTION, ScsiError, check_condition, fail,
                    invalid_cdb)
from .shared_units import SharedUnits
from .task import GOOD, RESERVATION_CONFLICT

log = logging.getLogger(__name__)

# Op flags
ANY_LUN = 0x01          # served for LUNs that do not exist
KEEPS_UA = 0x02         # neither reports nor clears a pending unit attention
# WRITES and MEDIUM (lun.py): refused while the unit is write-protected / its removable medium is ejected;
# BUSY (lun.py), refused while a sanitize runs, is added to every command but those served for any LUN and
# MAINTENANCE IN (SBC-4 4.11.2 lists INQUIRY, REPORT LUNS and REQUEST SENSE among those still served)

_CONTROL_UNSUPPORTED = 0x07     # NACA, obsolete FLAG, LINK
_MAINTENANCE_IN = 0xA3


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

    def execute(self, task) -> None:
        if self.attaching and task.nexus in self.attaching:
            task.remote = True                              # first commands of a session, before AttachNexus
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
