"""iSCSI CRC32C digests (RFC 7143 §13.1, Appendix A.4): HeaderDigest after the BHS and AHS, DataDigest after a
non-empty data segment and its padding, each the CRC's four bytes least significant first.

The CRC comes from the `crc32c` package (SSE 4.2 / ARMv8 CRC instructions, software fallback): a C loop at
gigabytes per second, where a Python table would cost more than the rest of the data path.

Receiving is the frame decoder's job (framing.py, with `check`). Sending: the connection's output is a flat
list of buffers, whole PDUs in order, a PDU's pieces split anywhere (a header alone, header and data in one
buffer, data in several); `OutputDigests.apply` walks that stream and returns the buffers with the digests
in place, slicing without copying the data.
"""
from __future__ import annotations

from crc32c import crc32c

from .errors import ProtocolError
from .pdu import BHS_LEN, Buf, pad_len

DIGEST_LEN = 4


def digest(data: Buf, value: int = 0) -> bytes:
    """The digest of `data` (continuing a CRC of `value` when given) as it travels."""
    return crc32c(data, value).to_bytes(4, "little")


def check_header(header: Buf, received: Buf) -> None:
    """A header digest error: the lengths in it cannot be trusted, so the connection ends (§7.8)."""
    if digest(header) != received:
        raise ProtocolError("header digest error")


class OutputDigests:
    """Inserts the negotiated digests into outgoing PDUs, after the first `skip` bytes (the final Login
    Response, which goes without them)."""

    __slots__ = ("header", "data", "skip")

    def __init__(self, header: bool, data: bool, skip: int = 0) -> None:
        self.header = header
        self.data = data
        self.skip = skip

    def apply(self, bufs: list[Buf]) -> list[Buf]:
        out: list[Buf] = []
        pieces = _Pieces(bufs)
        if self.skip:
            out += pieces.take(self.skip)
            self.skip = 0
        while not pieces.exhausted:
            bhs = pieces.take(BHS_LEN)
            out += bhs
            header = b"".join(bhs)
            if header[4]:
                raise ValueError("the target sends no AHS")
            if self.header:
                out.append(digest(header))
            length = int.from_bytes(header[5:8], "big")
            if not length:
                continue
            segment = pieces.take(length + pad_len(length))
            out += segment
            if self.data:
                value = 0
                for piece in segment:
                    value = crc32c(piece, value)
                out.append(value.to_bytes(4, "little"))
        return out


class _Pieces:
    """Cuts byte ranges out of a list of buffers, as memoryview slices where a buffer must be split."""

    __slots__ = ("bufs", "index", "offset")

    def __init__(self, bufs: list[Buf]) -> None:
        self.bufs = bufs
        self.index = 0
        self.offset = 0

    @property
    def exhausted(self) -> bool:
        return self.index >= len(self.bufs)

    def take(self, n: int) -> list[Buf]:
        taken: list[Buf] = []
        while n:
            if self.exhausted:
                raise ValueError("output ends inside a PDU")
            buf = self.bufs[self.index]
            size = len(buf)
            available = size - self.offset
            if self.offset == 0 and n >= size:
                taken.append(buf)
                used = size
            else:
                used = min(n, available)
                taken.append(memoryview(buf)[self.offset:self.offset + used])
            n -= used
            self.offset += used
            if self.offset == size:
                self.index += 1
                self.offset = 0
        return taken
