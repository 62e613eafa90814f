"""The data-out length a CDB asks for, and a command given less (target/scsi/data_out.py)."""
from __future__ import annotations

import struct

import pytest

from target.scsi import sense as S
from target.scsi.lun import MAX_TRANSFER_BYTES
from tests.scsi_harness import BS, assert_sense, rw_cdb


def test_data_out_length_is_what_the_cdb_asks_for_within_the_largest_transfer(h):
    length = h.target.data_out_length
    assert length(0, rw_cdb(0x2A, 0, 3)) == 3 * BS and length(0, rw_cdb(0x0A, 0, 0)) == 256 * BS
    assert length(0, rw_cdb(0x28, 0, 3)) == 0                               # a READ carries none
    assert length(0, struct.pack(">BxIxHx", 0x2A, 0, 0xFFFF)) == min(0xFFFF * BS, MAX_TRANSFER_BYTES)
    assert length(0, struct.pack(">BB3xIx", 0x5F, 0, 0xFFFFFFFF)) == MAX_TRANSFER_BYTES   # PR OUT's 4-byte field
    assert length(0, bytes([0x15, 0x10, 0, 0, 28, 0])) == 28               # MODE SELECT(6)
    assert length(0, rw_cdb(0x2F, 0, 4, flags=0x06)) == BS and length(0, rw_cdb(0x2F, 0, 4)) == 0
    assert length(0, bytes([0x89]) + bytes(12) + bytes([2, 0])) == 4 * BS  # COMPARE AND WRITE: twice the blocks
    assert length(7, rw_cdb(0x2A, 0, 3)) == 0                              # no such LUN: nothing to hold


@pytest.mark.parametrize("cdb", [
    rw_cdb(0x0A, 0, 1), rw_cdb(0x2A, 0, 2), rw_cdb(0xAA, 0, 1), rw_cdb(0x8A, 0, 1),         # WRITE 6/10/12/16
    rw_cdb(0x2E, 0, 1), rw_cdb(0xAE, 0, 1), rw_cdb(0x8E, 0, 1), rw_cdb(0x8B, 0, 1),         # WRITE AND VERIFY, ORWRITE
    struct.pack(">BBIBHB", 0x41, 0, 0, 0, 1, 0),                                            # WRITE SAME(10)
    bytes([0x89, 0]) + bytes(11) + bytes([1, 0, 0]),                                        # COMPARE AND WRITE
    bytes([0x15, 0x10, 0, 0, 28, 0]), bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0]),         # MODE SELECT 6/10
    struct.pack(">BBB2xIB", 0x5F, 0, 0, 24, 0),                                             # PERSISTENT RESERVE OUT
    struct.pack(">BB8xI2x", 0x83, 0, 48),                                                   # EXTENDED COPY
    bytes([0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0]),                                            # SANITIZE OVERWRITE
], ids=lambda cdb: f"{cdb[0]:02x}")
def test_a_data_out_command_given_less_than_its_cdb_asks_for_is_refused_and_writes_nothing(h, cdb):
    wanted = h.target.data_out_length(0, cdb)
    task = h.run(cdb, data_out=bytes(wanted - 1))
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert task.transfer_length == wanted                  # the transport reports the overflow residual
    assert not [call for call in h.store.calls if call[0] == "write"]
