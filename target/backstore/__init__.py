"""Backstores: the storage behind a LUN, chosen by kind from a small registry."""
from __future__ import annotations

import logging
import os
import stat

from ..reactor import Reactor
from .atomic import AtomicFileBackstore, JournalError
from .base import Backstore, BackstoreError
from .encrypted import EncryptedBackstore
from .file import FileBackstore, ImageGone, ImageIdentity
from .null import NullBackstore
from .rbd_image import RbdImage

__all__ = ["Backstore", "BackstoreError", "ImageGone", "ImageIdentity", "RbdImage", "open_backstore", "KINDS"]

log = logging.getLogger(f"ringtgt.{__name__}")

_STORES = {"file": FileBackstore, "null": NullBackstore}
KINDS = (*_STORES, "rbd")        # rbd.py loads librados and librbd: imported by the processes that use it
BLOCK_SIZES = (512, 4096)


def open_backstore(kind: str, reactor: Reactor, *, path: str | None, size: int | None, block_size: int,
                   direct: bool = False, write_cache: bool = True, encryption_key: str | None = None,
                   image: ImageIdentity | None = None, rbd: RbdImage | None = None,
                   atomic_writes: bool = True, write_queue_depth: int | None = None) -> Backstore:
    """Open the store of `kind`; BackstoreError if it cannot be (ImageGone: the file is not `image`). size None:
    the existing file's, device's or RBD image's size. With `encryption_key` (a key file's path) its blocks are
    encrypted (encrypted.py). `rbd`: the image of backstore "rbd". An image file offers WRITE ATOMIC (atomic.py)
    unless `atomic_writes` is False; its reads can then leave linked to their sends (file.py), and a journal its
    atomic writes left is replayed and cleared first (JournalError if it cannot be: the file may hold half of one).
    `write_queue_depth`: a file store's writes in the kernel at once (None: its default, file.WRITE_QUEUE_DEPTH)."""
    if kind not in KINDS:
        raise BackstoreError(f"unknown backstore {kind!r} (known: {', '.join(KINDS)})")
    if block_size not in BLOCK_SIZES:
        raise BackstoreError(f"block size must be 512 or 4096, got {block_size}")
    if size is not None and (size <= 0 or size % block_size):
        raise BackstoreError(f"size must be a positive multiple of the block size {block_size}, got {size}")
    if kind == "rbd":
        from .rbd import RbdBackstore
        if rbd is None:
            raise BackstoreError("rbd backstore: a pool and image are required")
        return RbdBackstore(reactor, rbd=rbd, size=size, block_size=block_size, write_cache=write_cache)
    store = _STORES[kind]
    depth = {"write_queue_depth": write_queue_depth} if write_queue_depth is not None else {}
    opened = None
    if store is FileBackstore and not _is_block_device(path):       # a journal beside a file only
        if atomic_writes:
            try:
                opened = AtomicFileBackstore(reactor, path=path, size=size, block_size=block_size, direct=direct,
                                             write_cache=write_cache, image=image, **depth)
            except JournalError as e:
                log.warning("%s: WRITE ATOMIC is not offered", e)
        elif os.path.lexists(f"{path}.atomic"):    # written with atomic writes before: what its journal holds
            AtomicFileBackstore(reactor, path=path, size=size, block_size=block_size, direct=direct,
                                write_cache=write_cache, image=image).close()   # is completed, and the record cleared
    if opened is None:
        extra = {"image": image, **depth} if store is FileBackstore else {}
        opened = store(reactor, path=path, size=size, block_size=block_size, direct=direct, write_cache=write_cache,
                       **extra)
    if encryption_key is None:
        return opened
    try:
        return EncryptedBackstore(opened, encryption_key)
    except BackstoreError:
        opened.close()
        raise


def _is_block_device(path: str | None) -> bool:
    if path is None:
        return False
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
