"""Framing decoder: bytes in, whole PDUs out (sans-I/O).

Feed whatever the socket delivered; get back every complete PDU. Limits are checked on the header, before
any data is buffered: a DataSegmentLength above our MaxRecvDataSegmentLength, or an AHS above the RFC limit,
is a protocol error the connection answers by closing (RFC 7143 §7.1.1 leaves no way to resync framing).
With digests negotiated (`use_digests`, from the first PDU after the login) a wrong HeaderDigest also closes
the connection; a wrong DataDigest marks the PDU (`data_digest_error`) for the connection to reject (§7.8).
"""
from __future__ import annotations

from .digests import DIGEST_LEN, check_header, digest
from .errors import ProtocolError
from .pdu import BHS_LEN, LOGIN_REQUEST, TEXT_REQUEST, Buf, Pdu, decode_bhs

MAX_AHS_BYTES = 255 * 4
# Login and Text PDUs may carry up to 8192 bytes whatever MaxRecvDataSegmentLength says (§6.2, §13.12).
NEGOTIATION_DATA_LIMIT = 8192


class FrameDecoder:
    """Accumulates received bytes and splits them into PDUs."""

    __slots__ = ("_buf", "_pending", "max_data_len", "_header_digest", "_data_digest")

    def __init__(self, max_data_len: int = 8192) -> None:
        self._buf = bytearray()
        self._pending: Pdu | None = None
        self.max_data_len = max_data_len
        self._header_digest = 0             # bytes of digest after the header / after a data segment
        self._data_digest = 0

    def use_digests(self, header: bool, data: bool) -> None:
        self._header_digest = DIGEST_LEN if header else 0
        self._data_digest = DIGEST_LEN if data else 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: Buf) -> list[Pdu]:
        """Append `data` and return the PDUs now complete (raises ProtocolError on a framing violation).

        With nothing held back from earlier calls (the usual case) the PDUs are cut straight out of `data`
        and only an incomplete tail is copied in; the caller may reuse `data` once this returns."""
        buf = self._buf
        held = bool(buf)
        if held:
            buf += data
            source = memoryview(buf)
        else:
            source = memoryview(data)
        out: list[Pdu] = []
        pos = 0
        end = source.nbytes
        pdu = self._pending
        header_digest, data_digest_len = self._header_digest, self._data_digest    # once per feed, not per PDU
        try:
            while True:
                if pdu is None:
                    if end - pos < BHS_LEN:
                        break
                    pdu = decode_bhs(bytes(source[pos:pos + BHS_LEN]))
                    if pdu.data_len > self.max_data_len or pdu.ahs_len:
                        self._check_limits(pdu)
                    pos += BHS_LEN
                ahs_len = pdu.ahs_len
                data_len = pdu.data_len
                padded = data_len + (-data_len & 3)
                data_digest = data_digest_len if data_len else 0
                need = ahs_len + header_digest + padded + data_digest
                if end - pos < need:
                    break
                if ahs_len:
                    pdu.ahs = bytes(source[pos:pos + ahs_len])
                    pos += ahs_len
                if header_digest:
                    check_header(pdu.header + pdu.ahs, source[pos:pos + header_digest])
                    pos += header_digest
                if data_len:
                    pdu.data = bytes(source[pos:pos + data_len])
                    if data_digest and digest(source[pos:pos + padded]) != source[pos + padded:pos + padded + 4]:
                        pdu.data_digest_error = True
                pos += padded + data_digest
                out.append(pdu)
                pdu = None
        finally:
            self._pending = pdu
            if held:
                source.release()
                if pos:
                    del buf[:pos]
            else:
                if pos < end:
                    buf += source[pos:]
                source.release()
        return out

    def _check_limits(self, pdu: Pdu) -> None:
        if pdu.ahs_len > MAX_AHS_BYTES:
            raise ProtocolError(f"TotalAHSLength {pdu.ahs_len} exceeds {MAX_AHS_BYTES} bytes")
        limit = self.max_data_len
        if pdu.opcode in (LOGIN_REQUEST, TEXT_REQUEST):
            limit = max(limit, NEGOTIATION_DATA_LIMIT)
        if pdu.data_len > limit:
            raise ProtocolError(f"DataSegmentLength {pdu.data_len} exceeds MaxRecvDataSegmentLength {limit}")
