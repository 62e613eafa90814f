"""WRITE ATOMIC(16) through ScsiTarget.execute: the CDB checks, the Block Limits VPD atomic fields, and a unit
whose store has no atomic writes (a block device) not offering the command."""
import struct

import pytest

from target.scsi import sense as S
from tests.scsi_harness import BS, BLOCKS, Harness, MemoryStore, assert_good, assert_sense

ATOMIC_BLOCKS = 8


class AtomicStore(MemoryStore):
    max_atomic_bytes = ATOMIC_BLOCKS * BS

    def atomic_write(self, offset, data, callback):
        self.calls.append(("atomic", offset, len(data)))
        self.write(offset, data, True, callback)


def write_atomic16(lba, blocks, flags=0, boundary=0):
    return struct.pack(">BBQHHxx", 0x9C, flags, lba, boundary, blocks)


@pytest.fixture
def h():
    harness = Harness(store=AtomicStore())
    harness.ready()
    return harness


def test_writes_through_the_stores_atomic_write(h):
    data = bytes(range(256)) * 2 * ATOMIC_BLOCKS
    assert_good(h.run(write_atomic16(3, ATOMIC_BLOCKS, flags=0x18), data_out=data))     # DPO and FUA allowed
    assert ("atomic", 3 * BS, ATOMIC_BLOCKS * BS) in h.store.calls
    assert h.store.data[3 * BS:(3 + ATOMIC_BLOCKS) * BS] == data
    assert_good(h.run(write_atomic16(0, 0)))


@pytest.mark.parametrize("cdb, asc, field", [
    (write_atomic16(0, ATOMIC_BLOCKS + 1), S.INVALID_FIELD_IN_CDB, S.Field(12)),     # beyond the atomic maximum
    (write_atomic16(0, 1, boundary=1), S.INVALID_FIELD_IN_CDB, S.Field(10)),          # no atomic boundaries
    (write_atomic16(0, 1, flags=0x20), S.INVALID_FIELD_IN_CDB, S.Field(1, 7)),        # WRPROTECT
    (write_atomic16(BLOCKS, 1), S.LBA_OUT_OF_RANGE, None),
    (write_atomic16(1 << 63, 0), S.LBA_OUT_OF_RANGE, None),
])
def test_refusals(h, cdb, asc, field):
    task = h.run(cdb, data_out=bytes(BS))
    assert_sense(task, S.ILLEGAL_REQUEST, asc, field)
    assert not [call for call in h.store.calls if call[0] in ("atomic", "write")]


def test_block_limits_report_the_atomic_maximum(h):
    page = h.run(bytes([0x12, 1, 0xB0, 0, 0xFF, 0])).data_in
    assert struct.unpack_from(">IIIII", page, 44) == (ATOMIC_BLOCKS, 0, 0, 0, 0)


def test_a_store_without_atomic_writes_does_not_offer_it():
    h = Harness()
    h.ready()
    assert_sense(h.run(write_atomic16(0, 1), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_COMMAND_OPERATION_CODE)
    page = h.run(bytes([0x12, 1, 0xB0, 0, 0xFF, 0])).data_in
    assert struct.unpack_from(">I", page, 44) == (0,)
