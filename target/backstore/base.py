"""What the SCSI layer may rely on from any backstore, and the error raised when one cannot be opened."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class BackstoreError(Exception):
    """A backstore cannot be opened or configured; the message names the path (if any) and the reason."""


class Backstore(Protocol):
    """Storage behind one LUN. Every callback runs from the event loop (a ring completion, or a call deferred
    to the end of the turn), never from inside the call that queued the operation, so callers are never
    re-entered."""

    @property
    def size(self) -> int: ...              # bytes

    @property
    def block_size(self) -> int: ...        # 512 or 4096

    @property
    def write_cache(self) -> bool: ...      # WCE; False: every write is durable before its callback

    @property
    def max_atomic_bytes(self) -> int: ...  # the largest `atomic_write` (AtomicBackstore); 0: the store has none

    @property
    def deallocates(self) -> bool: ...      # `unmap` frees space (False: it writes zeros, no holes to punch)

    @property
    def sends_with_read(self) -> bool: ...  # `read` takes `then_send` (ScsiTask.send_with_read; FileBackstore)

    def read(self, offset: int, length: int, callback: Callable[[memoryview | OSError], None]) -> None:
        """Exactly `length` bytes at `offset` (zeros past the end of the file)."""

    def write(self, offset: int, data, fua: bool, callback: Callable[[OSError | None], None]) -> None:
        """All of `data` at `offset`; with `fua` (or without write cache) durable before the callback."""

    def flush(self, callback: Callable[[OSError | None], None]) -> None:
        """Make every completed write durable."""

    def unmap(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        """Deallocate the range; it reads back as zeros."""

    def try_lock(self, offset: int, length: int) -> bool:
        """Lock the byte range against other processes without waiting; False if one of them holds it."""

    def unlock(self, offset: int, length: int) -> None:
        """Release a range locked by try_lock."""

    def write_zeroes(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        """Make the range read as zeros, allocated, without sending the zeros."""

    def extents(self, offset: int, length: int):
        """Yield the range as consecutive (offset, length, mapped) pieces; unmapped ones read as zeros."""

    def close(self) -> None:
        """Release the store; no operation may be in flight."""


class AtomicBackstore(Backstore, Protocol):
    """A backstore whose max_atomic_bytes is not 0 (atomic.py, and encryption over it)."""

    def atomic_write(self, offset: int, data, callback: Callable[[OSError | None], None]) -> None:
        """All of `data` at `offset` or none of it, for readers and across a crash; durable before the callback."""
