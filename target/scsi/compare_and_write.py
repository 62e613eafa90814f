"""The read-modify-write commands: COMPARE AND WRITE (SBC-3 5.2, VMware's ATS) reads the blocks, compares
them with the first half of the data-out, and only if equal writes the second half (a difference is MISCOMPARE
with its offset); ORWRITE(16) (SBC-3 5.8) writes the bitwise OR of the blocks and the data-out.

Atomicity: the read-modify-writes of a unit run one at a time in a worker (`CompareAndWriteLock`), and each
holds an OFD write lock on its byte range of the backing file (F_OFD_SETLK, taken without blocking the
worker and retried every millisecond), so one through another worker process, which has its own open file
description, waits for it. Ordinary WRITEs take no lock: they are not serialised against a read-modify-write
in flight (SBC asks that they be); ATS users (VMFS heartbeats and locks) change those blocks only with
COMPARE AND WRITE. A backstore with a `compare_and_write` of its own (RBD: RADOS runs it on the OSD) gets the
command whole instead, atomic against every client of the store.
"""
from __future__ import annotations

from collections import deque
from struct import Struct

from . import cdb as C
from .data_out import block_data, exact_data
from .sbc import first_difference, io_failed, written
from .sense import MISCOMPARE, MISCOMPARE_DURING_VERIFY, UNRECOVERED_READ_ERROR, ScsiError, fail, invalid_cdb

MAX_COMPARE_AND_WRITE_BLOCKS = 1    # Block Limits VPD; what ATS sends
RETRY_SECONDS = 0.001               # how soon a range locked by another worker is tried again
LAYOUT = C.LbaLayout(Struct(">xBQ3xB").unpack_from, 13)    # flags, LBA, NUMBER OF LOGICAL BLOCKS


class CompareAndWriteLock:
    """Runs the COMPARE AND WRITEs of one unit in this worker one after another, each under a byte-range
    lock on the backstore that other processes respect."""

    def __init__(self, backstore, call_later):
        self._backstore = backstore
        self._call_later = call_later       # (seconds, fn): the worker's timer
        self._waiting: deque = deque()
        self._busy = False

    def run(self, offset: int, length: int, critical) -> None:
        """`critical(release)` once the range is ours; it must call `release()` exactly once."""
        self._waiting.append((offset, length, critical))
        if not self._busy:
            self._next()

    def _next(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        self._busy = True
        offset, length, critical = self._waiting[0]
        if not self._backstore.try_lock(offset, length):
            self._call_later(RETRY_SECONDS, self._next)
            return
        self._waiting.popleft()

        def release() -> None:
            self._backstore.unlock(offset, length)
            self._next()
        critical(release)


def compare_and_write_fields(unit, task, flags: int, count: int) -> None:
    """Too many blocks, or data for none (a count that overflowed its byte)."""
    if count > MAX_COMPARE_AND_WRITE_BLOCKS or not count and task.expected_length:
        raise invalid_cdb(13)


def compare_and_write(target, unit, task, flags: int, lba: int, count: int):
    size = unit.block_size
    length = count * size
    if not count:
        task.transfer_length = 0
        return b""
    data = exact_data(task, 2 * length)                 # the blocks to compare and to write, nothing else
    expected, new = bytes(data[:length]), bytes(data[length:2 * length])

    def compared(old) -> bytes:
        difference = first_difference(expected, old)
        if difference is not None:
            raise ScsiError(MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=difference)
        return new

    if hasattr(unit.backstore, "compare_and_write"):
        _store_compare_and_write(unit, task, lba * size, expected, new)
    else:
        _read_modify_write(target, unit, task, lba * size, length, bool(flags & C.FUA), compared)
    return None


def _store_compare_and_write(unit, task, offset: int, expected: bytes, new: bytes) -> None:
    finish = written(task, unit)

    def done(outcome) -> None:
        if isinstance(outcome, int):
            fail(task, ScsiError(MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=outcome))
        else:
            finish(outcome)
    unit.backstore.compare_and_write(offset, expected, new, done)


def _read_modify_write(target, unit, task, offset: int, length: int, fua: bool, modify) -> None:
    """Under the unit's range lock: read the range, write `modify(old)` over it (a ScsiError it raises is the
    answer instead), then let the next one in."""
    def critical(release) -> None:
        def modified(old) -> None:
            if isinstance(old, OSError):
                release()
                io_failed(task, unit, old, UNRECOVERED_READ_ERROR)
                return
            try:
                new = modify(old)
            except ScsiError as error:
                release()
                fail(task, error)
                return
            finish = written(task, unit)

            def stored(error) -> None:
                release()
                finish(error)
            unit.backstore.write(offset, new, fua, stored)

        unit.backstore.read(offset, length, modified)

    _lock(target, unit).run(offset, length, critical)


def _lock(target, unit) -> CompareAndWriteLock:
    if unit.caw_lock is None:
        unit.caw_lock = CompareAndWriteLock(unit.backstore, target.call_later)
    return unit.caw_lock


def orwrite(target, unit, task, flags: int, lba: int, count: int):
    """ORWRITE(16): each block becomes (block OR data-out), atomically against other read-modify-writes."""
    size = unit.block_size
    data = block_data(task, count * size, size)
    if data is None:
        return b""
    length = len(data)
    mask = int.from_bytes(data, "little")
    _read_modify_write(target, unit, task, lba * size, length, bool(flags & C.FUA),
                       lambda old: (int.from_bytes(old, "little") | mask).to_bytes(length, "little"))
    return None
