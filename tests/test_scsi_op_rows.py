"""The command table's rows (op.py): the checks a row asks for are made by ScsiTarget.execute for every row that
has one, so an opcode added as a row gets them; what a row says reaches the transport and the reservation check."""
from __future__ import annotations

import pytest

from target.scsi import sense as S
from target.scsi.lun import MAX_TRANSFER_BYTES
from target.scsi.target import OPS, ScsiTarget
from tests.scsi_harness import BS, Harness, MemoryStore, assert_sense

LBA_ROWS = [opcode for opcode, op in enumerate(OPS) if op.lba is not None]
MAX_BLOCKS = MAX_TRANSFER_BYTES // BS


class AtomicStore(MemoryStore):
    max_atomic_bytes = 64 * BS              # a unit serving WRITE ATOMIC; nothing here reaches the store


def ready(store) -> Harness:
    harness = Harness(store=store)
    harness.ready()
    return harness


@pytest.fixture
def h():
    return ready(AtomicStore())


@pytest.fixture
def huge():
    return ready(AtomicStore(size=1 << 40))     # 2^31 blocks, never allocated: nothing here reaches the store


def cdb_for(opcode: int, byte1: int = 0, lba_ff: bool = False, count: int = 0) -> bytes:
    """A CDB of the row's length: byte 1, an LBA past our end (bytes 2-3 are LBA bytes in every layout), and
    `count` written into the row's block count field, whose width is found through the row's own decoder."""
    op = OPS[opcode]
    cdb = bytearray(op.length)
    cdb[0], cdb[1] = opcode, byte1
    if lba_ff:
        cdb[2:4] = b"\xff\xff"
    if count:
        probe = bytearray(cdb)
        probe[op.lba.count_byte] = 1
        width = op.lba.decode(bytes(probe))[2].bit_length() // 8 + 1
        cdb[op.lba.count_byte:op.lba.count_byte + width] = count.to_bytes(width, "big")
    return bytes(cdb)


def run(h, cdb):
    return h.run(cdb, edtl=0)               # no data: nothing may get as far as asking for it


@pytest.mark.parametrize("opcode", [opcode for opcode in LBA_ROWS if OPS[opcode].lba.protect
                                    and OPS[opcode].lba.decode(cdb_for(opcode, byte1=0xE0))[0]])   # not READ(6)
def test_every_row_that_has_protect_bits_refuses_protection_information(h, opcode):
    cdb = cdb_for(opcode, byte1=0xE0)
    assert_sense(run(h, cdb), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(1, 7))
    assert h.store.calls == []


@pytest.mark.parametrize("opcode", LBA_ROWS)
def test_every_row_with_an_lba_checks_the_range(h, opcode):
    cdb = cdb_for(opcode, lba_ff=True)
    _, lba, count = OPS[opcode].lba.decode(cdb)
    assert lba + count > h.unit.blocks
    assert_sense(run(h, cdb), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert h.store.calls == []


@pytest.mark.parametrize("opcode", [opcode for opcode in LBA_ROWS if OPS[opcode].lba.held
                                    and OPS[opcode].length > 6])      # a 6-byte CDB cannot ask for that many
def test_every_held_row_is_held_to_the_largest_transfer(huge, opcode):
    cdb = cdb_for(opcode, count=MAX_BLOCKS + 1)
    assert OPS[opcode].lba.decode(cdb)[2] == MAX_BLOCKS + 1
    assert_sense(run(huge, cdb), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(OPS[opcode].lba.count_byte))


def test_only_sanitize_is_unit_wide():
    assert [opcode for opcode in range(256) if ScsiTarget.unit_wide(bytes([opcode]))] == [0x48]


def test_a_command_the_unit_does_not_serve_is_refused_after_its_state():
    """UNMAP on a unit that is not thin: INVALID COMMAND OPERATION CODE, but a write-protected unit says so
    first, as it did when the handler refused it (the refusal now comes from the row's THIN flag)."""
    unmap = cdb_for(0x42)
    thick = Harness()
    thick.ready()
    assert_sense(thick.run(unmap, edtl=0), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)
    read_only = Harness(read_only=True)
    read_only.ready()
    assert_sense(read_only.run(unmap, edtl=0), S.DATA_PROTECT, S.WRITE_PROTECTED)
