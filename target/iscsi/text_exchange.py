"""Key text spread over continued PDUs (the C bit, RFC 7143 §6.2, §11.10-11.11), sans-I/O.

`KeyText` collects what a login or a text exchange sends in continued PDUs: the chunks in a list, joined once
when the last one arrives (linear, however many continuations); the exchange's text is refused once it comes to
more than MAX_KEY_TEXT bytes in all.
`TextExchange` is the full feature phase's text exchange on one connection: it answers each continued Text
Request with an empty Text Response carrying a Target Transfer Tag, has the whole text answered when the final
one arrives, and hands a long answer out in parts no larger than the initiator's MaxRecvDataSegmentLength,
each part but the last with the C bit and a TTT the initiator sends back in an empty Text Request.
"""
from __future__ import annotations

from collections.abc import Callable

from .pdu import CONTINUE, FINAL, REJECT_INVALID_PDU_FIELD, REJECT_OUT_OF_RESOURCES, RESERVED_TAG, Buf

# The whole key text one login or one text exchange may send, continuations included. RFC 7143 sets no total;
# every key a login needs fits in a few KiB, so this only stops a peer that keeps continuing.
MAX_KEY_TEXT = 65536


class KeyText:
    """The key text of one exchange so far."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: list[Buf] = []
        self.size = 0

    def add(self, data: Buf) -> bool:
        """Append one PDU's text; False (and nothing kept) if the exchange would exceed MAX_KEY_TEXT bytes."""
        if self.size + len(data) > MAX_KEY_TEXT:
            self.clear()
            return False
        if data:
            self._chunks.append(data)
            self.size += len(data)
        return True

    def take(self) -> bytes:
        """The text collected since the last take, joined once; `size` keeps counting the whole exchange."""
        text = b"".join(self._chunks)
        self._chunks = []
        return text

    def clear(self) -> None:
        self._chunks = []
        self.size = 0


class TextRefused(Exception):
    """A Text Request the target answers with a Reject (`reason`, RFC 7143 §11.17.1)."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TextExchange:
    """The one text exchange a connection may have going at a time (RFC 7143 §11.10: an initiator has at most
    one outstanding Text Request per connection). It holds at most MAX_KEY_TEXT bytes of request and one answer
    until the initiator has fetched it."""

    __slots__ = ("_itt", "_ttt", "_text", "_answer", "_sent")

    def __init__(self) -> None:
        self._itt: int | None = None
        self._ttt = RESERVED_TAG
        self._text = KeyText()
        self._answer: memoryview | None = None
        self._sent = 0

    def receive(self, itt: int, ttt: int, flags: int, data: Buf, segment: int,
                answer: Callable[[bytes], bytes], new_ttt: Callable[[], int]) -> tuple[int, int, bytes]:
        """One Text Request; returns the Text Response's (flags, TTT, data). `answer(text)` turns the whole
        request text into the answer text (raising TextRefused for a request to Reject); `segment` is the most
        data the initiator accepts in one PDU; `new_ttt()` a fresh Target Transfer Tag (passed per call, not
        kept: the connection owns the exchange, and a reference back would make a cycle that outlives it).
        Raises TextRefused for a request that fits no exchange."""
        if ttt == RESERVED_TAG:                 # a new request: whatever was going on is dropped (§11.10.4)
            self._reset()
            self._itt = itt
        elif itt != self._itt or ttt != self._ttt:
            self._reset()
            raise TextRefused(REJECT_INVALID_PDU_FIELD, f"TTT 0x{ttt:08x} continues no text exchange of ITT "
                                                        f"0x{itt:08x}")
        if self._answer is not None:            # the initiator asks for the next part of our answer
            if data or flags & CONTINUE:
                self._reset()
                raise TextRefused(REJECT_INVALID_PDU_FIELD, "text sent while the target's answer was continued")
            return self._next_part(self._answer, segment, new_ttt)
        if not self._text.add(data):
            self._reset()
            raise TextRefused(REJECT_OUT_OF_RESOURCES, f"text request longer than {MAX_KEY_TEXT} bytes")
        if flags & CONTINUE:                    # more text follows: an empty answer that invites it (§6.2)
            return 0, self._continuation_tag(new_ttt), b""
        try:
            whole = self._answer = memoryview(answer(self._text.take()))
        except TextRefused:
            self._reset()
            raise
        return self._next_part(whole, segment, new_ttt)

    def _next_part(self, whole: memoryview, segment: int, new_ttt: Callable[[], int]) -> tuple[int, int, bytes]:
        start = self._sent
        part = bytes(whole[start:start + segment])
        self._sent = start + len(part)
        if self._sent < len(whole):
            return CONTINUE, self._continuation_tag(new_ttt), part
        self._reset()
        return FINAL, RESERVED_TAG, part

    def _continuation_tag(self, new_ttt: Callable[[], int]) -> int:
        if self._ttt == RESERVED_TAG:
            self._ttt = new_ttt()
        return self._ttt

    def _reset(self) -> None:
        self._itt = None
        self._ttt = RESERVED_TAG
        self._text.clear()
        self._answer = None
        self._sent = 0
