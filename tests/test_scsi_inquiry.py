"""INQUIRY (target/scsi/inquiry.py): the standard data and the VPD pages."""
from __future__ import annotations

import struct

from target.scsi import sense as S
from target.scsi.lun import LogicalUnit
from tests.scsi_harness import BS, IQN, NAA, Harness, MemoryStore, assert_sense, vpd
from tests.unit_coordinator import coordinated_target


# -- INQUIRY ---------------------------------------------------------------------------------------------------
def test_standard_inquiry(h):
    data = h.run(bytes([0x12, 0, 0, 0, 255, 0])).data_in
    assert data[0] == 0x00 and data[2] == 0x06 and data[3] == 0x12 and data[7] & 0x02
    assert data[4] == len(data) - 5
    assert data[8:16] == b"RINGTGT " and data[16:32] == b"ringtgt disk    " and data[32:36] == b"0001"
    assert h.run(bytes([0x12, 0, 0, 0, 5, 0])).data_in == data[:5]
    assert_sense(h.run(bytes([0x12, 0, 0x83, 0, 255, 0])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(2))


def test_vpd_supported_and_serial(h):
    assert vpd(h, 0x00)[4:] == bytes([0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2])
    assert vpd(h, 0x80)[4:] == b"0123456789ABCDEF"
    assert_sense(h.run(bytes([0x12, 1, 0x99, 0, 255, 0])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)


def designators(page: bytes):
    out, offset = [], 4
    while offset < len(page):
        length = page[offset + 3]
        out.append((page[offset], page[offset + 1], page[offset + 4:offset + 4 + length]))
        offset += 4 + length
    assert offset == len(page)
    return out


def test_vpd_device_identification(h):
    found = designators(vpd(h, 0x83))
    assert found[0] == (0x01, 0x03, bytes.fromhex(NAA))
    assert found[1] == (0x02, 0x01, b"RINGTGT 0123456789ABCDEF")
    code_set, kind, name = found[2]
    assert (code_set, kind) == (0x53, 0x98)
    assert len(name) % 4 == 0 and name.rstrip(b"\0") == f"{IQN},t,0x0001".encode() and name.endswith(b"\0")
    assert found[3] == (0x51, 0x94, b"\0\0\0\x01")
    assert found[4] == (0x51, 0x95, b"\0\0\0\x01")


def test_vpd_8_byte_naa():
    unit = LogicalUnit(0, MemoryStore(), serial="S", naa="6001405aabbccdde", target_iqn=IQN, portal_group_tag=2,
                       relative_port=3)
    h = Harness()
    h.target = coordinated_target({0: unit})
    found = designators(vpd(h, 0x83))
    assert found[0][2] == bytes.fromhex("6001405aabbccdde") and found[4][2] == b"\0\0\0\x02"


def test_vpd_block_pages(h):
    limits = vpd(h, 0xB0)
    assert len(limits) == 64
    max_transfer, optimal = struct.unpack_from(">II", limits, 8)
    assert max_transfer * BS == 16 << 20 and optimal * BS == 1 << 20
    assert struct.unpack_from(">II", limits, 20) == (0, 0)           # no UNMAP
    characteristics = vpd(h, 0xB1)
    assert len(characteristics) == 64 and characteristics[4:6] == b"\0\x01"
    assert vpd(h, 0xB2) == bytes([0, 0xB2, 0, 4, 0, 0, 0, 0])
