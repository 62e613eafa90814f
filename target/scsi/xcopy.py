"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.3, 6.18): the copy manager for copies between the
logical units of one target, block device to block device (VMware's XCOPY clone offload).

A copy is described by a parameter list: a 16-byte header, identification target descriptors (E4h) naming
logical units by a designator of their Device Identification page (the NAA), and block-to-block segment
descriptors (02h) copying NUMBER OF BLOCKS from one of those units to another (or the same). Segments run one
after the other, each as reads and writes of at most COPY_CHUNK bytes through the backstores, the range
copied backwards when it overlaps itself further on, so nothing is read after it was overwritten. The command
answers when the copy is done; with LIST ID USAGE 00b its result is held for RECEIVE COPY RESULTS (COPY
STATUS), per I_T nexus and list identifier, the latest MAX_HELD of each nexus.
"""
from __future__ import annotations

from collections import OrderedDict
from struct import Struct
from typing import TYPE_CHECKING

from .data_out import parameter_data
from .op import BUSY, MEDIUM, MODIFIES
from .reservations import PR_READ, PR_WRITE
from .sbc import io_error
from .sense import (COPY_ABORTED, COPY_TARGET_DEVICE_NOT_REACHABLE, ILLEGAL_REQUEST, NO_ADDITIONAL_SENSE,
                    PARAMETER_LIST_LENGTH_ERROR, TOO_MANY_SEGMENT_DESCRIPTORS, TOO_MANY_TARGET_DESCRIPTORS,
                    UNRECOVERED_READ_ERROR, UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE,
                    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE, WRITE_ERROR, ScsiError, check_condition, invalid_cdb,
                    invalid_parameter)
from .task import GOOD, RESERVATION_CONFLICT

if TYPE_CHECKING:
    from .lun import LogicalUnit

EXTENDED_COPY, RECEIVE_COPY_RESULTS = 0x83, 0x84
LID1 = 0x00
COPY_STATUS, OPERATING_PARAMETERS = 0x00, 0x03
EXTENDED_COPY_ACTIONS = (LID1,)                 # the service actions served, for the command table and
RECEIVE_COPY_RESULTS_ACTIONS = (COPY_STATUS, OPERATING_PARAMETERS)     # the Third-party Copy VPD page
IDENTIFICATION_TARGET, BLOCK_TO_BLOCK = 0xE4, 0x02
MAX_TARGET_DESCRIPTORS = 2
MAX_SEGMENT_DESCRIPTORS = 16
MAX_DESCRIPTOR_LIST_LENGTH = 1024
COPY_CHUNK = 1 << 20
MAX_HELD = 16
HOLD = 0                                        # LIST ID USAGE 00b: keep the result for RECEIVE COPY RESULTS

_CDB = Struct(">xB8xI2x")                       # service action, parameter list length
_RESULTS_CDB = Struct(">xBB7xI2x")              # service action, list identifier, allocation length
_HEADER = Struct(">BBH4xII")                    # list id, flags, target list length, segment list length, inline
_TARGET = Struct(">BBxxBBxB20sxBH")             # type, LU id type/NUL/device type, designator, disk block length
_SEGMENT = Struct(">BBHHH2xHQQ")                # type, DC/CAT, length, source, destination, blocks, LBAs
_COPY_STATUS = Struct(">IBHBI")
_OPERATING = Struct(">IB3xHHIIIII2xHBBBB3xB")


class HeldResults:
    """The results of finished copies, by (nexus, list identifier), the latest MAX_HELD of each nexus."""

    def __init__(self):
        self._held: dict[str, OrderedDict[int, tuple[int, int]]] = {}

    def hold(self, nexus: str, list_id: int, segments: int, copied: int) -> None:
        held = self._held.setdefault(nexus, OrderedDict())
        held.pop(list_id, None)
        held[list_id] = (segments, copied)
        if len(held) > MAX_HELD:
            held.popitem(last=False)

    def get(self, nexus: str, list_id: int) -> tuple[int, int] | None:
        held = self._held.get(nexus)
        return held.get(list_id) if held is not None else None

    def forget(self, nexus: str) -> None:
        self._held.pop(nexus, None)


def extended_copy(target, unit, task):
    action, length = _CDB.unpack_from(task.cdb)
    if action & 0x1F != LID1:
        raise invalid_cdb(1, 4)
    data = parameter_data(task, length)
    if not length:
        return b""
    if length < _HEADER.size:
        raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    data = bytes(data)
    list_id, flags, targets_length, segments_length, inline = _HEADER.unpack_from(data)
    if inline:
        raise invalid_parameter(12)                     # no inline data (MAXIMUM INLINE DATA LENGTH 0)
    if _HEADER.size + targets_length + segments_length > len(data) or \
            targets_length + segments_length > MAX_DESCRIPTOR_LIST_LENGTH:
        raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    units = _target_descriptors(target, data, targets_length)
    segments = _segment_descriptors(data, _HEADER.size + targets_length, segments_length, units)
    usage = flags >> 3 & 0x03
    for source, destination, _, _, _ in segments:
        if _conflicts(source, task, PR_READ) or _conflicts(destination, task, PR_WRITE):
            task.finish(RESERVATION_CONFLICT)
            return None
        for end, flags in ((source, MEDIUM | BUSY), (destination, MODIFIES | MEDIUM | BUSY)):
            refused = flags & end.refused       # sanitizing, no medium, write-protected: as a READ/WRITE would be
            if refused:
                raise end.refusal(refused)
    copied = [0]

    def finished(error: ScsiError | None) -> None:
        if error is not None:
            check_condition(task, error.key, error.asc_ascq)
            return
        if usage == HOLD:
            target.copy_results.hold(task.nexus, list_id, len(segments), copied[0])
        task.finish(GOOD)

    _run_segments(segments, copied, finished)
    return None


def _target_descriptors(target, data: bytes, length: int) -> list[LogicalUnit]:
    """The logical units the identification target descriptors name, in order."""
    units: list[LogicalUnit] = []
    for offset in range(_HEADER.size, _HEADER.size + length, _TARGET.size):
        kind = data[offset]
        if kind != IDENTIFICATION_TARGET:
            raise ScsiError(ILLEGAL_REQUEST, UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
        if len(units) == MAX_TARGET_DESCRIPTORS:
            raise ScsiError(ILLEGAL_REQUEST, TOO_MANY_TARGET_DESCRIPTORS)
        if offset + _TARGET.size > len(data):
            raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        _, device, _, kind_association, designator_length, designator, block_high, block_low = \
            _TARGET.unpack_from(data, offset)
        if device & 0x1F:
            raise invalid_parameter(offset + 1, 4)      # a block device (peripheral type 0) only
        if designator_length > len(designator):
            raise invalid_parameter(offset + 7)
        name = designator[:designator_length]
        unit = next((u for u in target.luns.values()
                     if kind_association & 0x3F == 0x03 and name == bytes.fromhex(u.identity.naa)), None)
        if unit is None:
            raise ScsiError(COPY_ABORTED, COPY_TARGET_DEVICE_NOT_REACHABLE)
        if (block_high << 16 | block_low) != unit.block_size:
            raise invalid_parameter(offset + 29)
        units.append(unit)
    return units


def _segment_descriptors(data: bytes, start: int, length: int,
                         units: list[LogicalUnit]) -> list[tuple[LogicalUnit, LogicalUnit, int, int, int]]:
    """(source unit, destination unit, blocks, source LBA, destination LBA) of each block-to-block segment."""
    segments: list[tuple[LogicalUnit, LogicalUnit, int, int, int]] = []
    offset, end = start, start + length
    while offset < end:
        kind = data[offset]
        if kind != BLOCK_TO_BLOCK:
            raise ScsiError(ILLEGAL_REQUEST, UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE)
        if len(segments) == MAX_SEGMENT_DESCRIPTORS:
            raise ScsiError(ILLEGAL_REQUEST, TOO_MANY_SEGMENT_DESCRIPTORS)
        if offset + _SEGMENT.size > end:
            raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        _, _, _, source, destination, blocks, source_lba, destination_lba = _SEGMENT.unpack_from(data, offset)
        if source >= len(units) or destination >= len(units):
            raise ScsiError(COPY_ABORTED, COPY_TARGET_DEVICE_NOT_REACHABLE)
        source_unit, destination_unit = units[source], units[destination]
        if source_lba + blocks > source_unit.blocks or destination_lba + blocks > destination_unit.blocks:
            raise ScsiError(COPY_ABORTED, NO_ADDITIONAL_SENSE)      # what libiscsi accepts for a range error
        segments.append((source_unit, destination_unit, blocks, source_lba, destination_lba))
        offset += _SEGMENT.size
    return segments


def _conflicts(unit, task, access: int) -> bool:
    """Whether the unit's reservation refuses this nexus a read (PR_READ) or a write (PR_WRITE): a copy's reads and
    writes meet reservations as READ and WRITE do."""
    view = unit.reservations.view
    return view.reserved and view.conflicts(task.nexus, access)


def _run_segments(segments: list, copied: list, finished) -> None:
    """Copy the segments one after the other, chunk by chunk; `finished(error or None)`."""
    chunks = []
    for source, destination, blocks, source_lba, destination_lba in segments:
        size = source.block_size
        start, target_start, length = source_lba * size, destination_lba * size, blocks * size
        pieces = [(start + at, target_start + at, min(COPY_CHUNK, length - at)) for at in range(0, length, COPY_CHUNK)]
        if source is destination and start < target_start < start + length:
            pieces.reverse()                            # overlapping further on: copy from the end
        chunks += [(source, destination, *piece) for piece in pieces]

    def next_chunk(index: int) -> None:
        if index == len(chunks):
            finished(None)
            return
        source, destination, offset, target_offset, length = chunks[index]

        def read(result) -> None:
            if isinstance(result, OSError):
                finished(ScsiError(*io_error(source, result, UNRECOVERED_READ_ERROR, COPY_ABORTED)))
                return

            def written(error) -> None:
                if error is not None:
                    finished(ScsiError(*io_error(destination, error, WRITE_ERROR, COPY_ABORTED)))
                    return
                copied[0] += length
                next_chunk(index + 1)
            destination.backstore.write(target_offset, result, False, written)

        source.backstore.read(offset, length, read)

    next_chunk(0)


def receive_copy_results(target, unit, task) -> bytes:
    action, list_id, alloc = _RESULTS_CDB.unpack_from(task.cdb)
    action &= 0x1F
    if action == OPERATING_PARAMETERS:
        implemented = bytes((BLOCK_TO_BLOCK, IDENTIFICATION_TARGET))
        data = _OPERATING.pack(_OPERATING.size - 4 + len(implemented), 1, MAX_TARGET_DESCRIPTORS,
                               MAX_SEGMENT_DESCRIPTORS, MAX_DESCRIPTOR_LIST_LENGTH, 0xFFFF * unit.block_size, 0, 0,
                               0, 1, 1, 0, 0, 0, len(implemented)) + implemented
    elif action == COPY_STATUS:
        held = target.copy_results.get(task.nexus, list_id)
        if held is None:
            raise invalid_cdb(2)                        # no copy with that list identifier
        segments, copied = held
        data = _COPY_STATUS.pack(_COPY_STATUS.size - 4, 0x00, segments, 0x00, min(copied, 0xFFFFFFFF))
    else:
        raise invalid_cdb(1, 4)
    return data[:alloc]
