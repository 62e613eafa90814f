"""Freed heap memory back to the system after a burst: glibc's malloc_trim(0).

glibc keeps what a process freed for its next allocations; after thousands of short-lived connections that is
tens of MB a worker never needs again. malloc_trim returns every free page, wherever it sits in the heap.
Elsewhere (another C library) only the first step is done: objects that a reference cycle kept alive are
collected first, so that what the burst left behind is really free.
"""
from __future__ import annotations

import ctypes
import gc

_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)


def trim_heap() -> None:
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
