"""Backstores: the storage behind a LUN, chosen by kind from a small registry."""
from __future__ import annotations

from ..reactor import Reactor
from .base import Backstore, BackstoreError
from .file import FileBackstore
from .null import NullBackstore

__all__ = ["Backstore", "BackstoreError", "open_backstore", "KINDS"]

_STORES = {"file": FileBackstore, "null": NullBackstore}
KINDS = tuple(_STORES)
BLOCK_SIZES = (512, 4096)


def open_backstore(kind: str, reactor: Reactor, *, path: str | None, size: int | None, block_size: int,
                   direct: bool = False, write_cache: bool = True) -> Backstore:
    """Open the store of `kind`; BackstoreError if it cannot be. size None: the existing file's or
    device's size."""
    store = _STORES.get(kind)
    if store is None:
        raise BackstoreError(f"unknown backstore {kind!r} (known: {', '.join(KINDS)})")
    if block_size not in BLOCK_SIZES:
        raise BackstoreError(f"block size must be 512 or 4096, got {block_size}")
    if size is not None and (size <= 0 or size % block_size):
        raise BackstoreError(f"size must be a positive multiple of the block size {block_size}, got {size}")
    return store(reactor, path=path, size=size, block_size=block_size, direct=direct, write_cache=write_cache)
