"""Read buffers for backstores and the Data-In path: one class, so pooling can come later without touching the
stores. Pure Python, outside target/backstore/ so that the iSCSI layer imports it without the compiled ring.

Each buffer keeps HEADROOM bytes in front of its data, where the iSCSI layer can build a Data-In header and
send header and data as one contiguous piece: the data starts at `data_offset` in the view's `.obj`. In
memory (not O_DIRECT) buffers that `.obj` is a `HeadroomBuffer`, so a consumer can tell such a view from any
other and knows the HEADROOM bytes in front of the view are free to use.
"""
from __future__ import annotations

import mmap

HEADROOM = 48
PAGE = mmap.PAGESIZE


class HeadroomBuffer(bytearray):
    """HEADROOM free bytes, then the data of a view BufferPool.get handed out (see `headroom_view`)."""

    __slots__ = ()


def headroom_view(data) -> memoryview | None:
    """The whole buffer (HEADROOM bytes, then `data`) when `data` is an untruncated view from an in-memory
    BufferPool, else None."""
    obj = data.obj if type(data) is memoryview else None
    if type(obj) is HeadroomBuffer and len(obj) == HEADROOM + data.nbytes:
        return memoryview(obj)
    return None


class BufferPool:
    """Hands out writable memoryviews of the requested length. aligned=True (O_DIRECT): page-aligned data
    in anonymous mmap memory, with the headroom at the end of the page before it."""

    __slots__ = ("aligned", "data_offset")

    def __init__(self, aligned: bool = False):
        self.aligned = aligned
        self.data_offset = PAGE if aligned else HEADROOM

    def get(self, length: int) -> memoryview:
        buf: mmap.mmap | HeadroomBuffer
        if self.aligned:
            buf = mmap.mmap(-1, PAGE + -(-length // PAGE) * PAGE)
        else:
            buf = HeadroomBuffer(HEADROOM + length)
        return memoryview(buf)[self.data_offset:self.data_offset + length]
