"""PDU codec: each request's fields under their RFC 7143 names, LUN addressing, padding."""
from target.iscsi import pdu as P
from target.scsi.spc import encode_lun
from tests.iscsi_helpers import (build, data_out, login_request, logout_request, nop_out, scsi_command,
                                 task_management, text_request)


def test_scsi_command_fields():
    raw = scsi_command(b"\x28" + bytes(9), itt=0x1234, cmd_sn=7, edtl=4096, read=True, lun=3)
    pdu = P.decode_bhs(raw[:48])
    assert isinstance(pdu, P.ScsiCommand)
    assert (pdu.itt, pdu.cmd_sn, pdu.edtl, pdu.flags & (P.SCSI_READ | P.SCSI_WRITE)) == (0x1234, 7, 4096, P.SCSI_READ)
    assert P.decode_lun(pdu.lun_field) == 3
    assert pdu.cdb[:1] == b"\x28" and len(pdu.cdb) == 16


def test_login_request_fields():
    pdu = P.decode_bhs(login_request([("InitiatorName", "iqn.x")], isid=0x800000000001, tsih=0, cmd_sn=5)[:48])
    assert isinstance(pdu, P.LoginRequest)
    assert (pdu.csg, pdu.nsg, pdu.transit, pdu.cont) == (1, 3, True, False)
    assert (pdu.isid, pdu.tsih, pdu.cmd_sn) == (0x800000000001, 0, 5)
    assert (pdu.exp_stat_sn, pdu.version_min) == (0, 0)


def test_data_out_fields():
    pdu = P.decode_bhs(data_out(b"x" * 8, itt=5, ttt=6, data_sn=7, offset=4096, final=False)[:48])
    assert isinstance(pdu, P.DataOut) and not pdu.flags & P.FINAL
    assert (pdu.itt, pdu.ttt, pdu.data_sn, pdu.buffer_offset, pdu.data_len) == (5, 6, 7, 4096, 8)


def test_task_management_request_fields():
    pdu = P.decode_bhs(task_management(1, itt=21, referenced_task_tag=20, cmd_sn=2, ref_cmd_sn=5)[:48])
    assert isinstance(pdu, P.TaskMgmtRequest) and pdu.immediate
    assert (pdu.function, pdu.itt, pdu.referenced_task_tag, pdu.cmd_sn, pdu.ref_cmd_sn) == (1, 21, 20, 2, 5)


def test_nop_out_text_and_logout_fields():
    nop = P.decode_bhs(nop_out(itt=9, cmd_sn=1)[:48])
    text = P.decode_bhs(text_request(itt=3, ttt=8, cmd_sn=2, cont=True)[:48])
    logout = P.decode_bhs(logout_request(itt=10, cmd_sn=3, reason=2)[:48])
    assert (nop.itt, nop.ttt, nop.cmd_sn) == (9, P.RESERVED_TAG, 1)
    assert (text.itt, text.ttt, text.cmd_sn, text.flags & P.CONTINUE) == (3, 8, 2, P.CONTINUE)
    assert (logout.itt, logout.reason, logout.cmd_sn) == (10, 2, 3)


def test_unknown_opcode_decodes_as_unknown():
    pdu = P.decode_bhs(build(0x1F)[:48])
    assert isinstance(pdu, P.UnknownPdu) and pdu.opcode == 0x1F


def test_lun_addressing():
    assert P.decode_lun(encode_lun(5) << 48) == 5
    assert P.decode_lun(encode_lun(300) << 48) == 300
    assert P.decode_lun(0x0001_0000_0000_0001) == -1        # second level set: not a single-level LUN
    assert P.decode_lun(0x8000 << 48) == -1                  # logical unit addressing: unsupported


def test_padding():
    assert [len(P.padding(n)) for n in range(5)] == [0, 3, 2, 1, 0]
    assert P.frame(b"h" * 48, b"abcde") == b"h" * 48 + b"abcde\0\0\0"


def test_extended_cdb_ahs():
    raw = bytearray(scsi_command(bytes(16)))
    ahs = (17).to_bytes(2, "big") + b"\x01\x00" + bytes(range(16)) + b"\xAA" + bytes(3)
    raw[4] = len(ahs) // 4
    pdu = P.decode_bhs(bytes(raw[:48]))
    pdu.ahs = ahs
    assert pdu.cdb == bytes(16) + bytes(range(16))
