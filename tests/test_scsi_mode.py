"""MODE SENSE and MODE SELECT (target/scsi/mode.py)."""
from __future__ import annotations

import struct

from target.scsi import sense as S
from tests.scsi_harness import BLOCKS, BS, TUR, assert_good, assert_sense, rw_cdb


# -- MODE SENSE / MODE SELECT ------------------------------------------------------------------------------
def mode_sense6(h, page=0x3F, pc=0, dbd=False, subpage=0, alloc=255, nexus="i1"):
    return h.run(bytes([0x1A, 0x08 if dbd else 0, pc << 6 | page, subpage, alloc, 0]), nexus=nexus)


def test_mode_sense6_all_pages(h):
    data = mode_sense6(h).data_in
    assert data[0] == len(data) - 1 and data[1] == 0 and data[2] == 0x10 and data[3] == 8
    assert data[4:12] == struct.pack(">I", BLOCKS) + b"\0" + BS.to_bytes(3, "big")
    pages = data[12:]
    assert [pages[0], pages[20], pages[32]] == [0x08, 0x0A, 0x1C]
    assert pages[1] == 0x12 and pages[2] & 0x04                        # WCE reflects write_cache=True
    assert len(pages) == 20 + 12 + 12


def test_mode_sense6_variants(h):
    caching = mode_sense6(h, page=0x08, dbd=True).data_in
    assert caching[3] == 0 and caching[4] == 0x08 and len(caching) == 4 + 20
    changeable = mode_sense6(h, page=0x08, pc=1, dbd=True).data_in
    assert changeable[4 + 2] == 0x04 and not any(changeable[4 + 3:])
    assert mode_sense6(h, subpage=0xFF).data_in == mode_sense6(h).data_in
    assert len(mode_sense6(h, alloc=4).data_in) == 4
    assert_sense(mode_sense6(h, pc=3), S.ILLEGAL_REQUEST, S.SAVING_PARAMETERS_NOT_SUPPORTED)
    assert_sense(mode_sense6(h, page=0x19), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 5))
    assert_sense(mode_sense6(h, subpage=1), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(3))
    h.store.write_cache = False
    assert not mode_sense6(h, page=0x08, dbd=True).data_in[6] & 0x04
    assert mode_sense6(h, page=0x08, pc=2, dbd=True).data_in[6] & 0x04  # default: as configured


def test_mode_sense10_long_lba(h):
    data = h.run(bytes([0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0])).data_in
    assert struct.unpack_from(">HBBBxH", data) == (len(data) - 2, 0, 0x10, 1, 16)
    assert data[8:24] == struct.pack(">Q4xI", BLOCKS, BS)
    assert data[24] == 0x08
    short = h.run(bytes([0x5A, 0x00, 0x08, 0, 0, 0, 0, 1, 0, 0])).data_in
    assert struct.unpack_from(">HBBBxH", short)[3:] == (0, 8)
    assert len(short) == 8 + 8 + 20


def caching_page(wce: bool, **changes) -> bytearray:
    page = bytearray(20)
    page[0], page[1], page[2] = 0x08, 0x12, 0x04 if wce else 0
    for offset, value in changes.items():
        page[int(offset[1:])] = value
    return page


def mode_select6(h, parameters: bytes, nexus="i1", length=None, flags=0x10):
    length = len(parameters) if length is None else length
    return h.run(bytes([0x15, flags, 0, 0, length, 0]), data_out=parameters, nexus=nexus)


def test_mode_select_toggles_wce_and_raises_ua_for_others(h):
    h.ready("i2")
    task = mode_select6(h, bytes(4) + caching_page(False))
    assert_good(task)
    assert task.transfer_length == 24
    assert h.store.write_cache is False
    assert not mode_sense6(h, page=0x08, dbd=True).data_in[6] & 0x04
    assert_sense(h.run(TUR, nexus="i2"), S.UNIT_ATTENTION, S.MODE_PARAMETERS_CHANGED)
    assert_good(h.run(TUR))
    assert_good(mode_select6(h, bytes(4) + caching_page(False)))       # no change: no new UA
    assert_good(h.run(TUR, nexus="i2"))


def test_mode_select10_with_block_descriptor(h):
    header = struct.pack(">HBBBxH", 0, 0, 0, 0, 8)
    descriptor = struct.pack(">IxBH", BLOCKS, 0, BS)
    parameters = header + descriptor + caching_page(False)
    task = h.run(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, len(parameters), 0]), data_out=parameters)
    assert_good(task)
    assert h.store.write_cache is False
    bad = header + struct.pack(">IxBH", BLOCKS, 0, 4096) + caching_page(True)
    task = h.run(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, len(bad), 0]), data_out=bad)
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_PARAMETER_LIST, S.Field(13, None, False))


def test_mode_select_rejects(h):
    def refused(parameters, asc_ascq, field=None, **kw):
        assert_sense(mode_select6(h, parameters, **kw), S.ILLEGAL_REQUEST, asc_ascq, field)
    invalid = S.INVALID_FIELD_IN_PARAMETER_LIST
    refused(bytes(4) + caching_page(False, b3=1), invalid, S.Field(7, None, False))
    refused(bytes(4) + caching_page(False, b1=0x11), invalid, S.Field(5, None, False))
    refused(bytes(4) + bytes([0x19, 2, 0, 0]), invalid, S.Field(4, 5, False))
    refused(bytes(4) + bytes([0x48, 2, 0, 0]), invalid, S.Field(4, 6, False))
    refused(bytes([0, 0, 0, 4]) + bytes(4), invalid, S.Field(3, None, False))
    refused(bytes(4) + caching_page(False)[:10], S.PARAMETER_LIST_LENGTH_ERROR)
    refused(bytes(3), S.PARAMETER_LIST_LENGTH_ERROR)
    refused(bytes(4) + caching_page(False), S.INVALID_FIELD_IN_COMMAND_IU, length=40)     # EDTL below it
    refused(bytes(4) + caching_page(False), S.INVALID_FIELD_IN_CDB, S.Field(1, 4), flags=0x00)
    refused(bytes(4) + caching_page(False), S.INVALID_FIELD_IN_CDB, S.Field(1, 0), flags=0x11)
    assert h.store.write_cache is True


def test_software_write_protect_refuses_writes_until_cleared(h):
    h.ready("i2")
    assert mode_sense6(h, page=0x0A, pc=1, dbd=True).data_in[4 + 4] == 0x08      # SWP is changeable
    control = bytearray(mode_sense6(h, page=0x0A, dbd=True).data_in[4:])
    control[4] |= 0x08
    assert_good(mode_select6(h, bytes(4) + control))
    sense = mode_sense6(h, page=0x0A, dbd=True).data_in
    assert sense[2] & 0x80 and sense[4 + 4] & 0x08                               # WP in the header, SWP set
    assert_sense(h.run(TUR, nexus="i2"), S.UNIT_ATTENTION, S.MODE_PARAMETERS_CHANGED)
    for nexus in ("i1", "i2"):
        assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS), nexus=nexus), S.DATA_PROTECT,
                     S.WRITE_PROTECTED)
    assert_good(h.run(rw_cdb(0x28, 0, 1)))
    control[4] &= ~0x08
    assert_good(mode_select6(h, bytes(4) + control))
    assert not mode_sense6(h, page=0x0A, dbd=True).data_in[2] & 0x80
    assert_good(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)))


def test_mode_select_of_unchanged_control_page_and_empty_list(h):
    control = mode_sense6(h, page=0x0A, dbd=True).data_in[4:]
    assert_good(mode_select6(h, bytes(4) + control))
    assert_good(mode_select6(h, b""))
