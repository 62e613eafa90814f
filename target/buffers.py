"""Read buffers for backstores and the Data-In path: one class, so pooling can come later without touching the
stores. Pure Python, outside target/backstore/ so that the iSCSI layer imports it without the compiled ring.

Each buffer keeps HEADROOM bytes in front of its data, where the iSCSI layer can build a Data-In header and
send header and data as one contiguous piece (see `headroom_view`). In memory buffers are a `HeadroomBuffer`:
the HEADROOM bytes, then the data. O_DIRECT buffers are an `AlignedBuffer`: the data starts on a page boundary
somewhere inside it, HEADROOM bytes in. Both are ordinary heap memory: an O_DIRECT buffer used to be an mmap of
its own, and mapping, faulting in and unmapping fresh pages for every I/O cost more than the I/O itself.
"""
from __future__ import annotations

import ctypes
import mmap
from typing import Any

HEADROOM = 48
PAGE = mmap.PAGESIZE
_char_at = ctypes.c_char.from_buffer
_address = ctypes.addressof


class HeadroomBuffer(bytearray):
    """HEADROOM free bytes, then the data of a view BufferPool.get handed out (see `headroom_view`)."""

    __slots__ = ()


class AlignedBuffer(bytearray):
    """`length` bytes of data at the page-aligned `offset` inside, HEADROOM free bytes (at least) in front."""

    __slots__ = ("offset", "length")
    offset: int
    length: int


def headroom_view(data) -> memoryview | None:
    """HEADROOM bytes, then `data`, as one view, when `data` is an untruncated view from a BufferPool, else
    None."""
    obj: Any = data.obj if type(data) is memoryview else None
    kind = type(obj)
    if kind is HeadroomBuffer:
        if len(obj) == HEADROOM + data.nbytes:
            return memoryview(obj)
    elif kind is AlignedBuffer and obj.length == data.nbytes:
        return memoryview(obj)[obj.offset - HEADROOM:obj.offset + obj.length]
    return None


class BufferPool:
    """Hands out writable memoryviews of the requested length; aligned=True (O_DIRECT): page-aligned."""

    __slots__ = ("aligned",)

    def __init__(self, aligned: bool = False):
        self.aligned = aligned

    def get(self, length: int) -> memoryview:
        if not self.aligned:
            return memoryview(HeadroomBuffer(HEADROOM + length))[HEADROOM:]
        buf = AlignedBuffer(HEADROOM + PAGE + length)
        buf.offset = offset = HEADROOM + -(_address(_char_at(buf)) + HEADROOM) % PAGE
        buf.length = length
        return memoryview(buf)[offset:offset + length]
