"""Encoders of target PDUs: Data-In (one PDU or a sequence, the header written into a backstore buffer's headroom)
and every other response, each field where RFC 7143 puts it."""
from target.buffers import HEADROOM, BufferPool
from target.iscsi import pdu as P
from target.iscsi import responses as R
from target.scsi.task import GOOD
from tests.iscsi_helpers import split

SEQ = (5, 9, 40)          # StatSN, ExpCmdSN, MaxCmdSN


def test_pool_buffer_leaves_as_one_piece_with_its_header():
    data = BufferPool().get(4096)
    data[:] = bytes(range(256)) * 16
    out = []
    assert R.data_in(out, data, 3 << 48, 0x11, SEQ, 8192, 65536, GOOD, (0, 0)) == 1
    assert len(out) == 1 and out[0].nbytes == HEADROOM + 4096
    (pdu, payload), = split(out)
    assert (pdu.opcode, pdu.flags, pdu.status, pdu.itt) == (P.DATA_IN, 0x81, GOOD, 0x11)
    assert (pdu.stat_sn, pdu.exp_cmd_sn, pdu.max_cmd_sn) == SEQ
    assert pdu.lun_field == 3 << 48 and payload == bytes(data)


def test_other_data_gets_a_separate_header_and_padding():
    out = []
    R.data_in(out, b"abcde", 0, 1, SEQ, 8192, 65536, GOOD, (R.UNDERFLOW, 3))
    assert len(out) == 3
    (pdu, payload), = split(out)
    assert pdu.flags == 0x81 | R.UNDERFLOW and pdu.residual_count == 3 and payload == b"abcde"


def test_truncated_pool_view_is_not_written_in_front_of():
    data = BufferPool().get(1024)
    data[:] = b"x" * 1024
    whole = data.obj
    out = []
    R.data_in(out, data[:512], 0, 1, SEQ, 8192, 65536, GOOD, (0, 0))
    assert whole[:HEADROOM] == bytes(HEADROOM) and len(out) == 2


def test_split_by_segment_length_status_in_the_last():
    data = BufferPool().get(3000)
    out = []
    assert R.data_in(out, data, 0, 1, SEQ, 1024, 65536, GOOD, (0, 0)) == 3
    sent = split(out)
    assert [p.buffer_offset for p, _ in sent] == [0, 1024, 2048] and [p.flags for p, _ in sent] == [0, 0, 0x81]
    assert [p.data_sn for p, _ in sent] == [0, 1, 2]


def test_r2t_and_scsi_response_fields():
    (r2t, _), = split([R.r2t(3 << 48, 0x11, 0x22, SEQ, 1, 512, 8192)])
    assert (r2t.opcode, r2t.flags, r2t.lun_field, r2t.itt, r2t.ttt) == (P.R2T, P.FINAL, 3 << 48, 0x11, 0x22)
    assert (r2t.stat_sn, r2t.exp_cmd_sn, r2t.max_cmd_sn) == SEQ
    assert (r2t.r2t_sn, r2t.buffer_offset, r2t.desired_length) == (1, 512, 8192)
    (resp, sense), = split([R.scsi_response(0x11, SEQ, 2, b"\x70" + bytes(17), 3, (R.OVERFLOW, 7))])
    assert (resp.opcode, resp.flags, resp.status, resp.itt) == (P.SCSI_RESPONSE, 0x80 | R.OVERFLOW, 2, 0x11)
    assert (resp.stat_sn, resp.exp_cmd_sn, resp.max_cmd_sn, resp.exp_data_sn, resp.residual_count) == SEQ + (3, 7)
    assert sense == b"\x00\x12\x70" + bytes(17)


def test_control_responses_fields():
    (nop, ping), = split([R.nop_in(SEQ, 9, P.RESERVED_TAG, 3 << 48, b"ping!")])
    assert (nop.opcode, nop.flags, nop.lun_field, nop.itt, nop.ttt, ping) == (
        P.NOP_IN, P.FINAL, 3 << 48, 9, P.RESERVED_TAG, b"ping!")
    (rej, header), = split([R.reject(SEQ, P.REJECT_SNACK, bytes(range(48)))])
    assert (rej.opcode, rej.reason, rej.itt, header) == (P.REJECT, P.REJECT_SNACK, P.RESERVED_TAG, bytes(range(48)))
    (text, keys), = split([R.text_response(SEQ, 0x40, 1 << 48, 3, 8, b"a=b\0")])
    assert (text.opcode, text.flags, text.lun_field, text.itt, text.ttt, keys) == (
        P.TEXT_RESPONSE, 0x40, 1 << 48, 3, 8, b"a=b\0")
    (logout, _), = split([R.logout_response(SEQ, 2, 10, 3, 20)])
    assert (logout.opcode, logout.response, logout.itt, logout.time2wait, logout.buffer_offset & 0xFFFF) == (
        P.LOGOUT_RESPONSE, 2, 10, 3, 20)
    (tmf, _), = split([R.task_management_response(SEQ, 5, 21)])
    assert (tmf.opcode, tmf.flags, tmf.response, tmf.itt) == (P.TASK_MGMT_RESPONSE, P.FINAL, 5, 21)
    (login, keys), = split([R.login_response(SEQ, 0x87, 0x23D000000001, 7, 4, 0x0201, b"x=y\0")])
    assert (login.opcode, login.flags, login.lun_field, login.itt, login.login_status, keys) == (
        P.LOGIN_RESPONSE, 0x87, (0x23D000000001 << 16) | 7, 4, 0x0201, b"x=y\0")
    for pdu in (nop, rej, text, logout, tmf, login):
        assert (pdu.stat_sn, pdu.exp_cmd_sn, pdu.max_cmd_sn) == SEQ
