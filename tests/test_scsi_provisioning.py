"""Thin provisioning commands on a unit over an in-memory store with holes: UNMAP, WRITE SAME 10/16 (pattern,
UNMAP, NDOB, the one-block data-out), GET LBA STATUS, READ CAPACITY(16)'s provisioning fields."""
import struct

import pytest

from target.scsi import sense as S
from tests.scsi_harness import BLOCKS, BS, Harness, MemoryStore, assert_good, assert_sense, vpd


class ThinStore(MemoryStore):
    """MemoryStore with holes: unmapped bytes read as zeros and are reported as deallocated extents."""

    deallocates = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mapped = bytearray(b"\1" * len(self.data))

    def write(self, offset, data, fua, callback):
        self.mapped[offset:offset + len(data)] = b"\1" * len(data)
        super().write(offset, data, fua, callback)

    def unmap(self, offset, length, callback):
        self.calls.append(("unmap", offset, length))
        self.data[offset:offset + length] = bytes(length)
        self.mapped[offset:offset + length] = bytes(length)
        self.pending.append(lambda: callback(None))

    def write_zeroes(self, offset, length, callback):
        self.calls.append(("zero", offset, length))
        self.data[offset:offset + length] = bytes(length)
        self.mapped[offset:offset + length] = b"\1" * length
        self.pending.append(lambda: callback(None))

    def extents(self, offset, length):
        end = offset + length
        while offset < end:
            state = self.mapped[offset]
            stop = offset
            while stop < end and self.mapped[stop] == state:
                stop += 1
            yield offset, stop - offset, bool(state)
            offset = stop


@pytest.fixture
def thin():
    harness = Harness(store=ThinStore(), thin=True)
    harness.ready()
    return harness


def ws10(lba, count, flags=0):
    return struct.pack(">BBIBHB", 0x41, flags, lba, 0, count, 0)


def ws16(lba, count, flags=0):
    return struct.pack(">BBQIBB", 0x93, flags, lba, count, 0, 0)


def unmap_cdb(length):
    return struct.pack(">BB4xBHB", 0x42, 0, 0, length, 0)


def unmap_list(*ranges):
    body = b"".join(struct.pack(">QI4x", lba, count) for lba, count in ranges)
    return struct.pack(">HH4x", len(body) + 6, len(body)) + body


def lba_status(h, lba, alloc=64):
    task = h.run(struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0))
    assert_good(task)
    data = task.data_in
    count = (struct.unpack_from(">I", data)[0] - 4) // 16
    return [struct.unpack_from(">QIB", data, 8 + 16 * i) for i in range(count)]


def test_write_same_writes_the_block_over_the_range(thin):
    block = bytes(range(256)) * 2
    assert_good(thin.run(ws10(4, 3), data_out=block))
    assert thin.store.data[4 * BS:7 * BS] == block * 3
    assert_good(thin.run(ws16(4, 1), data_out=bytes(BS)))              # zeros: a zero range, no write
    assert thin.store.calls[-1] == ("zero", 4 * BS, BS)
    assert_good(thin.run(ws16(5, 2, flags=0x01)))                      # NDOB: zeros, no data-out at all
    assert thin.store.data[4 * BS:7 * BS] == bytes(3 * BS)


@pytest.mark.parametrize("cdb", [ws10(0, 1, flags=0x08), ws16(0, 1, flags=0x08)])
def test_write_same_with_unmap_deallocates(thin, cdb):
    thin.store.data[:BS] = b"\xFF" * BS
    assert_good(thin.run(cdb, data_out=b"\xA6" * BS))                  # the block's content does not matter
    assert thin.store.calls[-1] == ("unmap", 0, BS) and thin.store.data[:BS] == bytes(BS)


@pytest.mark.parametrize("length", [BS // 2, 2 * BS, 0])
def test_write_same_data_out_is_exactly_one_block(thin, length):
    task = thin.run(ws10(0, 1, flags=0x08), data_out=bytes(length))
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert thin.store.calls == []


def test_write_same_of_0_blocks_writes_to_the_end_of_the_medium():
    h = Harness(store=ThinStore(blocks=64), thin=True)
    h.ready()
    assert_good(h.run(ws10(60, 0), data_out=b"\x07" * BS))
    assert h.store.data[60 * BS:] == b"\x07" * (4 * BS) and not any(h.store.data[:60 * BS])
    assert_good(h.run(ws16(64, 0), data_out=b"\x07" * BS))                   # from the end: nothing
    assert_sense(h.run(ws16(65, 0), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_good(h.run(ws16(32, 0, flags=0x08), data_out=bytes(BS)))            # UNMAP to the end
    assert ("unmap", 32 * BS, 32 * BS) in h.store.calls
    big = Harness(store=MemoryStore(size=65536 * BS))                           # more than a WRITE SAME may write
    big.ready()
    assert_sense(big.run(ws10(0, 0), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(7))


def test_write_same_limits(thin):
    assert_sense(thin.run(ws16(BLOCKS - 1, 2), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(thin.run(ws10(0, 1, flags=0x10), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 4))                 # ANCHOR
    assert_sense(thin.run(ws10(0, 1, flags=0x20), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 7))                 # WRPROTECT


def test_unmap_and_get_lba_status(thin):
    assert lba_status(thin, 0) == [(0, BLOCKS, 0)]
    data = unmap_list((8, 8), (32, 16))
    assert_good(thin.run(unmap_cdb(len(data)), data_out=data))
    assert ("unmap", 8 * BS, 8 * BS) in thin.store.calls and ("unmap", 32 * BS, 16 * BS) in thin.store.calls
    assert lba_status(thin, 0) == [(0, 8, 0), (8, 8, 1), (16, 16, 0)]  # as many as the allocation length holds
    assert lba_status(thin, 40, alloc=24) == [(40, 8, 1)]
    assert_sense(thin.run(struct.pack(">BBQIBB", 0x9E, 0x12, BLOCKS, 64, 0, 0)), S.ILLEGAL_REQUEST,
                 S.LBA_OUT_OF_RANGE)


def test_unmap_refusals(thin):
    data = unmap_list((BLOCKS - 1, 2))
    assert_sense(thin.run(unmap_cdb(len(data)), data_out=data), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(thin.run(unmap_cdb(4), data_out=bytes(4)), S.ILLEGAL_REQUEST, S.PARAMETER_LIST_LENGTH_ERROR)
    assert_good(thin.run(unmap_cdb(0)))                                 # nothing to do
    assert not any(call[0] == "unmap" for call in thin.store.calls)


def test_a_unit_that_is_not_thin_offers_none_of_it():
    h = Harness()
    h.ready()
    for cdb, data in ((unmap_cdb(24), unmap_list((0, 1))), (ws10(0, 1, flags=0x08), bytes(BS))):
        assert_sense(h.run(cdb, data_out=data), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)
    assert_sense(h.run(struct.pack(">BBQIBB", 0x9E, 0x12, 0, 64, 0, 0)), S.ILLEGAL_REQUEST,
                 S.INVALID_COMMAND_OPERATION_CODE)
    capacity = h.run(struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)).data_in
    assert capacity[14] & 0xC0 == 0


def test_read_capacity16_reports_thin_provisioning(thin):
    capacity = thin.run(struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)).data_in
    assert capacity[14] & 0xC0 == 0xC0                                 # LBPME, LBPRZ


def test_out_of_space_is_space_allocation_failed_logged_once(thin, caplog):
    """ENOSPC under a thin LUN: DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (SBC-3), for writes, WRITE SAME
    and flushes alike; the first failure is logged with what the error names and its errno, the next ones of the
    same LUN counted, not logged."""
    thin.store.error = OSError(28, "write /images/lun0 at offset 4096: No space left on device")
    for _ in range(50):
        assert_sense(thin.run(bytes([0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0]), data_out=bytes(BS)), S.DATA_PROTECT,
                     S.SPACE_ALLOCATION_FAILED_WRITE_PROTECT)
    assert_sense(thin.run(ws10(0, 2), data_out=b"\1" * BS), S.DATA_PROTECT, S.SPACE_ALLOCATION_FAILED_WRITE_PROTECT)
    assert_sense(thin.run(bytes([0x35]) + bytes(9)), S.DATA_PROTECT, S.SPACE_ALLOCATION_FAILED_WRITE_PROTECT)
    lines = [r.getMessage() for r in caplog.records if "No space left" in r.getMessage()]
    assert len(lines) == 1 and "/images/lun0 at offset 4096" in lines[0] and "errno 28" in lines[0], lines


def test_other_io_errors_are_medium_errors_logged_once_per_kind(thin, caplog):
    thin.store.error = OSError(5, "read /images/lun0 at offset 0: Input/output error")
    for _ in range(3):
        assert_sense(thin.run(bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])), S.MEDIUM_ERROR, S.UNRECOVERED_READ_ERROR)
        assert_sense(thin.run(bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), data_out=bytes(BS)), S.MEDIUM_ERROR,
                     S.WRITE_ERROR)
    lines = [r.getMessage() for r in caplog.records if "Input/output error" in r.getMessage()]
    assert len(lines) == 2 and all("errno 5" in line for line in lines)


def test_a_file_that_cannot_punch_holes_offers_no_unmap(thin):
    """Thin, but UNMAP would only write zeros: LBPU, LBPWS and LBPWS10 clear, no unmap limits; LBPRZ and the
    thin provisioning type stay (unwritten blocks are holes that read as zeros)."""
    assert vpd(thin, 0xB2)[5] == 0xE4 and vpd(thin, 0xB0)[20:28] != bytes(8)
    thin.store.deallocates = False
    page = vpd(thin, 0xB2)
    assert page[5] == 0x04 and page[6] & 0x07 == 0x02
    assert vpd(thin, 0xB0)[20:28] == bytes(8)           # MAXIMUM UNMAP LBA COUNT and BLOCK DESCRIPTOR COUNT
