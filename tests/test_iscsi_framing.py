"""Framing decoder: whole PDUs from any split of the stream, limits enforced, fuzz invariant."""
import pytest
from hypothesis import given, settings, strategies as st

from target.iscsi.errors import ProtocolError
from target.iscsi.framing import FrameDecoder
from tests.iscsi_helpers import build, data_out, scsi_command


def stream():
    return (scsi_command(b"\x2a" + bytes(9), edtl=5, write=True, data=b"hello")
            + data_out(b"x" * 7, offset=5) + build(0x00, itt=3))


def test_whole_stream():
    pdus = FrameDecoder().feed(stream())
    assert [p.opcode for p in pdus] == [0x01, 0x05, 0x00]
    assert pdus[0].data == b"hello" and pdus[1].data == b"x" * 7


def test_byte_at_a_time():
    decoder = FrameDecoder()
    pdus = []
    for byte in stream():
        pdus += decoder.feed(bytes([byte]))
    assert [p.opcode for p in pdus] == [0x01, 0x05, 0x00]
    assert decoder.buffered == 0


def test_data_segment_above_limit_is_rejected_from_the_header():
    decoder = FrameDecoder(max_data_len=512)
    with pytest.raises(ProtocolError, match="MaxRecvDataSegmentLength"):
        decoder.feed(data_out(b"x" * 1024)[:48])


def test_login_may_carry_8192_bytes_whatever_the_limit():
    decoder = FrameDecoder(max_data_len=512)
    assert len(decoder.feed(build(0x03, data=b"a=b\0" * 1000))) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=97), st.booleans(), st.booleans())
def test_any_bytes_parse_or_raise_protocol_error(blob, chunk, header_digest, data_digest):
    decoder = FrameDecoder(max_data_len=256)
    decoder.use_digests(header_digest, data_digest)
    try:
        for i in range(0, len(blob), chunk):
            decoder.feed(blob[i:i + chunk])
    except ProtocolError:
        pass


def test_the_rest_of_a_big_segment_may_be_received_straight_into_it():
    payload = bytes(range(256)) * 160                   # 40 KiB: gathered in a buffer of its own
    raw = data_out(payload, offset=0) + build(0x00, itt=3)
    decoder = FrameDecoder(max_data_len=1 << 16)
    assert decoder.feed(raw[:48 + 1000]) == [] and decoder.rest_of_segment().nbytes == len(payload) - 1000
    into = decoder.rest_of_segment()
    into[:20000] = raw[48 + 1000:48 + 21000]            # as a recv into it would
    assert decoder.filled(20000) == [] and decoder.rest_of_segment() is not None
    rest = len(payload) - 21000
    decoder.rest_of_segment()[:rest] = raw[48 + 21000:48 + len(payload)]
    (pdu,) = decoder.filled(rest)
    assert pdu.opcode == 0x05 and bytes(pdu.data) == payload
    assert decoder.rest_of_segment() is None            # nothing gathered: the receive buffer again
    assert [p.opcode for p in decoder.feed(raw[48 + len(payload):])] == [0x00] and decoder.buffered == 0


def test_a_data_out_whose_segment_is_all_of_a_receive_outlives_it():
    """The header in one receive, exactly its data segment in the next: the data is a view that stays usable."""
    raw = data_out(b"z" * 4096)
    decoder = FrameDecoder(max_data_len=1 << 16)
    assert decoder.feed(memoryview(raw)[:48]) == []
    (pdu,) = decoder.feed(memoryview(raw)[48:])
    assert bytes(pdu.data) == b"z" * 4096
