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


def _receive_as_the_worker_does(decoder, raw, chunk, ahead=True, tail=4096):
    """Feed `raw` as the worker's receives would deliver it from a socket that has up to `chunk` bytes each time:
    straight into a segment when the decoder offers one; else, when it wants a header alone, into its header space,
    on into the segment it offers ahead and then into a receive buffer of `tail` bytes (unless not `ahead`, or it
    offers none); else up to `header_wanted` bytes (or `chunk`) into the receive buffer. Returns the PDUs, and how
    many bytes went through the receive buffer or were received ahead into a segment they were not for."""
    pdus, pos, through_buffer = [], 0, 0
    rest = memoryview(bytearray(tail))
    while pos < len(raw):
        into = decoder.rest_of_segment()
        following = decoder.segment_ahead(rest) if ahead and into is None and decoder.header_wanted() else None
        if into is not None:
            count = min(into.nbytes, len(raw) - pos)
            into[:count] = raw[pos:pos + count]
            pdus += decoder.filled(count)
        elif following is not None:
            count = min(48 + following.nbytes + tail, chunk, len(raw) - pos)
            piece = raw[pos:pos + count]
            decoder.header_space[:min(count, 48)] = piece[:48]
            following[:len(piece[48:48 + following.nbytes])] = piece[48:48 + following.nbytes]
            rest[:len(piece[48 + following.nbytes:])] = piece[48 + following.nbytes:]
            got = decoder.header_and_segment(count)
            straight = any(p.data is following for p in got) or decoder.rest_of_segment() is not None
            through_buffer += max(count - 48 - following.nbytes, 0) if straight else max(count - 48, 0)
            pdus += got
        else:
            count = min(decoder.header_wanted() or chunk, len(raw) - pos)
            pdus += decoder.feed(raw[pos:pos + count])
            through_buffer += count
        pos += count
    return pdus, through_buffer


def _writes_and_a_read(digests: bool = False) -> list[bytes]:
    """Four commands with 40 KiB of immediate data each (all of byte n), a read command third."""
    from target.iscsi.digests import digest
    pdus = [scsi_command(b"\x2a" + bytes(9), itt=n, edtl=40960, write=True, data=bytes([n]) * 40960)
            for n in range(4)]
    pdus.insert(2, scsi_command(b"\x28" + bytes(9), itt=9, edtl=4096, read=True))
    if digests:
        pdus = [p[:48] + digest(p[:48]) + p[48:] + (digest(p[48:]) if len(p) > 48 else b"") for p in pdus]
    return pdus


def _decoder(digests: bool = False) -> tuple[FrameDecoder, list[int]]:
    """A decoder whose big segments go into buffers of their own (as the connection's pool gives), and the lengths
    it asked for."""
    decoder = FrameDecoder(max_data_len=1 << 16)
    decoder.use_digests(digests, digests)
    given: list[int] = []
    decoder.segment_buffer = lambda lun_field, length: given.append(length) or memoryview(bytearray(length))
    return decoder, given


def test_a_stream_of_big_writes_is_received_straight_into_their_buffers():
    """After a command with big immediate data the next header is received on its own, so that the next big
    segment goes straight into its buffer; small commands in between go back to batching."""
    pdus = _writes_and_a_read()
    decoder, given = _decoder()
    chunk = len(pdus[0]) + 100
    got, through_buffer = _receive_as_the_worker_does(decoder, b"".join(pdus), chunk, ahead=False)
    assert [p.itt for p in got] == [0, 1, 9, 2, 3]
    assert [bytes(p.data) for p in got if p.itt != 9] == [bytes([n]) * 40960 for n in range(4)]
    assert given == [40960] * 4     # each buffer holds its data alone (an O_DIRECT store writes from it as it is)
    # through the receive buffer: the first receive (the first write whole, the start of the second), the read's
    # header alone (after a big write), and the receive after the read (the third write whole, the start of the
    # fourth); the second's and the fourth's data went straight into their buffers
    assert through_buffer == 2 * chunk + len(pdus[2])
    assert decoder.buffered == 0 and decoder.header_wanted() == len(pdus[2])


def test_each_big_write_after_the_first_is_received_whole_in_one_receive_header_and_data():
    """With a segment offered ahead, one receive takes a write's header and, straight on, its data into a buffer of
    its unit's pool: after the first, no write's data goes through the receive buffer."""
    pdus = [scsi_command(b"\x2a" + bytes(9), itt=n, edtl=40960, write=True, data=bytes([n]) * 40960, lun=2)
            for n in range(5)]
    decoder, given = _decoder()
    luns = []
    hook = decoder.segment_buffer
    decoder.segment_buffer = lambda lun_field, length: luns.append(lun_field >> 48) or hook(lun_field, length)
    got, through_buffer = _receive_as_the_worker_does(decoder, b"".join(pdus), chunk=len(pdus[0]))
    assert [p.itt for p in got] == list(range(5))
    assert [bytes(p.data) for p in got] == [bytes([n]) * 40960 for n in range(5)]
    assert through_buffer == len(pdus[0])           # the first write, whole; then headers with their data
    assert given == [40960] * 5 and set(luns) == {2}
    assert decoder.buffered == 0 and decoder.segment_ahead(memoryview(bytearray(16))) is not None


@pytest.mark.parametrize("tail", [100, 1 << 16])
@pytest.mark.parametrize("chunk", [20, 47, 48, 49, 1000, 40960, 40960 + 48, 40960 + 100, 1 << 20])
def test_whatever_follows_a_big_write_comes_out_whole_when_received_with_a_segment_ahead(chunk, tail):
    """Receives with a segment ahead (and a receive buffer after it), cut anywhere: a read command, a write of
    another length or unit, small writes, a Data-Out and a NOP-Out after big writes all come out whole and in
    order, with their data."""
    parts = [scsi_command(b"\x2a" + bytes(9), itt=0, edtl=40960, write=True, data=b"a" * 40960),
             scsi_command(b"\x28" + bytes(9), itt=1, edtl=4096, read=True),
             scsi_command(b"\x2a" + bytes(9), itt=2, edtl=40960, write=True, data=b"b" * 40960),
             scsi_command(b"\x2a" + bytes(9), itt=3, edtl=20480, write=True, data=b"c" * 20480),
             scsi_command(b"\x2a" + bytes(9), itt=4, edtl=20480, write=True, data=b"d" * 20480, lun=1),
             scsi_command(b"\x2a" + bytes(9), itt=5, edtl=20480, write=True, data=b"e" * 20480, lun=1),
             scsi_command(b"\x2a" + bytes(9), itt=6, edtl=512, write=True, data=b"f" * 512, lun=1),
             scsi_command(b"\x2a" + bytes(9), itt=7, edtl=40960, write=True, data=b"g" * 20480, lun=1,
                          final=False),
             data_out(b"h" * 20480, itt=7, offset=20480),
             build(0x00, itt=8)]
    decoder, _ = _decoder()
    got, _ = _receive_as_the_worker_does(decoder, b"".join(parts), chunk, tail=tail)
    assert [p.itt for p in got] == list(range(8)) + [7, 8]
    assert [bytes(p.data) for p in got] == [b"a" * 40960, b"", b"b" * 40960, b"c" * 20480, b"d" * 20480,
                                            b"e" * 20480, b"f" * 512, b"g" * 20480, b"h" * 20480, b""]
    assert decoder.buffered == 0


def _received_ahead(decoder, raw):
    """One receive with a segment ahead that brought all of `raw`: into the header space, the segment, the tail."""
    following = decoder.segment_ahead(memoryview(bytearray(1 << 16)))
    tail = decoder._tail
    decoder.header_space[:] = raw[:48]
    following[:len(raw[48:48 + following.nbytes])] = raw[48:48 + following.nbytes]
    tail[:len(raw[48 + following.nbytes:])] = raw[48 + following.nbytes:]
    return following, decoder.header_and_segment(len(raw))


def test_a_big_write_then_a_read_in_one_receive_ahead_keeps_the_next_ahead():
    """The receive's PDUs as a whole decide what the next receive does (as for one feed): a big write taken ahead
    and a read command after it in the tail leave the next receive with a segment ahead too."""
    decoder, _ = _decoder()
    decoder.feed(scsi_command(b"\x2a" + bytes(9), itt=0, edtl=40960, write=True, data=bytes(40960)))
    write = scsi_command(b"\x2a" + bytes(9), itt=1, edtl=40960, write=True, data=b"w" * 40960)
    read = scsi_command(b"\x28" + bytes(9), itt=2, edtl=4096, read=True)
    following, got = _received_ahead(decoder, write + read)
    assert [p.itt for p in got] == [1, 2] and got[0].data is following
    assert decoder.segment_ahead(memoryview(bytearray(16))) is not None


def test_a_header_with_an_ahs_received_with_a_segment_ahead_comes_out_whole():
    """A command with an AHS is not taken straight: its AHS and data come out of the bytes received ahead."""
    decoder, _ = _decoder()
    decoder.feed(scsi_command(b"\x2a" + bytes(9), itt=0, edtl=40960, write=True, data=bytes(40960)))
    plain = scsi_command(b"\x2a" + bytes(9), itt=1, edtl=40960, write=True, data=b"a" * 40960)
    ahs = b"\x00\x08\x01\x00" + b"\xcc" * 8      # an extended-CDB AHS: length 8, type 1, reserved, 8 bytes
    with_ahs = plain[:4] + bytes([len(ahs) // 4]) + plain[5:48] + ahs + plain[48:]
    following, got = _received_ahead(decoder, with_ahs + build(0x00, itt=2))
    assert [p.itt for p in got] == [1, 2]
    assert got[0].ahs == ahs and bytes(got[0].data) == b"a" * 40960 and got[0].data is not following


def test_only_a_write_with_big_immediate_data_has_the_next_header_received_alone():
    decoder, _ = _decoder()
    decoder.feed(scsi_command(b"\x28" + bytes(9), itt=0, edtl=40960, read=True, data=bytes(40960)))
    assert decoder.header_wanted() == 0 and decoder.segment_ahead(memoryview(bytearray(16))) is None
    decoder.feed(scsi_command(b"\x2a" + bytes(9), itt=1, edtl=40960, write=True, data=bytes(40960)))
    assert decoder.header_wanted() == 48


def test_a_header_received_with_a_segment_ahead_is_checked_against_the_limits():
    decoder, _ = _decoder()
    decoder.feed(scsi_command(b"\x2a" + bytes(9), edtl=40960, write=True, data=bytes(40960)))
    following = decoder.segment_ahead(memoryview(bytearray(16)))
    oversized = data_out(bytes(1 << 17))
    decoder.header_space[:] = oversized[:48]
    following[:100] = oversized[48:148]
    with pytest.raises(ProtocolError, match="MaxRecvDataSegmentLength"):
        decoder.header_and_segment(148)


def test_a_big_write_before_a_read_in_one_receive_keeps_headers_alone():
    """A receive that brought a big write and then a read command (a 70/30 mix) still has the next header received
    alone: any command with big immediate data in a receive, not only its last PDU."""
    pdus = _writes_and_a_read()
    decoder, _ = _decoder()
    got = decoder.feed(pdus[1] + pdus[2])           # the second write, whole, then the read command
    assert [p.itt for p in got] == [1, 9]
    assert decoder.header_wanted() == len(pdus[2])  # the next header alone (48 bytes, no digests)
    assert decoder.feed(pdus[2]) and decoder.header_wanted() == 0    # a receive of small PDUs only: batching again


def test_with_digests_big_writes_are_received_as_before():
    """Digests would sit in a segment's buffer beside its data: with them the receives are not cut at headers."""
    pdus = _writes_and_a_read(digests=True)
    decoder, _ = _decoder(digests=True)
    got, _ = _receive_as_the_worker_does(decoder, b"".join(pdus), len(pdus[0]) + 100)
    assert [p.itt for p in got] == [0, 1, 9, 2, 3] and not any(p.data_digest_error for p in got)
    assert [bytes(p.data) for p in got if p.itt != 9] == [bytes([n]) * 40960 for n in range(4)]
    assert decoder.header_wanted() == 0
