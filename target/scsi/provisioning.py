"""Thin provisioning (SBC-3 4.7, 5.16, 5.28-5.30, 5.42-5.44): UNMAP, WRITE SAME 10/16 (with UNMAP and NDOB)
and GET LBA STATUS, plus the SERVICE ACTION IN(16) dispatch it shares with READ CAPACITY(16).

Unmapped blocks are holes punched in the file (FALLOC_FL_PUNCH_HOLE through the ring); they read back as zeros
(LBPRZ). Which blocks are mapped comes from the file's SEEK_DATA/SEEK_HOLE. A block of zeros written by WRITE
SAME without UNMAP becomes allocated zeros (FALLOC_FL_ZERO_RANGE); any other pattern is written chunk by chunk.
Where the file system refuses either fallocate mode the backstore writes the zeros instead (file.py); on a file
that cannot punch holes (`deallocates` false) the VPD pages offer neither UNMAP nor WRITE SAME with UNMAP
(LBPU = LBPWS = LBPWS10 = 0), since SBC-3 lets WRITE SAME with UNMAP write the blocks where it cannot unmap them
but an UNMAP that only writes zeros frees nothing. No anchored state (ANC_SUP=0). On a unit that is not thin
(`thin = false`) UNMAP and GET LBA STATUS are not offered and WRITE SAME writes.
"""
from __future__ import annotations

from struct import Struct

from ..backstore.fill import fill
from . import cdb as C
from .data_out import exact_data, parameter_data
from .sbc import read_capacity16, written
from .sense import (ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE, LBA_OUT_OF_RANGE,
                    PARAMETER_LIST_LENGTH_ERROR, ScsiError, invalid_cdb, invalid_parameter)

MAX_UNMAP_BLOCKS = 1 << 20          # per command (Block Limits VPD; libiscsi calls more "insanely big")
MAX_UNMAP_DESCRIPTORS = 256
WRITE_CHUNK = 1 << 20               # bytes of pattern per ring op for WRITE SAME
GET_LBA_STATUS = 0x12

_UNMAP_HEADER = Struct(">HH4x")
_UNMAP_DESCRIPTOR = Struct(">QI4x")
_LBA_STATUS_HEADER = Struct(">I4x")
_LBA_STATUS = Struct(">QIB3x")
MAPPED, DEALLOCATED = 0, 1


def deallocates(unit) -> bool:
    """Whether UNMAP frees the blocks of `unit`: it is thin and its file can punch holes."""
    return unit.thin and unit.backstore.deallocates


def _require_thin(unit) -> None:
    if not unit.thin:
        raise ScsiError(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)


def _after_all(count: int, callback):
    """A completion to be called `count` times; `callback` gets the first error (or None) after the last."""
    state = [count, None]

    def done(error):
        state[0] -= 1
        if error is not None and state[1] is None:
            state[1] = error
        if not state[0]:
            callback(state[1])
    return done


def unmap(target, unit, task):
    """UNMAP, on thin units (the THIN flag of its row)."""
    length = C.unmap(task.cdb)
    data = parameter_data(task, length)
    if not length:
        return b""
    if length < _UNMAP_HEADER.size:
        raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    data = memoryview(data)
    _, descriptor_bytes = _UNMAP_HEADER.unpack_from(data)
    count = min(descriptor_bytes, length - _UNMAP_HEADER.size) // _UNMAP_DESCRIPTOR.size
    if count > MAX_UNMAP_DESCRIPTORS:
        raise invalid_parameter(2)
    ranges, total = [], 0
    for i in range(count):
        offset = _UNMAP_HEADER.size + i * _UNMAP_DESCRIPTOR.size
        lba, blocks = _UNMAP_DESCRIPTOR.unpack_from(data, offset)
        if lba + blocks > unit.blocks:
            raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
        total += blocks
        if total > MAX_UNMAP_BLOCKS:
            raise invalid_parameter(offset + 8)
        if blocks:
            ranges.append((lba, blocks))
    if not ranges:
        return b""
    size = unit.block_size
    done = _after_all(len(ranges), written(task, unit))
    for lba, blocks in ranges:
        unit.backstore.unmap(lba * size, blocks * size, done)
    return None


def write_same_fields(unit, task, flags: int, count: int) -> None:
    if flags & C.WS_ANCHOR:
        raise invalid_cdb(1, 4)
    if flags & C.WS_UNMAP:
        _require_thin(unit)


def make_write_same(layout: C.LbaLayout):
    """WRITE SAME(10)/(16) of up to MAXIMUM WRITE SAME LENGTH blocks (the unit's maximum transfer, checked by the
    target); 0 blocks (WSNZ=0) are every block from the LBA to the last, within that maximum too. With UNMAP on a
    thin unit the blocks are deallocated whatever the data block holds (they read back as zeros)."""
    count_byte = layout.count_byte
    sixteen = layout is C.LBA16

    def write_same(target, unit, task, flags: int, lba: int, count: int):
        if not count:
            count = unit.blocks - lba
            if count > unit.max_transfer_blocks:
                raise invalid_cdb(count_byte)
        size = unit.block_size
        if sixteen and flags & C.WS_NDOB:
            task.transfer_length = 0
            pattern = None
        else:
            pattern = bytes(exact_data(task, size))     # the data-out is one block, no less, no more
            if not any(pattern):
                pattern = None
        if not count:                                   # 0 blocks from the end of the medium
            return b""
        offset, length = lba * size, count * size
        if flags & C.WS_UNMAP:
            unit.backstore.unmap(offset, length, written(task, unit))
        elif pattern is None:
            unit.backstore.write_zeroes(offset, length, written(task, unit))
        else:
            chunk = pattern * max(1, min(WRITE_CHUNK, length) // size)
            fill(unit.backstore.write, offset, length, chunk, written(task, unit))
        return None

    return write_same


def get_lba_status(target, unit, task) -> bytes:
    _require_thin(unit)
    lba, alloc = C.get_lba_status(task.cdb)
    if lba >= unit.blocks:
        raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
    wanted = max(1, (alloc - _LBA_STATUS_HEADER.size) // _LBA_STATUS.size)
    size = unit.block_size
    runs: list[list[int]] = []                          # [first, end, status], block ranges in order
    for offset, length, mapped in unit.backstore.extents(lba * size, (unit.blocks - lba) * size):
        first, end = max(offset // size, lba), -(-(offset + length) // size)
        if runs:
            first = max(first, runs[-1][1])             # a block partly mapped stays with the run before it
        if first >= end:
            continue
        status = MAPPED if mapped else DEALLOCATED
        if runs and runs[-1][2] == status:
            runs[-1][1] = end
        else:
            runs.append([first, end, status])
        if len(runs) > wanted:
            break
    body = b"".join(_LBA_STATUS.pack(first, min(end - first, 0xFFFFFFFF), status)
                    for first, end, status in runs[:wanted])
    return (_LBA_STATUS_HEADER.pack(len(body) + 4) + body)[:alloc]


def service_action_in16(target, unit, task):
    """SERVICE ACTION IN(16): READ CAPACITY(16), or GET LBA STATUS."""
    if task.cdb[1] & 0x1F == GET_LBA_STATUS:
        return get_lba_status(target, unit, task)
    return read_capacity16(target, unit, task)
