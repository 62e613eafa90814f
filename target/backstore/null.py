"""The null backstore: reads return zeros, writes vanish. For protocol benchmarks and tests.

Completions are deferred to the end of the event loop's turn (`Reactor.call_soon`), so callbacks never run
from inside the call, and cost no ring round trip: what a benchmark on it measures is the protocol alone.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..reactor import Reactor
from .atomic import MAX_ATOMIC_BYTES
from .base import BackstoreError


class NullBackstore:
    """A LUN of `size` bytes that stores nothing (`path` and `direct` do not apply)."""

    __slots__ = ("size", "block_size", "write_cache", "_reactor", "_zeros")

    def __init__(self, reactor: Reactor, *, path: str | None, size: int | None, block_size: int,
                 direct: bool = False, write_cache: bool = True):
        if size is None:
            raise BackstoreError("null backstore: a size is required")
        self.size = size
        self.block_size = block_size
        self.write_cache = write_cache
        self._reactor = reactor
        self._zeros = memoryview(b"")           # shared by every read; grown to the largest read seen

    def read(self, offset: int, length: int, callback: Callable[[memoryview | OSError], None]) -> None:
        if length > len(self._zeros):
            self._zeros = memoryview(bytes(length))
        self._reactor.call_soon(callback, self._zeros[:length])

    def write(self, offset: int, data, fua: bool, callback: Callable[[OSError | None], None]) -> None:
        self._reactor.call_soon(callback, None)

    max_atomic_bytes: Final = MAX_ATOMIC_BYTES
    sends_with_read = False             # nothing to read: the data is at hand at once
    deallocates = False                 # nothing is allocated

    def atomic_write(self, offset: int, data, callback: Callable[[OSError | None], None]) -> None:
        self._reactor.call_soon(callback, None)

    def flush(self, callback: Callable[[OSError | None], None]) -> None:
        self._reactor.call_soon(callback, None)

    def unmap(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        self._reactor.call_soon(callback, None)

    def try_lock(self, offset: int, length: int) -> bool:
        return True

    def unlock(self, offset: int, length: int) -> None:
        pass

    def write_zeroes(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        self._reactor.call_soon(callback, None)

    def extents(self, offset: int, length: int):
        yield offset, length, True

    def close(self) -> None:
        pass
