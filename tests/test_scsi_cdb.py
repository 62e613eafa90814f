"""CDB decoders: every layout, and the bad fields each one refuses."""
import pytest

from target.scsi import cdb as C
from target.scsi.sense import INVALID_FIELD_IN_CDB, Field, ScsiError


def refused(decode, cdb: bytes, *args) -> Field:
    with pytest.raises(ScsiError) as info:
        decode(cdb, *args)
    assert info.value.asc_ascq == INVALID_FIELD_IN_CDB
    return info.value.field


@pytest.mark.parametrize("opcode, length", [(0x08, 6), (0x28, 10), (0x55, 10), (0x88, 16), (0xA8, 12),
                                            (0x9E, 16), (0xA0, 12), (0x7F, 0)])
def test_cdb_length_by_group(opcode, length):
    assert C.CDB_LENGTH[opcode >> 5] == length


def test_lba6_masks_the_lba_and_zero_means_256():
    assert C.LBA6.decode(bytes([0x08, 0xFF, 0x12, 0x34, 0, 0])) == (0, 0x1F1234, 256)
    assert C.LBA6.decode(bytes([0x0A, 0, 0, 7, 9, 0])) == (0, 7, 9)


@pytest.mark.parametrize("layout, cdb, expected", [
    (C.LBA10, bytes([0x28, 0x08, 0x12, 0x34, 0x56, 0x78, 0x00, 0x01, 0x02, 0]), (0x08, 0x12345678, 0x0102)),
    (C.LBA12, bytes([0xA8, 0xE0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]), (0xE0, 256, 0x10000)),
    (C.LBA16, bytes([0x88, 0x10]) + (2**40 + 5).to_bytes(8, "big") + (3).to_bytes(4, "big") + b"\0\0",
     (0x10, 2**40 + 5, 3)),
])
def test_lba_layouts(layout, cdb, expected):
    assert layout.decode(cdb.ljust(16, b"\0")) == expected


def test_transfer_length_field_pointers():
    assert [layout.count_byte for layout in (C.LBA6, C.LBA10, C.LBA12, C.LBA16)] == [4, 7, 6, 10]


def test_inquiry():
    assert C.inquiry(bytes([0x12, 0, 0, 0, 36, 0])) == (False, 0, 36)
    assert C.inquiry(bytes([0x12, 1, 0x83, 0x01, 0x00, 0])) == (True, 0x83, 256)
    assert refused(C.inquiry, bytes([0x12, 0, 0x80, 0, 36, 0])) == Field(2)
    assert refused(C.inquiry, bytes([0x12, 2, 0, 0, 36, 0])) == Field(1, 1)


def test_request_sense():
    assert C.request_sense(bytes([0x03, 0, 0, 0, 18, 0])) == 18
    assert refused(C.request_sense, bytes([0x03, 1, 0, 0, 18, 0])) == Field(1, 0)


def test_report_luns():
    cdb = bytes([0xA0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    assert C.report_luns(cdb) == (2, 256)
    assert refused(C.report_luns, bytes([0xA0, 0, 3]) + bytes(9)) == Field(2)


def test_read_capacity10_pmi():
    C.read_capacity10(bytes(10))
    C.read_capacity10(bytes([0x25, 0, 0, 0, 0, 9, 0, 0, 1, 0]))
    assert refused(C.read_capacity10, bytes([0x25, 0, 0, 0, 0, 9, 0, 0, 0, 0])) == Field(2)


def test_read_capacity16():
    cdb = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + b"\0\0"
    assert C.read_capacity16(cdb) == 32
    assert refused(C.read_capacity16, bytes([0x9E, 0x11]) + bytes(14)) == Field(1, 4)
    assert refused(C.read_capacity16, bytes([0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 1]) + bytes(6)) == Field(2)


def test_mode_sense():
    assert C.mode_sense6(bytes([0x1A, 0x08, 0x48, 0xFF, 200, 0])) == (True, False, 1, 0x08, 0xFF, 200)
    assert C.mode_sense10(bytes([0x5A, 0x10, 0xFF, 0, 0, 0, 0, 0x01, 0x00, 0])) == \
        (False, True, 3, 0x3F, 0, 256)


def test_mode_select():
    assert C.mode_select6(bytes([0x15, 0x10, 0, 0, 24, 0])) == 24
    assert C.mode_select10(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0x01, 0x02, 0])) == 0x102
    assert refused(C.mode_select6, bytes([0x15, 0x00, 0, 0, 24, 0])) == Field(1, 4)
    assert refused(C.mode_select10, bytes([0x55, 0x11]) + bytes(8)) == Field(1, 0)


def test_start_stop_and_prevent_allow():
    assert C.start_stop_unit(bytes([0x1B, 0, 0, 0, 0x01, 0]), False) is None      # START without LOEJ
    assert refused(C.start_stop_unit, bytes([0x1B, 0, 0, 0, 0x02, 0]), False) == Field(4, 1)
    assert C.start_stop_unit(bytes([0x1B, 0, 0, 0, 0x02, 0]), True) is False      # eject
    assert C.start_stop_unit(bytes([0x1B, 1, 0, 0, 0x07, 0]), True) is True       # load (IMMED, NO_FLUSH)
    assert C.start_stop_unit(bytes([0x1B, 0, 0, 0, 0x32, 0]), False) is None      # a power condition
    assert C.prevent_allow(bytes(6), False) is False
    assert refused(C.prevent_allow, bytes([0x1E, 0, 0, 0, 0x01, 0]), False) == Field(4, 0)
    assert C.prevent_allow(bytes([0x1E, 0, 0, 0, 0x01, 0]), True) is True
    assert refused(C.prevent_allow, bytes([0x1E, 0, 0, 0, 0x02, 0]), True) == Field(4, 1)
