"""Primary commands (SPC-4): TEST UNIT READY, INQUIRY, REQUEST SENSE, REPORT LUNS, and the SBC pair START STOP
UNIT / PREVENT ALLOW MEDIUM REMOVAL, which move and lock a removable unit's medium (medium.py).

Handlers take (target, unit, task) and return the data-in bytes (b"" for none); `unit` is None only for
the commands the dispatcher serves on LUNs that do not exist.
"""
from __future__ import annotations

from struct import Struct

from coordinator.unit_state.medium import ALLOW, EJECT, LOAD, PREVENT

from . import cdb as C
from .inquiry import STANDARD_DISK, STANDARD_NO_UNIT, STANDARD_REMOVABLE_DISK, vpd_page
from .op import BUSY
from .sense import (BECOMING_READY, ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED, MANUAL_INTERVENTION_REQUIRED,
                    NO_ADDITIONAL_SENSE, NO_SENSE, NOT_READY, SANITIZE_IN_PROGRESS, UNIT_ATTENTION, ScsiError,
                    build_sense)

_LUN_LIST_HEADER = Struct(">I4x")
_LUN_ENTRY = Struct(">H6x")


def unit_ready(target, unit, task) -> bytes:
    return b""


def inquiry(target, unit, task) -> bytes:
    evpd, page, alloc = C.inquiry(task.cdb)
    if not evpd:
        data = STANDARD_NO_UNIT if unit is None else STANDARD_REMOVABLE_DISK if unit.removable else STANDARD_DISK
    elif unit is None:
        raise ScsiError(ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED)
    else:
        data = vpd_page(unit, page)
    return data[:alloc]


def request_sense(target, unit, task) -> bytes:
    """Report (and clear) a pending unit attention as parameter data, else a sanitize in progress, else an offline
    unit, else one becoming ready, else NO SENSE (SPC-4 6.29)."""
    alloc = C.request_sense(task.cdb)
    if unit is None:
        sense = build_sense(ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED)
    else:
        asc_ascq = unit.attentions.take(task.nexus)
        if asc_ascq is not None:
            sense = build_sense(UNIT_ATTENTION, asc_ascq)
        elif unit.refused & BUSY:
            sense = build_sense(NOT_READY, SANITIZE_IN_PROGRESS)
        elif unit.offline:
            sense = build_sense(NOT_READY, MANUAL_INTERVENTION_REQUIRED)
        elif unit.becoming_ready:
            sense = build_sense(NOT_READY, BECOMING_READY)
        else:
            sense = build_sense(NO_SENSE, NO_ADDITIONAL_SENSE)
    return sense[:alloc]


def encode_lun(lun: int) -> int:
    """SAM-5 single-level LUN: peripheral addressing below 256, flat space addressing above."""
    return lun if lun < 256 else 0x4000 | lun


def report_luns(target, unit, task) -> bytes:
    select, alloc = C.report_luns(task.cdb)
    luns = [] if select == C.SELECT_WELL_KNOWN else sorted(target.luns)
    data = _LUN_LIST_HEADER.pack(8 * len(luns)) + b"".join(_LUN_ENTRY.pack(encode_lun(lun)) for lun in luns)
    return data[:alloc]


def start_stop_unit(target, unit, task) -> bytes | None:
    """Loads or ejects a removable medium; stopping and power conditions change nothing (a virtual disk is
    always spun up)."""
    load = C.start_stop_unit(task.cdb, unit.removable)
    if load is None:
        return b""
    return target.medium_request(unit, task, LOAD if load else EJECT)


def prevent_allow_medium_removal(target, unit, task) -> bytes | None:
    prevent = C.prevent_allow(task.cdb, unit.removable)
    if not unit.removable:
        return b""
    return target.medium_request(unit, task, PREVENT if prevent else ALLOW)
