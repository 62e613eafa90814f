"""The stand-in store of a LUN whose image is gone when a worker starts (backstore/images.py): the configured
size, and every operation failing with ENOMEDIUM. The unit is offline (scsi/lun.py), so none should reach it."""
from __future__ import annotations

import errno
import os
from collections.abc import Callable

from ..reactor import Reactor


class OfflineBackstore:
    __slots__ = ("path", "size", "block_size", "write_cache", "_reactor")

    max_atomic_bytes = 0
    sends_with_read = False
    deallocates = False                 # (the VPD pages of a thin unit ask, offline or not)

    def __init__(self, reactor: Reactor, *, path: str | None, size: int, block_size: int, write_cache: bool):
        self.path = path
        self.size = size
        self.block_size = block_size
        self.write_cache = write_cache
        self._reactor = reactor

    def _fail(self, callback: Callable) -> None:
        error = OSError(errno.ENOMEDIUM, os.strerror(errno.ENOMEDIUM), self.path)
        self._reactor.call_soon(callback, error)

    def read(self, offset: int, length: int, callback: Callable) -> None:
        self._fail(callback)

    def write(self, offset: int, data, fua: bool, callback: Callable) -> None:
        self._fail(callback)

    def flush(self, callback: Callable) -> None:
        self._fail(callback)

    def unmap(self, offset: int, length: int, callback: Callable) -> None:
        self._fail(callback)

    def write_zeroes(self, offset: int, length: int, callback: Callable) -> None:
        self._fail(callback)

    def try_lock(self, offset: int, length: int) -> bool:
        return False

    def unlock(self, offset: int, length: int) -> None:
        pass

    def extents(self, offset: int, length: int):
        yield offset, length, True

    def close(self) -> None:
        pass
