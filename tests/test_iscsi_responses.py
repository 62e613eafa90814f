"""Data-In encoding: one PDU or a sequence, and the header written into a backstore buffer's headroom."""
from target.backstore.buffers import HEADROOM, BufferPool
from target.iscsi import pdu as P
from target.iscsi import responses as R
from target.scsi.task import GOOD

SEQ = (5, 9, 40)          # StatSN, ExpCmdSN, MaxCmdSN


def pdus(out):
    stream = b"".join(bytes(b) for b in out)
    found, pos = [], 0
    while pos < len(stream):
        pdu = P.decode_bhs(stream[pos:pos + P.BHS_LEN])
        pos += P.BHS_LEN
        found.append((pdu, stream[pos:pos + pdu.data_len]))
        pos += pdu.data_len + P.pad_len(pdu.data_len)
    return found


def test_pool_buffer_leaves_as_one_piece_with_its_header():
    data = BufferPool().get(4096)
    data[:] = bytes(range(256)) * 16
    out = []
    assert R.data_in(out, data, 3 << 48, 0x11, SEQ, 8192, 65536, GOOD, (0, 0)) == 1
    assert len(out) == 1 and out[0].nbytes == HEADROOM + 4096
    (pdu, payload), = pdus(out)
    assert (pdu.opcode, pdu.flags, pdu.b3, pdu.w16, pdu.w24, pdu.w28, pdu.w32) == (P.DATA_IN, 0x81, GOOD, 0x11, 5, 9, 40)
    assert pdu.lun_field == 3 << 48 and payload == bytes(data)


def test_other_data_gets_a_separate_header_and_padding():
    out = []
    R.data_in(out, b"abcde", 0, 1, SEQ, 8192, 65536, GOOD, (R.UNDERFLOW, 3))
    assert len(out) == 3
    (pdu, payload), = pdus(out)
    assert pdu.flags == 0x81 | R.UNDERFLOW and pdu.w44 == 3 and payload == b"abcde"


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
    sent = pdus(out)
    assert [p.w40 for p, _ in sent] == [0, 1024, 2048] and [p.flags for p, _ in sent] == [0, 0, 0x81]
    assert [p.w36 for p, _ in sent] == [0, 1, 2]
