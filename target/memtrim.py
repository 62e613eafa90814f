"""Freed heap memory back to the system after a burst: glibc's malloc_trim(0).

glibc keeps what a process freed for its next allocations; after thousands of short-lived connections that is
tens of MB a worker never needs again. malloc_trim returns every free page, wherever it sits in the heap.
Elsewhere (another C library) this does nothing.
"""
from __future__ import annotations

import ctypes

_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)


def trim_heap() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)
