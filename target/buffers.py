"""Read buffers for backstores and the Data-In path, reused once their last view is gone (BufferPool). Outside
target/backstore/ so that the iSCSI layer imports it without the cffi ring. Compiled with the data path
(target/compiled.py), but for the buffer classes: a compiled class cannot subclass bytearray, so they stay Python
classes; a kept buffer is told free by its reference count read the same way when compiled as when not
(`_references`).

Each buffer keeps HEADROOM bytes in front of its data, where the iSCSI layer can build a Data-In header and
send header and data as one contiguous piece (see `headroom_view`). In memory buffers are a `HeadroomBuffer`:
the HEADROOM bytes, then the data. O_DIRECT buffers are an `AlignedBuffer`: the data starts on a page boundary
somewhere inside it, HEADROOM bytes in. Both are ordinary heap memory: an O_DIRECT buffer used to be an mmap of
its own, and mapping, faulting in and unmapping fresh pages for every I/O cost more than the I/O itself. A pool
given a ring registers the aligned buffers it keeps with it (`AlignedBuffer.slot`: the kernel pins their pages
once, not per I/O) and unregisters them when it closes.
"""
from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any, Final

from mypy_extensions import mypyc_attr

HEADROOM: Final = 48
PAGE: Final = mmap.PAGESIZE
KEEP_BYTES: Final = 2 << 20       # of each length kept for reuse, per pool (a pool: one LUN in one worker)
KEEP_LENGTHS: Final = 4           # lengths kept: a workload uses few (4k, 128k, …)
MAX_KEPT: Final = 1 << 20         # longer buffers are never kept
_char_at: Final = ctypes.c_char.from_buffer
_address: Final = ctypes.addressof
_refcount: Final = sys.getrefcount
_memoryview: Final = memoryview   # (held here: compiled code looks a builtin up by name at every use)


@mypyc_attr(native_class=False)
class HeadroomBuffer(bytearray):
    """HEADROOM free bytes, then the data of a view BufferPool.get handed out (see `headroom_view`)."""

    __slots__ = ()
    slot = -1                           # never registered with a ring


@mypyc_attr(native_class=False)
class AlignedBuffer(bytearray):
    """`length` bytes of data at the page-aligned `offset` inside, HEADROOM free bytes (at least) in front;
    `slot`: the ring's registered buffer holding the data, or -1."""

    __slots__ = ("offset", "length", "slot")
    offset: int
    length: int
    slot: int


class _Kept:
    """The buffers of one length a pool keeps, looked at in turn (a list and an index: compiled, native list
    operations, where a deque's `rotate` and indexing are generic calls)."""

    __slots__ = ("buffers", "limit", "turn")

    def __init__(self, limit: int) -> None:
        self.buffers: list[Any] = []
        self.limit = limit          # kept at most
        self.turn = 0               # the index of the one `get` looks at next


def _references(buffers: list[Any], index: int) -> int:
    """getrefcount of `buffers[index]` as read from here: `get` asks this before it holds the buffer itself, and
    _IDLE is what it reads for a buffer nothing else holds (the list's reference, the local's and the call's own
    where the interpreter counts them all, fewer where compiled code borrows references)."""
    buf = buffers[index]
    return _refcount(buf)


_IDLE: Final = _references([HeadroomBuffer(0)], 0)


def headroom_view(data) -> memoryview | None:
    """HEADROOM bytes, then `data`, as one view, when `data` is an untruncated view from a BufferPool, else
    None."""
    obj: Any = data.obj if type(data) is _memoryview else None
    kind = type(obj)
    if kind is HeadroomBuffer:
        if len(obj) == HEADROOM + data.nbytes:
            return _memoryview(obj)
    elif kind is AlignedBuffer:             # (its attributes read once: a Python class's, looked up by name)
        length = obj.length
        if length == data.nbytes:
            offset = obj.offset
            return _memoryview(obj)[offset - HEADROOM:offset + length]
    return None


def page_aligned(data) -> bool:
    """Whether `data` is a whole view `BufferPool.get` handed out of an `AlignedBuffer` (or a view of one), which
    starts on a page boundary: an O_DIRECT store writes it as it is (the Data-Out of a write is gathered in one,
    LogicalUnit.data_buffers). Told by its length, without asking for its address (that cost more than the rest
    of the test): the pool makes no other view of the data's length (`headroom_view`'s is HEADROOM longer)."""
    obj: Any = data.obj if type(data) is _memoryview else None
    return type(obj) is AlignedBuffer and obj.length == data.nbytes


class BufferPool:
    """Hands out writable memoryviews of the requested length; aligned=True (O_DIRECT): page-aligned.

    Buffers are reused: the pool keeps the first ones it handed out of each length (up to KEEP_BYTES of them, for
    up to KEEP_LENGTHS lengths of at most MAX_KEPT bytes), looks at them in turn, and gives one out again once
    nothing but the pool refers to it any more: its last view is gone, so neither the ring nor the iSCSI layer
    can still be using it. That saves the allocation and the zeroing of a fresh buffer per I/O; a reused one holds
    old data, which readers and writers overwrite in full (a short read zero-fills the rest). When the one in turn
    is in use and all are kept, a fresh buffer goes out and is not kept: a kept buffer is never dropped while in
    use, so a registered one keeps its slot while an op that names the slot may still wait to be submitted.

    With a `ring` (an ioring.Ring; aligned pools only), each aligned buffer the pool keeps is registered with it,
    as far as the ring's bounds allow; `close` unregisters them all.
    """

    __slots__ = ("aligned", "_kept", "_ring")

    def __init__(self, aligned: bool = False, ring: Any = None):
        self.aligned = aligned
        self._kept: dict[int, _Kept] = {}
        self._ring: Any = ring if aligned else None

    def get(self, length: int) -> memoryview:
        kept = self._kept.get(length)
        if kept is not None and kept.buffers:
            buffers = kept.buffers
            turn = kept.turn
            idle = _references(buffers, turn) == _IDLE
            buf = buffers[turn]
            kept.turn = turn + 1 if turn + 1 < len(buffers) else 0   # in use or not: the next get looks at the next
            if idle:
                if type(buf) is HeadroomBuffer:
                    return _memoryview(buf)[HEADROOM:]
                offset = buf.offset
                return _memoryview(buf)[offset:offset + length]
            if len(buffers) == kept.limit:
                kept = None                     # all kept: a fresh one, not kept (nor registered)
        elif kept is None and 0 < length <= MAX_KEPT and len(self._kept) < KEEP_LENGTHS:
            kept = self._kept[length] = _Kept(max(2, KEEP_BYTES // length))
        if not self.aligned:
            fresh = HeadroomBuffer(HEADROOM + length)
            if kept is not None:
                kept.buffers.append(fresh)
            return _memoryview(fresh)[HEADROOM:]
        aligned = AlignedBuffer(HEADROOM + PAGE + length)
        aligned.offset = offset = HEADROOM + -(_address(_char_at(aligned)) + HEADROOM) % PAGE
        aligned.length = length
        aligned.slot = -1
        view = _memoryview(aligned)[offset:offset + length]
        if kept is not None:
            if self._ring is not None:
                aligned.slot = self._ring.register_buffer(view)
            kept.buffers.append(aligned)
        return view

    def close(self) -> None:
        """Unregister the kept buffers from the ring (views still out stay valid, as plain memory)."""
        if self._ring is not None:
            for kept in self._kept.values():
                for buf in kept.buffers:
                    if buf.slot >= 0:
                        self._ring.unregister_buffer(buf.slot)
                        buf.slot = -1
            self._ring = None
