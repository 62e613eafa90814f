"""SANITIZE (SBC-4 5.30, 4.11): OVERWRITE, BLOCK ERASE, CRYPTO ERASE and EXIT FAILURE MODE. CRYPTO ERASE only
on a unit encrypted at rest (`encryption_key`, backstore/encrypted.py): it replaces the key.

A sanitize runs in the worker that received it, in the background of its event loop. From its start to its end
every worker answers the unit's commands, but INQUIRY, REPORT LUNS, REQUEST SENSE and MAINTENANCE IN, with NOT
READY, SANITIZE IN PROGRESS (the state is the medium's, medium.py, decided by the coordinator). Task management
and the end of the session do not stop it (SBC-4 4.11.2): an aborted SANITIZE never answers, the operation goes
on. If it fails (an I/O error; the worker's death, seen by the coordinator) the unit is in sanitize failure
mode: its media commands get MEDIUM ERROR, SANITIZE COMMAND FAILED until a sanitize completes, or until EXIT
FAILURE MODE if the failed one had AUSE set.

OVERWRITE writes the initialization pattern over every block, OVERWRITE COUNT passes (inverted on every other
pass with INVERT, the last pass not inverted), flushing the file after each pass. The unit's `sanitize_rate`
(bytes per second, 0 for no limit) paces it, so that sanitizing one unit leaves the disk to the others, as a
RAID resync limit does. BLOCK ERASE deallocates every block of a thin unit (a punched hole, read back as zeros)
and zeroes a thick one. CRYPTO ERASE writes a new key over the old one: every block written before reads as
noise (WACEREQ 01b: reads succeed). None of them reaches copies the file system or the disk keeps elsewhere (a
copy-on-write file system, an SSD's remapped pages): what a sanitize guarantees here is that no initiator can
read the old data through any LUN.

A sweep submits nothing more once its worker must not touch the unit's medium (`_held`): an RBD LUN whose worker's
RADOS clients fell behind a takeover's OSD map (target/osdmap_sync.py), or a unit taken offline. It then ends failed
(sanitize failure mode, its record already in the store), not paused until the map arrives; and one whose last
operation (the final flush, a BLOCK ERASE's one unmap or write zeroes: minutes on a large RBD image) completes while
the unit is held ends failed too, not sanitized. The writes it made just before (within the worker's wait for the
map) carried the older map, so a fenced node's write still in flight may
land after them on blocks already swept, which a resumed sweep would not go over again; and that wait has no end
librados can promise, while a paused sanitize holds the unit SANITIZE IN PROGRESS on every node. Failure mode is the
side a worker's death already takes: the initiator sanitizes again, a sweep made whole after the map. (A sweep's
writes in the first seconds of a takeover carried the older map even when its worker caught up in time and the sweep
went on: what guards those is that the fenced node had the unit SANITIZE IN PROGRESS too, so it could only have a write
to it in flight from before the sanitize began, as any node's.)
"""
from __future__ import annotations

import errno
import logging
import time
from struct import Struct

from coordinator.unit_state.medium import (EXIT_FAILURE_MODE, SANITIZE, SANITIZE_AUSE, SANITIZE_FAILED, SANITIZED)

from .data_out import parameter_data
from .sense import (ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB, MEDIUM_ERROR, MEDIUM_NOT_PRESENT, NOT_READY,
                    SANITIZE_COMMAND_FAILED, ScsiError, check_condition, invalid_cdb)
from .task import GOOD

log = logging.getLogger(f"ringtgt.{__name__}")

OVERWRITE, BLOCK_ERASE, CRYPTO_ERASE, EXIT_FAILURE = 0x01, 0x02, 0x03, 0x1F
ACTIONS = (OVERWRITE, BLOCK_ERASE, CRYPTO_ERASE, EXIT_FAILURE)
CHUNK = 1 << 20                     # bytes per write of an overwrite pass

_IMMED, _RESERVED, _AUSE = 0x80, 0x40, 0x20
_OVERWRITE_HEADER = Struct(">BxH")
_INVERT, _TEST, _COUNT = 0x80, 0x60, 0x1F


def sanitize(target, unit, task):
    """SANITIZE is refused by the unit's state like a write (MODIFIES), but not in sanitize failure mode, which
    it exists to end: hence no MEDIUM flag, and the ejected medium checked here."""
    if not unit.medium_loaded:
        raise ScsiError(NOT_READY, MEDIUM_NOT_PRESENT)
    cdb = task.cdb
    if cdb[1] & _RESERVED:
        raise invalid_cdb(1, 6)
    for byte in range(2, 7):
        if cdb[byte]:
            raise invalid_cdb(byte)
    action = cdb[1] & 0x1F
    length = task.transfer_length = int.from_bytes(cdb[7:9], "big")
    if action == OVERWRITE:
        sweep = _overwrite(unit, task, length)
    elif action in (BLOCK_ERASE, EXIT_FAILURE) or action == CRYPTO_ERASE and unit.crypto_erasable:
        if length:
            raise invalid_cdb(7)
        if action == EXIT_FAILURE:
            return target.medium_request(unit, task, EXIT_FAILURE_MODE)
        sweep = _block_erase(unit) if action == BLOCK_ERASE else _crypto_erase(unit)
    else:
        raise invalid_cdb(1, 4)
    immediate = bool(cdb[1] & _IMMED)

    def ended(error: OSError | None) -> None:
        if error is not None:
            log.error("SANITIZE of LUN %d failed: %s: the unit is in sanitize failure mode", task.lun,
                      error.strerror or error)

        def reported() -> None:
            if immediate:
                return
            if error is None:
                task.finish(GOOD)
            else:
                check_condition(task, MEDIUM_ERROR, SANITIZE_COMMAND_FAILED)
        target.medium_report(task.lun, SANITIZED if error is None else SANITIZE_FAILED, reported)

    def started() -> None:
        if immediate:
            task.finish(GOOD)
        else:
            task.remote = True          # an abort or reset does not wait for the sanitize, which goes on alone
        sweep(target.call_later, ended)

    return target.medium_request(unit, task, SANITIZE_AUSE if cdb[1] & _AUSE else SANITIZE, started)


def _parameter_error() -> ScsiError:
    """libiscsi's Sanitize.Overwrite expects a bad parameter list (an OVERWRITE COUNT or INITIALIZATION PATTERN
    LENGTH of zero, a pattern longer than a block) refused as INVALID FIELD IN CDB, not IN PARAMETER LIST."""
    return ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)


def _held(unit) -> OSError | None:
    """Why the sweep of `unit` must submit nothing more now (the module's docstring), or None."""
    if unit.becoming_ready:
        return OSError(errno.EAGAIN, "the worker's RADOS clients are behind a takeover's OSD map")
    if unit.offline:
        return OSError(errno.ENODEV, "the unit was taken offline")
    return None


def _overwrite(unit, task, length: int):
    """The sweep of an OVERWRITE with this parameter list (SBC-4 5.30.3), checked first."""
    size = unit.block_size
    if not _OVERWRITE_HEADER.size < length <= size + _OVERWRITE_HEADER.size:
        raise invalid_cdb(7)
    data = parameter_data(task, length)
    flags, pattern_length = _OVERWRITE_HEADER.unpack_from(data)
    count = flags & _COUNT
    if not count or flags & _TEST or not 0 < pattern_length <= size \
            or pattern_length != length - _OVERWRITE_HEADER.size:
        raise _parameter_error()
    pattern = bytes(data[_OVERWRITE_HEADER.size:length])
    block = (pattern * -(-size // len(pattern)))[:size]
    chunk = block * (CHUNK // size)
    inverted = bytes(b ^ 0xFF for b in chunk) if flags & _INVERT else chunk
    store = unit.backstore
    total = unit.blocks * size
    rate = unit.sanitize_rate

    def sweep(call_later, ended) -> None:
        started = time.monotonic()
        position = [0, 0]               # pass, offset

        def next_write(error: OSError | None = None) -> None:
            error = error or _held(unit)
            if error is not None:
                ended(error)
                return
            pass_index, offset = position
            if offset >= total:
                position[:] = [pass_index + 1, 0]
                store.flush(next_write if pass_index + 1 < count else finished)
                return
            length = min(CHUNK, total - offset)
            position[1] = offset + length
            data = inverted if (count - 1 - pass_index) % 2 else chunk      # the last pass is not inverted
            store.write(offset, memoryview(data)[:length], False, paced)

        def finished(error: OSError | None) -> None:
            ended(error or _held(unit))     # held during the last pass's writes or its flush: not a success

        def paced(error: OSError | None) -> None:
            written = position[0] * total + position[1]
            delay = started + written / rate - time.monotonic() if rate and call_later else 0
            if error is None and delay > 0:
                call_later(delay, next_write)
            else:
                next_write(error)

        next_write()
    return sweep


def _crypto_erase(unit):
    def sweep(call_later, ended) -> None:
        try:
            unit.backstore.rekey()
        except OSError as error:
            ended(error)
        else:
            ended(None)
    return sweep


def _block_erase(unit):
    store, total = unit.backstore, unit.blocks * unit.block_size

    def sweep(call_later, ended) -> None:
        def erased(error: OSError | None) -> None:
            if error is not None:
                ended(error)
            else:
                store.flush(lambda error: ended(error or _held(unit)))     # held meanwhile (minutes): failed
        held = _held(unit)
        if held is not None:
            ended(held)
        else:
            (store.unmap if unit.thin else store.write_zeroes)(0, total, erased)
    return sweep
