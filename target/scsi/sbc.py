"""Block commands (SBC-3): READ/WRITE 6/10/12/16, WRITE ATOMIC(16) (SBC-4), VERIFY and WRITE AND VERIFY 10/12/16,
PRE-FETCH 10/16, READ DEFECT DATA 10/12, SYNCHRONIZE CACHE, READ CAPACITY 10/16.

READ and WRITE are the hot path: the target decodes the CDB once and checks PROTECT, the range and the largest
transfer (the row's `LbaCheck`, op.py), so the handlers of block commands get (flags, lba, count) and make one
backstore call, with a completion closure that hands the backstore's memoryview straight to `task.finish`. Their
unit and task are typed, so that compiled (target/compiled.py) they read them as struct fields.
Handlers return None when the backstore will finish the task, or the data-in bytes (b"" for none) when done at
once.
"""
from __future__ import annotations

import errno
import logging
from functools import partial
from struct import Struct

from coordinator.lograte import RateLimitedLog

from . import cdb as C
from .data_out import block_data, parameter_data
from .sense import (DATA_PROTECT, MEDIUM_ERROR, MISCOMPARE, MISCOMPARE_DURING_VERIFY,
                    SPACE_ALLOCATION_FAILED_WRITE_PROTECT, UNRECOVERED_READ_ERROR, WRITE_ERROR, ScsiError,
                    check_condition, fail, invalid_cdb)
from .lun import LogicalUnit
from .task import GOOD, ScsiTask

log = logging.getLogger(f"ringtgt.{__name__}")
_io_errors = RateLimitedLog(log)
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_CAPACITY10 = Struct(">II")
_CAPACITY16 = Struct(">QIxBH16x")   # LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT; LBPME/LBPRZ
_LBPME_LBPRZ = 0xC000               # READ CAPACITY(16) bytes 14-15: thin, unmapped blocks read as zeros
_DEFECTS10 = Struct(">xB2x")        # PLISTV, GLISTV, list format; list length 0
_DEFECTS12 = Struct(">xB6x")        # … generation 0, list length 0
ATOMIC16 = C.LbaLayout(Struct(">xBQ2xH").unpack_from, 12)   # WRITE ATOMIC(16): flags, LBA, TRANSFER LENGTH


def written(task: ScsiTask, unit: LogicalUnit):
    """Completion for a write, an unmap or a flush of `unit`: GOOD, or the error's sense (`io_failed`). The hot
    path: GOOD is `task.finish(GOOD)` written out (a task starts GOOD, without sense or data, and ends once)."""
    def done(error):
        if error is None:
            task.done(task)
        else:
            io_failed(task, unit, error, WRITE_ERROR)
    return done


def io_failed(task, unit, error: OSError, asc_ascq: int) -> None:
    """A backstore error as CHECK CONDITION with the sense `io_error` gives it."""
    check_condition(task, *io_error(unit, error, asc_ascq))


def io_error(unit, error: OSError, asc_ascq: int, key: int | None = None) -> tuple[int, int]:
    """The sense (key, ASC/ASCQ) of a backstore error: SPACE ALLOCATION FAILED WRITE PROTECT where the file system
    has no space left (SBC-3 thin provisioning: the initiator learns that space ran out, not that the medium is
    bad), under DATA PROTECT; else `asc_ascq` (UNRECOVERED READ ERROR or WRITE ERROR) under MEDIUM ERROR; `key`
    instead where given (COPY ABORTED). Logged with what the error names (operation, path, offset) and its errno,
    once per interval per LUN and sense: a full disk fails every write."""
    if error.errno in _NO_SPACE:
        key, asc_ascq = key or DATA_PROTECT, SPACE_ALLOCATION_FAILED_WRITE_PROTECT
    else:
        key = key or MEDIUM_ERROR
    _io_errors.error((unit, asc_ascq), "LUN %d of %s: %s (errno %d): answered sense %X/%02X/%02X",
                     unit.lun_id, unit.identity.target_iqn, error.strerror, error.errno, key, asc_ascq >> 8,
                     asc_ascq & 0xFF)
    return key, asc_ascq


def read(target, unit: LogicalUnit, task: ScsiTask, flags: int, lba: int, count: int):
    if not count:
        return b""

    def done(result):
        if isinstance(result, OSError):
            io_failed(task, unit, result, UNRECOVERED_READ_ERROR)
        else:                                   # task.finish(GOOD, result) written out, as in `written`
            task.data_in = result
            task.done(task)

    size = unit.block_size
    backstore = unit.backstore
    if task.send_with_read is not None and backstore.sends_with_read:
        backstore.read(lba * size, count * size, done, then_send=partial(task.send_with_read, task))
    else:
        backstore.read(lba * size, count * size, done)
    return None


def write(target, unit: LogicalUnit, task: ScsiTask, flags: int, lba: int, count: int):
    """WRITE: the transport reports residuals against `task.transfer_length`; if it received less data than
    the CDB asks for, only the whole blocks received are written (data_out.py)."""
    size = unit.block_size
    data = block_data(task, count * size, size)
    if data is None:
        return b""
    unit.backstore.write(lba * size, data, bool(flags & C.FUA), written(task, unit))
    return None


def write_atomic_fields(unit, task, flags: int, count: int) -> None:
    """No atomic boundaries (MAXIMUM ATOMIC BOUNDARY SIZE 0): an ATOMIC BOUNDARY field other than 0 is refused."""
    if task.cdb[10] or task.cdb[11]:
        raise invalid_cdb(10)


def write_atomic16(target, unit, task, flags: int, lba: int, count: int):
    """WRITE ATOMIC(16) (SBC-4 5.48), on units whose backstore has `atomic_write` (target/backstore/atomic.py):
    all of the blocks or none, for every reader and across a crash. At most `max_atomic_blocks`, within the
    largest transfer (which the target checked)."""
    if count > unit.max_atomic_blocks:
        raise invalid_cdb(12)
    size = unit.block_size
    data = block_data(task, count * size, size)
    if data is None:
        return b""
    unit.backstore.atomic_write(lba * size, data, written(task, unit))
    return None


def write_and_verify_fields(unit, task, flags: int, count: int) -> None:
    if flags & C.BYTCHK & ~C.BYTCHK_COMPARE:
        raise invalid_cdb(1, 2)


def write_and_verify(target, unit, task, flags: int, lba: int, count: int):
    """WRITE AND VERIFY (SBC-3 5.34-5.36): the blocks are written through to the medium (as FUA) and, with
    BYTCHK, read back and compared with what was written (MISCOMPARE with the offset of the first difference)."""
    size = unit.block_size
    data = block_data(task, count * size, size)
    if data is None:
        return b""
    offset = lba * size
    compare = flags & C.BYTCHK
    finish = written(task, unit)

    def stored(error) -> None:
        if error is not None or not compare:
            finish(error)
        else:
            unit.backstore.read(offset, len(data), _comparer(task, unit, data))

    unit.backstore.write(offset, data, True, stored)
    return None


def _comparer(task, unit, expected):
    """Completion of a read whose data must equal `expected`: GOOD, MISCOMPARE, or MEDIUM ERROR."""
    def done(result) -> None:
        if isinstance(result, OSError):
            io_failed(task, unit, result, UNRECOVERED_READ_ERROR)
            return
        offset = first_difference(expected, result)
        if offset is None:
            task.finish(GOOD)
        else:
            fail(task, ScsiError(MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=offset))
    return done


def verify_fields(unit, task, flags: int, count: int) -> None:
    if flags & C.BYTCHK == C.BYTCHK_RESERVED:
        raise invalid_cdb(1, 2)


def verify(target, unit, task, flags: int, lba: int, count: int):
    """VERIFY (SBC-3 5.27-5.29). BYTCHK 00: the range is checked (the medium is always readable); 01: the
    blocks are read and compared with the data-out; 11: each block is compared with the one block of
    data-out. A difference is MISCOMPARE with the byte offset of the first one in INFORMATION."""
    check = flags & C.BYTCHK
    size = unit.block_size
    if check == C.BYTCHK_NONE:
        task.transfer_length = 0
        return b""
    data = parameter_data(task, size if check == C.BYTCHK_ONE_BLOCK else count * size)
    if not count:
        return b""
    expected = bytes(data[:size]) * count if check == C.BYTCHK_ONE_BLOCK else data[:count * size]
    unit.backstore.read(lba * size, count * size, _comparer(task, unit, expected))
    return None


def first_difference(expected, actual) -> int | None:
    """Offset of the first byte where two equal-length buffers differ, or None when they are equal."""
    if expected == actual:
        return None
    return next(i for i, (a, b) in enumerate(zip(expected, actual)) if a != b)


def synchronize_cache(target, unit, task, flags: int, lba: int, count: int):
    if flags & C.IMMED:
        unit.backstore.flush(_immediate_flushed(unit))
        return b""
    unit.backstore.flush(written(task, unit))
    return None


def prefetch(target, unit, task, flags: int, lba: int, count: int) -> bytes:
    """PRE-FETCH (SBC-3 5.9-5.10) is advisory: the range is checked (by the target) and GOOD returned, which SBC
    defines as "not every block could be placed in the cache" (CONDITION MET would claim they all were). The page
    cache's own read-ahead serves buffered LUNs."""
    return b""


def read_defect_data10(target, unit, task) -> bytes:
    """READ DEFECT DATA(10) (SBC-3 5.11): a virtual disk has no defects; both lists, when asked for, are
    valid and empty, in the format asked for."""
    lists, alloc = C.read_defect_data10(task.cdb)
    return _DEFECTS10.pack(lists)[:alloc]


def read_defect_data12(target, unit, task) -> bytes:
    lists, alloc = C.read_defect_data12(task.cdb)
    return _DEFECTS12.pack(lists)[:alloc]


def _immediate_flushed(unit):
    """Completion of an IMMED flush: GOOD status went out already, so all that is left is to log."""
    def done(error) -> None:
        if error is not None:
            _io_errors.error((unit, "flush"), "LUN %d of %s: SYNCHRONIZE CACHE with IMMED failed: %s (errno %d)",
                             unit.lun_id, unit.identity.target_iqn, error.strerror, error.errno)
    return done


def read_capacity10(target, unit, task) -> bytes:
    C.read_capacity10(task.cdb)
    return _CAPACITY10.pack(min(unit.blocks - 1, 0xFFFFFFFF), unit.block_size)


def read_capacity16(target, unit, task) -> bytes:
    alloc = C.read_capacity16(task.cdb)
    return _CAPACITY16.pack(unit.blocks - 1, unit.block_size, unit.blocks_per_physical.bit_length() - 1,
                            _LBPME_LBPRZ if unit.thin else 0)[:alloc]
