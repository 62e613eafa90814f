"""Framing decoder: bytes in, whole PDUs out (sans-I/O).

Feed whatever the socket delivered; get back every complete PDU. Limits are checked on the header, before
any data is buffered: a DataSegmentLength above our MaxRecvDataSegmentLength, or an AHS above the RFC limit,
is a protocol error the connection answers by closing (RFC 7143 §7.1.1 leaves no way to resync framing).
With digests negotiated (`use_digests`, from the first PDU after the login) a wrong HeaderDigest also closes
the connection; a wrong DataDigest marks the PDU (`data_digest_error`) for the connection to reject (§7.8).

A big data segment is received straight into its buffer, not copied out of the receive buffer: the rest of one
already begun (`rest_of_segment`), and, while commands come with big immediate data (a stream of big writes) and
no digests, the next one whole: by one receive of its header into a space of its own and on into a buffer for a
segment like the last (`segment_ahead`), or else by receiving the header alone first (`header_wanted`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .digests import DIGEST_LEN, check_header, digest
from .errors import ProtocolError
from .pdu import BHS_LEN, DATA_OUT, LOGIN_REQUEST, SCSI_COMMAND, SCSI_WRITE, TEXT_REQUEST, Buf, Pdu, decode_bhs

MAX_AHS_BYTES: Final = 255 * 4
# Login and Text PDUs may carry up to 8192 bytes whatever MaxRecvDataSegmentLength says (§6.2, §13.12).
NEGOTIATION_DATA_LIMIT: Final = 8192
_memoryview: Final = memoryview   # (held here: compiled code looks a builtin up by name at every use)
RECEIVE_INTO: Final = 16384  # what must be left of a segment being gathered for a receive straight into it


class FrameDecoder:
    """Accumulates received bytes and splits them into PDUs."""

    __slots__ = ("_buf", "_pending", "_fill", "_filled", "_big", "_big_lun", "_big_len", "header_space", "_ahead",
                 "_tail", "max_data_len", "_header_digest", "_data_digest", "segment_buffer")

    def __init__(self, max_data_len: int = 8192) -> None:
        self._buf = bytearray()
        self._pending: Pdu | None = None
        self._fill: memoryview | None = None    # the rest of the pending PDU (a big data segment), as it comes
        self._filled = 0
        self._big = False       # the last receive brought a command with big immediate data (`_straight`)
        self._big_lun = 0       # the LUN field and data length of the last such command (`segment_ahead`)
        self._big_len = 0
        self.header_space = memoryview(bytearray(BHS_LEN))    # a header received with its segment (`segment_ahead`)
        self._ahead: memoryview | None = None                 # the segment it was received with
        self._tail: memoryview | None = None                  # and where the bytes after that went
        # (LUN field, length) -> a writable memoryview of `length` bytes for a write command's big immediate data,
        # or None: the connection's (its unit's buffer pool), so that the data is copied only once
        self.segment_buffer: Callable[[int, int], memoryview | None] | None = None
        self.max_data_len = max_data_len
        self._header_digest = 0             # bytes of digest after the header / after a data segment
        self._data_digest = 0

    def use_digests(self, header: bool, data: bool) -> None:
        self._header_digest = DIGEST_LEN if header else 0
        self._data_digest = DIGEST_LEN if data else 0

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._filled

    def rest_of_segment(self) -> memoryview | None:
        """The rest of a big data segment being gathered (see `feed`), when at least RECEIVE_INTO bytes of it are
        still to come or it is a command's big immediate data (after which the next header comes alone or with a
        segment taken ahead: `header_wanted`): the caller may receive straight into it, then report the bytes with
        `filled`."""
        fill, pending = self._fill, self._pending     # (a fill belongs to the pending PDU)
        if fill is None or pending is None:
            return None
        if len(fill) - self._filled < RECEIVE_INTO and not self._straight(pending):
            return None
        return fill[self._filled:]

    def _straight(self, pdu: Pdu) -> bool:
        """Whether `pdu` is a write command with more than RECEIVE_INTO bytes of immediate data and nothing else in its
        segment's buffer (no AHS, digest or padding, which would come before or after the data in it, and leave
        the data off the page an O_DIRECT store needs it on): received straight into its buffer, and a sign that
        more of its kind follow (a stream of big writes)."""
        return (pdu.opcode == SCSI_COMMAND and (pdu.flags & SCSI_WRITE) != 0 and pdu.data_len > RECEIVE_INTO
                and not pdu.data_len & 3 and not pdu.ahs_len and not self._header_digest and not self._data_digest)

    def _note_straight(self, pdus: list[Pdu]) -> None:
        """Note whether any of `pdus` (one receive's) is `_straight`: then the next receive stops at the next
        header, or takes it with a segment like the last such command's. Any, not only the last: in a mix of big
        writes and small reads the last is mostly a read command, and the big writes before it then came whole in
        the receive buffer and were copied out (64k 70/30 mix on the null LUN: 3 % more IOPS, 3 runs of 3)."""
        big = False
        for pdu in pdus:
            if self._straight(pdu):
                big = True
                self._big_lun, self._big_len = pdu.lun_field, pdu.data_len
        self._big = big

    def segment_ahead(self, tail: memoryview) -> memoryview | None:
        """While commands come with big immediate data (`header_wanted`) and no header is begun: a buffer for the
        data segment of the next one, as long as the last one's and for its unit, so that one receive takes the
        next header into `header_space`, its data on straight into this buffer, and whatever follows into `tail`
        (the receive buffer); then `header_and_segment`. None: receive the header alone."""
        hook = self.segment_buffer
        if not self._big or self._pending is not None or self._buf or hook is None:
            return None
        ahead = hook(self._big_lun, self._big_len)
        if ahead is not None:
            self._ahead, self._tail = ahead, tail
        return ahead

    def header_and_segment(self, count: int) -> list[Pdu]:
        """`count` bytes were received into `header_space`, on into `segment_ahead`'s buffer and then its `tail`;
        the PDUs now complete (as `feed`). When the header is of a write like the last, its data is in place (all
        of it once `filled` says so); else the bytes after the header are taken as any received bytes are."""
        ahead: memoryview = self._ahead  # type: ignore[assignment]     # called after segment_ahead gave one
        tail: memoryview = self._tail  # type: ignore[assignment]
        self._ahead = self._tail = None
        if count <= BHS_LEN:
            return self.feed(self.header_space[:count])
        pdu = self._header(bytes(self.header_space))
        self._pending = pdu
        count -= BHS_LEN
        beyond = count - ahead.nbytes       # bytes in the tail
        if pdu.data_len == ahead.nbytes and pdu.lun_field == self._big_lun and self._straight(pdu):
            self._fill = ahead
            out = self.filled(count if beyond <= 0 else ahead.nbytes)
        else:
            out = self.feed(ahead[:count] if beyond <= 0 else ahead)
        if beyond > 0:
            out += self.feed(tail[:beyond])
            if out:
                self._note_straight(out)    # the whole receive's, as for one feed
        return out

    def drop_ahead(self) -> None:
        """Let go of the buffers of a receive taken ahead (`segment_ahead`): its connection is closing."""
        self._ahead = self._tail = None

    def header_wanted(self) -> int:
        """While commands come with big immediate data, how many bytes of the next header are still to come, so
        that the caller receives only those and the data segment after them goes straight into its buffer (through
        `rest_of_segment`: one more receive, against a copy of more than RECEIVE_INTO bytes). 0: receive all there
        is (small PDUs batch many to a receive)."""
        if not self._big or self._pending is not None:       # (a segment being gathered has its PDU pending)
            return 0
        return BHS_LEN + self._header_digest - len(self._buf)

    def filled(self, count: int) -> list[Pdu]:
        """`count` more bytes of the segment being gathered are in place; its PDU once complete (as `feed`)."""
        fill: memoryview = self._fill  # type: ignore[assignment]     # called while a segment is gathered
        self._filled += count
        if self._filled < fill.nbytes:
            return []
        pdu: Pdu = self._pending  # type: ignore[assignment]   # a fill belongs to the pending PDU
        self._fill, self._filled, self._pending = None, 0, None
        self._segment(pdu, fill, 0, True)
        self._note_straight([pdu])
        return [pdu]

    def feed(self, data: Buf) -> list[Pdu]:
        """Append `data` and return the PDUs now complete (raises ProtocolError on a framing violation).

        With nothing held back from earlier calls (the usual case) the PDUs are cut straight out of `data`
        and only an incomplete tail is copied in. The caller may reuse `data` once it has handled the PDUs: a
        Data-Out's data segment is a view into it (copied once, into its command's buffer). The rest of a
        PDU whose data segment is bigger than NEGOTIATION_DATA_LIMIT and not all here (a Data-Out or immediate
        data split across receives) is gathered in a buffer of its own size, which becomes its `data`: each byte
        is copied once, not appended, moved and copied out again."""
        out: list[Pdu] = []
        fill = self._fill
        if fill is not None:
            filled = self._filled
            taken = min(len(data), len(fill) - filled)
            fill[filled:filled + taken] = _memoryview(data)[:taken]    # (not into a bytearray: its slice
            # assignment from anything but a bytearray copies the source first)
            out = self.filled(taken)
            if not out or taken == len(data):
                return out
            data = _memoryview(data)[taken:]
        buf = self._buf
        held = bool(buf)
        if held:
            buf += data
            source = _memoryview(buf)
        else:
            source = _memoryview(data)
        pos = 0
        end = source.nbytes
        pending = self._pending
        header_digest, data_digest_len = self._header_digest, self._data_digest    # once per feed, not per PDU
        try:
            while True:
                if pending is None:
                    if end - pos < BHS_LEN:
                        break
                    pending = self._header(bytes(source[pos:pos + BHS_LEN]))
                    pos += BHS_LEN
                data_len = pending.data_len
                if data_len or pending.ahs_len or header_digest:    # else a bare BHS (a read, most often): whole
                    need = pending.ahs_len + header_digest + data_len + (-data_len & 3) + (data_digest_len
                                                                                           if data_len else 0)
                    if end - pos < need:
                        if data_len > NEGOTIATION_DATA_LIMIT:
                            fill = self._fill = self._buffer(pending, need)
                            fill[:end - pos] = source[pos:end]
                            self._filled = end - pos
                            pos = end
                        break
                    pos = self._segment(pending, source, pos, False, not held)
                out.append(pending)
                pending = None
        finally:
            self._pending = pending
            if out:
                self._note_straight(out)
            if held:
                source.release()
                if pos:
                    del buf[:pos]
            else:
                if pos < end:
                    buf += source[pos:]
                source.release()
        return out

    def _buffer(self, pdu: Pdu, length: int) -> memoryview:
        """A buffer for the big data segment of `pdu` (and its padding and digest, all `length` bytes)."""
        hook = self.segment_buffer
        given = (hook(pdu.lun_field, length) if hook is not None and pdu.opcode == SCSI_COMMAND
                 and pdu.flags & SCSI_WRITE else None)
        return given if given is not None else memoryview(bytearray(length))

    def _segment(self, pdu: Pdu, source: memoryview, pos: int, whole: bool = False, view: bool = False) -> int:
        """Take the AHS, header digest and data segment (with its padding and digest) of `pdu` from `source` at
        `pos`, all there; returns the position after them. `whole`: `source` is a buffer of this PDU's alone
        (`_buffer`), whose data is taken as it is; `view`: a Data-Out's data may be a view into `source`. Any
        other data segment above NEGOTIATION_DATA_LIMIT is copied into a `_buffer`, smaller ones into bytes."""
        ahs_len = pdu.ahs_len
        data_len = pdu.data_len
        header_digest = self._header_digest
        if ahs_len:
            pdu.ahs = bytes(source[pos:pos + ahs_len])
            pos += ahs_len
        if header_digest:
            check_header(pdu.header + pdu.ahs, source[pos:pos + header_digest])
            pos += header_digest
        if not data_len:
            return pos
        padded = data_len + (-data_len & 3)
        if whole:
            pdu.data = source if pos == 0 and data_len == source.nbytes else source[pos:pos + data_len]
        elif view and pdu.opcode == DATA_OUT:   # a view (never `source` itself: released once feed returns),
            pdu.data = source[pos:pos + data_len]   # copied where it goes at once
        elif data_len > NEGOTIATION_DATA_LIMIT:
            data = pdu.data = self._buffer(pdu, data_len)
            data[:] = source[pos:pos + data_len]
        else:
            pdu.data = bytes(source[pos:pos + data_len])
        data_digest = self._data_digest
        if data_digest and digest(source[pos:pos + padded]) != source[pos + padded:pos + padded + data_digest]:
            pdu.data_digest_error = True
        return pos + padded + data_digest

    def _header(self, raw: bytes) -> Pdu:
        """The PDU whose BHS is `raw`, its lengths checked against the limits before any of its data is taken."""
        pdu = decode_bhs(raw)
        if pdu.data_len > self.max_data_len or pdu.ahs_len:
            self._check_limits(pdu)
        return pdu

    def _check_limits(self, pdu: Pdu) -> None:
        if pdu.ahs_len > MAX_AHS_BYTES:
            raise ProtocolError(f"TotalAHSLength {pdu.ahs_len} exceeds {MAX_AHS_BYTES} bytes")
        limit = self.max_data_len
        if pdu.opcode in (LOGIN_REQUEST, TEXT_REQUEST):
            limit = max(limit, NEGOTIATION_DATA_LIMIT)
        if pdu.data_len > limit:
            raise ProtocolError(f"DataSegmentLength {pdu.data_len} exceeds MaxRecvDataSegmentLength {limit}")
