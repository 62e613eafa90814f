"""COMPARE AND WRITE and ORWRITE (target/scsi/compare_and_write.py): read-modify-writes under the range lock,
one at a time per unit."""
from __future__ import annotations

import struct

from target.scsi import sense as S
from target.scsi.task import GOOD
from tests.scsi_harness import BLOCKS, BS, Harness, assert_good, assert_sense, rw_cdb


def caw_cdb(lba, count=1, flags=0):
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, count, 0, 0)


def test_compare_and_write_writes_only_on_a_match_under_the_range_lock(h):
    h.store.data[2 * BS:3 * BS] = b"\x01" * BS
    assert_good(h.run(caw_cdb(2), data_out=b"\x01" * BS + b"\x02" * BS))
    assert h.store.data[2 * BS:3 * BS] == b"\x02" * BS
    assert h.store.calls == [("lock", 2 * BS, BS), ("read", 2 * BS, BS), ("write", 2 * BS, BS, False),
                             ("unlock", 2 * BS, BS)]
    expected = bytearray(b"\x02" * BS)
    expected[100] = 9
    task = h.run(caw_cdb(2), data_out=bytes(expected) + b"\x03" * BS)
    assert_sense(task, S.MISCOMPARE, S.MISCOMPARE_DURING_VERIFY)
    assert int.from_bytes(task.sense[3:7], "big") == 100
    assert h.store.data[2 * BS:3 * BS] == b"\x02" * BS and h.store.calls[-1][0] == "unlock"
    assert_sense(h.run(caw_cdb(0, count=2), data_out=bytes(4 * BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(13))
    assert_sense(h.run(caw_cdb(BLOCKS), data_out=bytes(2 * BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(h.run(caw_cdb(0), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert_sense(h.run(caw_cdb(0), data_out=bytes(4 * BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)


def test_compare_and_writes_of_a_unit_run_one_at_a_time(h):
    first = h.run(caw_cdb(0), data_out=bytes(BS) + b"\x01" * BS, drain=False)
    second = h.run(caw_cdb(0), data_out=b"\x01" * BS + b"\x02" * BS, drain=False)
    assert [c[0] for c in h.store.calls] == ["lock", "read"]             # the second waits for the first
    h.store.drain()
    assert first.status == GOOD and second.status == GOOD
    assert h.store.data[:BS] == b"\x02" * BS


def test_orwrite_writes_the_or_of_blocks_and_data_under_the_range_lock(h):
    h.store.data[BS:3 * BS] = b"\xA0" * (2 * BS)
    assert_good(h.run(rw_cdb(0x8B, 1, 2, flags=0x08), data_out=b"\x05" * BS + b"\x0A" * BS))
    assert h.store.data[BS:3 * BS] == b"\xA5" * BS + b"\xAA" * BS
    assert h.store.calls == [("lock", BS, 2 * BS), ("read", BS, 2 * BS), ("write", BS, 2 * BS, True),
                             ("unlock", BS, 2 * BS)]
    assert_sense(h.run(rw_cdb(0x8B, 0, 1, flags=0x20), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 7))
    assert_sense(h.run(rw_cdb(0x8B, BLOCKS, 1), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_good(h.run(rw_cdb(0x8B, 0, 0), data_out=b""))


def test_orwrite_waits_for_a_compare_and_write_of_the_unit(h):
    first = h.run(caw_cdb(0), data_out=bytes(BS) + b"\x01" * BS, drain=False)
    second = h.run(rw_cdb(0x8B, 0, 1), data_out=b"\x02" * BS, drain=False)
    assert [c[0] for c in h.store.calls] == ["lock", "read"]
    h.store.drain()
    assert first.status == GOOD and second.status == GOOD
    assert h.store.data[:BS] == b"\x03" * BS


def test_orwrite_refused_on_a_read_only_lun():
    harness = Harness(read_only=True)
    harness.ready()
    assert_sense(harness.run(rw_cdb(0x8B, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
