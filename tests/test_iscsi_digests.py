"""CRC32C digests: the RFC's test vector, the decoder with digests (any split, header and data errors) and the
output side (digests inserted however a PDU's buffers are split, the final Login Response left alone)."""
import pytest
from hypothesis import given, settings, strategies as st

from target.iscsi import pdu as P
from target.iscsi import responses as R
from target.iscsi.digests import OutputDigests, digest
from target.iscsi.errors import ProtocolError
from target.iscsi.framing import FrameDecoder
from tests.iscsi_helpers import build, data_out, scsi_command


def with_digests(raw: bytes, data: bool = True) -> bytes:
    """An initiator PDU (no AHS) with HeaderDigest and, for a data segment, DataDigest."""
    header, segment = raw[:48], raw[48:]
    return header + digest(header) + (segment + digest(segment) if segment and data else segment)


def test_rfc_test_vector():
    assert digest(bytes(32)) == bytes.fromhex("aa36918a")          # RFC 3720 B.4: 32 bytes of zeros
    assert digest(bytes(range(32))) == bytes.fromhex("4e79dd46")   # … and 0x00..0x1F


def stream() -> bytes:
    return b"".join(with_digests(raw) for raw in (
        scsi_command(b"\x2a" + bytes(9), edtl=5, write=True, data=b"hello"),
        data_out(b"x" * 7, offset=5), build(0x00, itt=3)))


@pytest.mark.parametrize("chunk", [1, 3, 52, 4096])
def test_decoder_checks_and_strips_digests_at_any_split(chunk):
    decoder = FrameDecoder()
    decoder.use_digests(True, True)
    raw = stream()
    pdus = [pdu for i in range(0, len(raw), chunk) for pdu in decoder.feed(raw[i:i + chunk])]
    assert [(p.opcode, p.data, p.data_digest_error) for p in pdus] == [
        (0x01, b"hello", False), (0x05, b"x" * 7, False), (0x00, b"", False)]
    assert decoder.buffered == 0


def test_header_digest_error_is_a_protocol_error():
    decoder = FrameDecoder()
    decoder.use_digests(True, False)
    raw = bytearray(with_digests(build(0x00, itt=3)))
    raw[49] ^= 1
    with pytest.raises(ProtocolError, match="header digest"):
        decoder.feed(bytes(raw))


def test_data_digest_error_marks_the_pdu_and_framing_goes_on():
    decoder = FrameDecoder()
    decoder.use_digests(False, True)
    bad = bytearray(data_out(b"x" * 7)[:48] + b"x" * 7 + b"\0" + digest(b"x" * 7 + b"\0"))
    bad[50] ^= 1                                                   # the data, not the digest
    pdus = decoder.feed(bytes(bad) + build(0x00, itt=3))
    assert [(p.opcode, p.data_digest_error) for p in pdus] == [(0x05, True), (0x00, False)]


def target_pdu(data: bytes, itt: int) -> bytes:
    return R.nop_in((0, 0, 0), itt, P.RESERVED_TAG, data=data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4), st.data())
def test_output_digests_however_buffers_are_split(segments, draw):
    login = R.login_response((0, 0, 0), 0x80, 0, 0, 0, 0, b"a=b\0")
    pdus = [target_pdu(data, itt) for itt, data in enumerate(segments)]
    whole = b"".join(pdus)
    cuts = sorted(draw.draw(st.sets(st.integers(1, len(whole) - 1), max_size=6)))
    bufs = [login] + [memoryview(whole)[a:b] for a, b in zip([0] + cuts, cuts + [len(whole)])]
    sent = b"".join(bytes(b) for b in OutputDigests(True, True, skip=len(login)).apply(bufs))
    expected = login + b"".join(raw[:48] + digest(raw[:48]) + (raw[48:] + digest(raw[48:]) if raw[48:] else b"")
                                for raw in pdus)
    assert sent == expected


def test_output_header_digest_only_and_skip_applies_once():
    digests = OutputDigests(True, False, skip=4)
    raw = target_pdu(b"abc", 1)
    assert b"".join(digests.apply([b"skip", raw])) == b"skip" + raw[:48] + digest(raw[:48]) + raw[48:]
    assert b"".join(digests.apply([raw])) == raw[:48] + digest(raw[:48]) + raw[48:]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40000), min_size=1, max_size=8), st.booleans(),
       st.integers(min_value=0, max_value=2**32 - 1))
def test_big_segments_split_anywhere_come_out_whole(cuts, digests, corrupt_at):
    """Data segments above 8192 bytes split across receives are gathered in a buffer of their own
    (FrameDecoder._fill): the same PDUs, data and digest verdicts as from one receive."""
    sizes = (20001, 9000, 0, 65536, 8193)
    raw = bytearray(b"".join(
        with_digests(data_out(bytes([n]) * size, offset=n), data=True) if digests else data_out(bytes([n]) * size)
        for n, size in enumerate(sizes)))
    if digests:
        raw[-1] ^= 1 << (corrupt_at % 8)        # the last PDU's data digest
    expected = [(P.DATA_OUT, bytes([n]) * size, digests and n == len(sizes) - 1) for n, size in enumerate(sizes)]
    points = sorted({c % len(raw) for c in cuts} | {0, len(raw)})
    decoder = FrameDecoder(max_data_len=1 << 17)
    decoder.use_digests(digests, digests)
    pdus = [pdu for a, b in zip(points, points[1:]) for pdu in decoder.feed(memoryview(bytes(raw[a:b])))]
    assert [(p.opcode, bytes(p.data), p.data_digest_error) for p in pdus] == expected
    assert decoder.buffered == 0
