"""REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (target/scsi/opcodes.py)."""
from __future__ import annotations

import struct

from target.scsi import sense as S
from tests.scsi_harness import assert_sense


def rsoc(h, options=0, opcode=0, action=0, alloc=8192, rctd=False):
    cdb = struct.pack(">BBBBHIBB", 0xA3, 0x0C, options | (0x80 if rctd else 0), opcode, action, alloc, 0, 0)
    return h.run(cdb)


def test_report_supported_opcodes_lists_what_the_table_serves(h):
    data = rsoc(h).data_in
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    descriptors = {(d[0], int.from_bytes(d[2:4], "big")): (d[5], int.from_bytes(d[6:8], "big"))
                   for d in (data[i:i + 8] for i in range(4, len(data), 8))}
    assert descriptors[(0x28, 0)] == (0, 10) and descriptors[(0x8A, 0)] == (0, 16)
    assert descriptors[(0x5F, 7)] == (1, 10) and descriptors[(0x9E, 0x10)] == (1, 16)   # SERVACTV
    assert (0x48, 0) not in descriptors and (0x83, 0) in descriptors       # SANITIZE: not served
    timed = rsoc(h, rctd=True).data_in
    assert len(timed) - 4 == (len(data) - 4) // 8 * 20 and timed[4 + 5] == 0x02         # CTDP + descriptor


def test_report_supported_opcodes_one_command(h):
    read10 = rsoc(h, options=1, opcode=0x28).data_in
    assert read10[1] == 0x03 and int.from_bytes(read10[2:4], "big") == 10
    assert read10[4] == 0x28 and read10[5] & 0x18 == 0x18 and read10[13] == 0           # DPO, FUA; CONTROL
    assert rsoc(h, options=1, opcode=0x4D).data_in == bytes([0, 0x01, 0, 0])            # not supported
    prout = rsoc(h, options=2, opcode=0x5F, action=6).data_in
    assert prout[1] == 0x03 and prout[4:6] == bytes([0x5F, 0x1F])
    assert rsoc(h, options=2, opcode=0x5F, action=8).data_in[1] == 0x01
    assert rsoc(h, options=1, opcode=0x28, rctd=True).data_in[1] == 0x83
    assert_sense(rsoc(h, options=1, opcode=0x5F), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 2))
    assert_sense(rsoc(h, options=2, opcode=0x28), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 2))
    assert_sense(rsoc(h, options=5), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 2))
    assert len(rsoc(h, alloc=6).data_in) == 6


def test_report_supported_task_management_functions(h):
    data = h.run(struct.pack(">BBxxIxB", 0xA3, 0x0D, 4, 0)).data_in
    assert data == bytes([0xDA, 0, 0, 0])
    assert_sense(h.run(struct.pack(">BBxxIxB", 0xA3, 0x1F, 4, 0)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 4))
