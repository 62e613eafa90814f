"""The SCSI target of one iSCSI target name: the 256-entry opcode table and the checks made before dispatch.

Order of checks (SPC-4 5.14, SAM-5 5.3): logical unit exists (INQUIRY, REPORT LUNS and REQUEST SENSE are
served for any LUN), pending unit attention (not reported to INQUIRY, REPORT LUNS, REQUEST SENSE),
supported opcode, CDB length and CONTROL byte, data direction, write protection; then the handler.
Nothing raised by a handler escapes: `ScsiError` becomes CHECK CONDITION with its sense, anything else is
logged and answered HARDWARE ERROR / INTERNAL TARGET FAILURE.
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple

from . import cdb as C
from . import mode, sbc, spc
from .lun import LogicalUnit
from .sense import (BUS_DEVICE_RESET, DATA_PROTECT, HARDWARE_ERROR, ILLEGAL_REQUEST, INTERNAL_TARGET_FAILURE,
                    INVALID_COMMAND_OPERATION_CODE, INVALID_FIELD_IN_CDB,
                    LOGICAL_UNIT_NOT_SUPPORTED, UNIT_ATTENTION, WRITE_PROTECTED, ScsiError, check_condition,
                    fail, invalid_cdb)
from .task import GOOD

log = logging.getLogger(__name__)

# Op flags
ANY_LUN = 0x01          # served for LUNs that do not exist
KEEPS_UA = 0x02         # neither reports nor clears a pending unit attention
WRITES = 0x08           # modifies the medium: refused on a read-only LUN

_CONTROL_UNSUPPORTED = 0x07     # NACA, obsolete FLAG, LINK


class Op(NamedTuple):
    name: str
    handler: Callable | None    # (target, unit, task) -> data-in bytes, or None when it finishes later
    length: int                 # CDB length
    flags: int


UNSUPPORTED = Op("unsupported", None, 0, 0)


def _ops() -> list[Op]:
    table = [UNSUPPORTED] * 256
    for opcode, name, handler, flags in (
        (0x00, "TEST UNIT READY", spc.unit_ready, 0),
        (0x03, "REQUEST SENSE", spc.request_sense, ANY_LUN | KEEPS_UA),
        (0x08, "READ(6)", sbc.make_read(C.LBA6), 0),
        (0x0A, "WRITE(6)", sbc.make_write(C.LBA6), WRITES),
        (0x12, "INQUIRY", spc.inquiry, ANY_LUN | KEEPS_UA),
        (0x15, "MODE SELECT(6)", mode.mode_select6, 0),
        (0x1A, "MODE SENSE(6)", mode.mode_sense6, 0),
        (0x1B, "START STOP UNIT", spc.start_stop_unit, 0),
        (0x1E, "PREVENT ALLOW MEDIUM REMOVAL", spc.prevent_allow_medium_removal, 0),
        (0x25, "READ CAPACITY(10)", sbc.read_capacity10, 0),
        (0x28, "READ(10)", sbc.make_read(C.LBA10), 0),
        (0x2A, "WRITE(10)", sbc.make_write(C.LBA10), WRITES),
        (0x2F, "VERIFY(10)", sbc.make_verify(C.LBA10), 0),
        (0x35, "SYNCHRONIZE CACHE(10)", sbc.make_synchronize_cache(C.LBA10), 0),
        (0x55, "MODE SELECT(10)", mode.mode_select10, 0),
        (0x5A, "MODE SENSE(10)", mode.mode_sense10, 0),
        (0x88, "READ(16)", sbc.make_read(C.LBA16), 0),
        (0x8A, "WRITE(16)", sbc.make_write(C.LBA16), WRITES),
        (0x8F, "VERIFY(16)", sbc.make_verify(C.LBA16), 0),
        (0x91, "SYNCHRONIZE CACHE(16)", sbc.make_synchronize_cache(C.LBA16), 0),
        (0x9E, "READ CAPACITY(16)", sbc.read_capacity16, 0),
        (0xA0, "REPORT LUNS", spc.report_luns, ANY_LUN | KEEPS_UA),
        (0xA8, "READ(12)", sbc.make_read(C.LBA12), 0),
        (0xAA, "WRITE(12)", sbc.make_write(C.LBA12), WRITES),
    ):
        table[opcode] = Op(name, handler, C.CDB_LENGTH[opcode >> 5], flags)
    return table


OPS = _ops()


class ScsiTarget:
    """Executes SCSI tasks for the logical units of one target."""

    __slots__ = ("luns", "coordinator")

    def __init__(self, luns: dict[int, LogicalUnit], coordinator=None):
        self.luns = luns
        self.coordinator = coordinator      # the worker's CoordinatorClient (None when built alone, in tests)

    def has_lun(self, lun: int) -> bool:
        return lun in self.luns

    def reset_lun(self, lun: int, nexus: str) -> None:
        """LOGICAL UNIT RESET (SAM-5 §7.7): every other I_T nexus learns of it through a unit attention."""
        self.luns[lun].establish_ua(BUS_DEVICE_RESET, nexus)

    def reset_target(self, nexus: str) -> None:
        for unit in self.luns.values():
            unit.establish_ua(BUS_DEVICE_RESET, nexus)

    def execute(self, task) -> None:
        cdb = task.cdb
        _, handler, length, flags = OPS[cdb[0]] if cdb else UNSUPPORTED
        unit = self.luns.get(task.lun)
        try:
            if unit is None:
                if not flags & ANY_LUN:
                    raise ScsiError(ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED)
            elif not flags & KEEPS_UA:
                asc_ascq = unit.attentions.take(task.nexus)
                if asc_ascq is not None:
                    raise ScsiError(UNIT_ATTENTION, asc_ascq)
            if handler is None:
                raise ScsiError(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)
            if len(cdb) < length:
                raise ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
            control = cdb[length - 1] & _CONTROL_UNSUPPORTED
            if control:
                raise invalid_cdb(length - 1, control.bit_length() - 1)
            if flags & WRITES and unit.read_only:
                raise ScsiError(DATA_PROTECT, WRITE_PROTECTED)
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
