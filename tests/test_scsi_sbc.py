"""Block commands of target/scsi/sbc.py: READ CAPACITY, READ / WRITE, SYNCHRONIZE CACHE, VERIFY, WRITE AND VERIFY,
PRE-FETCH, READ DEFECT DATA."""
from __future__ import annotations

import struct

import pytest

from target.scsi import sense as S
from tests.scsi_harness import BLOCKS, BS, Harness, MemoryStore, assert_good, assert_sense, rw_cdb, vpd


# -- READ CAPACITY -------------------------------------------------------------------------------------------
def test_read_capacity(h):
    assert h.run(bytes(10).replace(b"\0", b"\x25", 1)).data_in == struct.pack(">II", BLOCKS - 1, BS)
    data = h.run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)).data_in
    assert data == struct.pack(">QI", BLOCKS - 1, BS) + bytes(20)
    assert len(h.run(bytes([0x9E, 0x10]) + bytes(8) + (12).to_bytes(4, "big") + bytes(2)).data_in) == 12
    assert_sense(h.run(bytes([0x9E, 0x11]) + bytes(14)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)


def test_a_physical_block_of_several_logical_ones_is_reported():
    h = Harness(physical_block_size=8 * BS)
    h.ready()
    data = h.run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)).data_in
    assert data[13] & 0x0F == 3                                         # 2^3 logical blocks per physical
    assert struct.unpack_from(">H", vpd(h, 0xB0), 6) == (8,)            # OPTIMAL TRANSFER LENGTH GRANULARITY


def test_read_capacity10_saturates():
    h = Harness(store=MemoryStore(size=(2**32 + 10) * 4096, block_size=4096))
    h.ready()
    assert h.run(b"\x25" + bytes(9)).data_in == struct.pack(">II", 0xFFFFFFFF, 4096)
    data = h.run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)).data_in
    assert struct.unpack_from(">Q", data) == (2**32 + 9,)


# -- READ / WRITE --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("read_op, write_op", [(0x08, 0x0A), (0x28, 0x2A), (0xA8, 0xAA), (0x88, 0x8A)])
def test_round_trip(h, read_op, write_op):
    payload = bytes(range(256)) * (3 * BS // 256)
    assert_good(h.run(rw_cdb(write_op, 5, 3), data_out=payload))
    task = h.run(rw_cdb(read_op, 5, 3))
    assert_good(task)
    assert isinstance(task.data_in, memoryview) and task.data_in == payload
    assert h.store.calls[-1] == ("read", 5 * BS, 3 * BS)


def test_read6_zero_means_256_blocks(h):
    task = h.run(rw_cdb(0x08, 0, 0))
    assert len(task.data_in) == 256 * BS


@pytest.mark.parametrize("opcode", [0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A])
def test_zero_length_transfers_touch_nothing(h, opcode):
    task = h.run(rw_cdb(opcode, BLOCKS, 0), data_out=b"" if opcode & 2 else None)
    assert_good(task)
    assert task.data_in is None and h.store.calls == [] and task.transfer_length in (None, 0)


@pytest.mark.parametrize("opcode", [0x08, 0x28, 0xA8, 0x88, 0x0A, 0x2A, 0xAA, 0x8A])
@pytest.mark.parametrize("lba, count", [(BLOCKS - 1, 2), (BLOCKS, 1), (BLOCKS + 1, 1)])
def test_out_of_range(h, opcode, lba, count):
    data = bytes(count * BS) if opcode & 2 else None
    assert_sense(h.run(rw_cdb(opcode, lba, count), data_out=data), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert h.store.calls == []


def test_out_of_range_with_zero_blocks(h):
    assert_sense(h.run(rw_cdb(0x28, BLOCKS + 1, 0)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(h.run(rw_cdb(0x88, 2**64 - 1, 1)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)


def test_transfer_longer_than_block_limits():
    h = Harness(store=MemoryStore(blocks=40000))
    h.ready()
    assert_sense(h.run(rw_cdb(0x28, 0, 32769)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(7))


@pytest.mark.parametrize("opcode", [0x28, 0xA8, 0x88, 0x2A, 0xAA, 0x8A])
def test_protect_fields_refused(h, opcode):
    data = bytes(BS) if opcode & 2 else None
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x20), data_out=data), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 7))


def test_fua(h):
    h.run(rw_cdb(0x2A, 0, 1, flags=0x08), data_out=bytes(BS))
    h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS))
    assert [call[3] for call in h.store.calls] == [True, False]
    assert_good(h.run(rw_cdb(0x28, 0, 1, flags=0x08)))


def test_write_with_short_data_writes_only_whole_blocks_received(h):
    h.run(rw_cdb(0x2A, 0, 2), data_out=b"a" * 2 * BS)
    task = h.run(rw_cdb(0x2A, 0, 2), data_out=b"b" * BS)            # EDTL one block, CDB two
    assert_good(task)
    assert task.transfer_length == 2 * BS
    assert h.store.data[:2 * BS] == b"b" * BS + b"a" * BS
    task = h.run(rw_cdb(0x2A, 0, 1), data_out=b"c" * 200)           # EDTL 200: never GOOD for a part of a block
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert task.transfer_length == BS and h.store.data[:BS] == b"b" * BS
    task = h.run(rw_cdb(0x2A, 0, 2), data_out=b"c" * (BS + 1))      # a block and a byte: not even the block
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert h.store.data[:2 * BS] == b"b" * BS + b"a" * BS
    task = h.run(rw_cdb(0x2A, 0, 1), data_out=b"")                  # EDTL 0
    assert_good(task)
    assert task.transfer_length == BS and task.data_in is None


def test_write_with_long_data_writes_the_cdb_length(h):
    h.run(rw_cdb(0x2A, 0, 2), data_out=b"a" * 2 * BS)
    task = h.run(rw_cdb(0x2A, 0, 1), data_out=b"b" * 2 * BS)        # EDTL two blocks, CDB one
    assert_good(task)
    assert task.transfer_length == BS
    assert h.store.data[:2 * BS] == b"b" * BS + b"a" * BS


def test_read_only_lun():
    h = Harness(read_only=True)
    h.ready()
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
    assert_sense(h.run(rw_cdb(0x0A, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
    assert_good(h.run(rw_cdb(0x28, 0, 1)))
    header = h.run(bytes([0x1A, 0, 0x3F, 0, 255, 0])).data_in
    assert header[2] == 0x80 | 0x10


def test_backstore_errors_become_medium_errors(h):
    h.store.error = OSError(5, "EIO")
    assert_sense(h.run(rw_cdb(0x28, 0, 1)), S.MEDIUM_ERROR, S.UNRECOVERED_READ_ERROR)
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.MEDIUM_ERROR, S.WRITE_ERROR)
    assert_sense(h.run(rw_cdb(0x35, 0, 0)), S.MEDIUM_ERROR, S.WRITE_ERROR)


def test_completion_is_asynchronous(h):
    task = h.run(rw_cdb(0x28, 0, 1), drain=False)
    assert task.data_in is None and len(h.store.pending) == 1
    h.store.drain()
    assert len(task.data_in) == BS


# -- SYNCHRONIZE CACHE, VERIFY, START STOP, PREVENT ALLOW ------------------------------------------------------
@pytest.mark.parametrize("opcode", [0x35, 0x91])
def test_synchronize_cache(h, opcode):
    assert_good(h.run(rw_cdb(opcode, 0, 0)))
    assert h.store.calls == [("flush",)]
    assert_sense(h.run(rw_cdb(opcode, BLOCKS - 1, 2)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    task = h.run(rw_cdb(opcode, 0, 1, flags=0x02), drain=False)      # IMMED: status before the flush
    assert_good(task)
    assert len(h.store.pending) == 1
    h.store.error = OSError(5, "EIO")
    h.store.drain()


@pytest.mark.parametrize("opcode", [0x2F, 0xAF, 0x8F])
def test_verify_without_byte_check_only_checks_the_range(h, opcode):
    assert_good(h.run(rw_cdb(opcode, 0, 10)))
    assert_sense(h.run(rw_cdb(opcode, BLOCKS, 1)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x04)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 2))                                  # BYTCHK 10b is reserved
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x20)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 7))                                  # VRPROTECT: no protection information
    assert h.store.calls == []


@pytest.mark.parametrize("opcode", [0x2F, 0xAF, 0x8F])
def test_verify_compares_blocks_with_the_data_out(h, opcode):
    h.store.data[BS:3 * BS] = bytes(range(256)) * (2 * BS // 256)
    same = bytes(h.store.data[BS:3 * BS])
    task = h.run(rw_cdb(opcode, 1, 2, flags=0x02), data_out=same)
    assert_good(task)
    assert task.transfer_length == 2 * BS
    changed = bytearray(same)
    changed[BS + 7] ^= 0xFF
    task = h.run(rw_cdb(opcode, 1, 2, flags=0x02), data_out=bytes(changed))
    assert_sense(task, S.MISCOMPARE, S.MISCOMPARE_DURING_VERIFY)
    assert task.sense[0] & 0x80 and int.from_bytes(task.sense[3:7], "big") == BS + 7   # VALID, INFORMATION
    assert_sense(h.run(rw_cdb(opcode, 1, 2, flags=0x02), data_out=same[:BS]), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_COMMAND_IU)


@pytest.mark.parametrize("opcode", [0x2F, 0xAF, 0x8F])
def test_verify_one_block_against_every_block(h, opcode):
    h.store.data[0:3 * BS] = b"\xAB" * (3 * BS)
    task = h.run(rw_cdb(opcode, 0, 3, flags=0x06), data_out=b"\xAB" * BS)
    assert_good(task)
    assert task.transfer_length == BS
    h.store.data[2 * BS + 1] = 0
    task = h.run(rw_cdb(opcode, 0, 3, flags=0x06), data_out=b"\xAB" * BS)
    assert_sense(task, S.MISCOMPARE, S.MISCOMPARE_DURING_VERIFY)
    assert int.from_bytes(task.sense[3:7], "big") == 2 * BS + 1


@pytest.mark.parametrize("opcode", [0x2E, 0xAE, 0x8E])
def test_write_and_verify_writes_through_and_compares_when_asked(h, opcode):
    data = bytes(range(256)) * (2 * BS // 256)
    assert_good(h.run(rw_cdb(opcode, 4, 2), data_out=data))
    assert h.store.calls == [("write", 4 * BS, 2 * BS, True)]           # through to the medium, no read back
    assert h.store.data[4 * BS:6 * BS] == data
    h.store.calls.clear()
    assert_good(h.run(rw_cdb(opcode, 4, 2, flags=0x02), data_out=data))
    assert h.store.calls == [("write", 4 * BS, 2 * BS, True), ("read", 4 * BS, 2 * BS)]
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x04), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 2))
    assert_sense(h.run(rw_cdb(opcode, BLOCKS, 1), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    read_only = Harness(read_only=True)
    read_only.ready()
    assert_sense(read_only.run(rw_cdb(opcode, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)


@pytest.mark.parametrize("opcode", [0x34, 0x90])
def test_prefetch_checks_the_range(h, opcode):
    assert_good(h.run(rw_cdb(opcode, 0, BLOCKS)))
    assert_sense(h.run(rw_cdb(opcode, BLOCKS - 1, 2)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert h.store.calls == []


def test_read_defect_data_reports_empty_lists(h):
    data = h.run(bytes([0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 64, 0])).data_in
    assert data == bytes([0, 0x1D, 0, 0])                                # PLISTV, GLISTV, format 5, none
    data = h.run(bytes([0xB7, 0x08 | 0x04, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0])).data_in
    assert data == bytes([0, 0x0C]) + bytes(6)
    assert h.run(bytes([0x37, 0, 0x18, 0, 0, 0, 0, 0, 2, 0])).data_in == bytes([0, 0x18])   # allocation length
