"""Encryption at rest for a LUN configured with `encryption_key`: AES-256-XTS per logical block with the LBA as
tweak (dm-crypt's aes-xts-plain64 layout), through the `cryptography` package (OpenSSL, AES-NI).

What it is for: SANITIZE CRYPTO ERASE (scsi/sanitize.py) replaces the key, which leaves every block written
before unreadable at once; and a copy of the image file or disk shows only ciphertext, as long as the key file
is kept elsewhere (another disk, or a tmpfs filled from a key service at boot).

A block that is all zeros on the medium (a punched hole, a zeroed range) reads as zeros, so thin provisioning
keeps LBPRZ and unmapping needs no encryption; a ciphertext block of all zeros has a chance of 2^-4096. The key
file holds 64 random bytes (made, mode 0600, when missing). CRYPTO ERASE writes the new key over the old one in
place and syncs it; every worker reads the file again when the sanitize ends (LogicalUnit.set_medium). The cost
is about 5 µs of CPU per 512-byte block each way.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .base import BackstoreError

KEY_BYTES = 64                      # AES-256-XTS: two 256-bit keys


def _read_key(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            key = os.pread(fd, KEY_BYTES + 1, 0)
            if not key:
                key = os.urandom(KEY_BYTES)
                os.pwrite(fd, key, 0)
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise BackstoreError(f"encryption key {path}: {e.strerror}") from e
    if len(key) != KEY_BYTES or key[:32] == key[32:]:
        raise BackstoreError(f"encryption key {path}: must hold {KEY_BYTES} bytes, two different AES-256 keys")
    return key


class EncryptedBackstore:
    """Wraps a backstore: blocks are encrypted on their way to it and decrypted on their way back."""

    sends_with_read = False             # what the inner store reads is decrypted before it can be sent

    def __init__(self, inner, key_path: str):
        self._inner = inner
        self._key_path = key_path
        self._aes = algorithms.AES(_read_key(key_path))
        self.block_size = inner.block_size
        self.max_atomic_bytes = inner.max_atomic_bytes
        self._zero_block = bytes(inner.block_size)

    @property
    def size(self) -> int:
        return self._inner.size

    @size.setter
    def size(self, value: int) -> None:         # a LUN grown (`ringtgt resize`)
        self._inner.size = value

    @property
    def deallocates(self) -> bool:
        return self._inner.deallocates

    @property
    def write_cache(self) -> bool:
        return self._inner.write_cache

    @write_cache.setter
    def write_cache(self, value: bool) -> None:
        self._inner.write_cache = value

    def _crypt(self, offset: int, data, encrypt: bool) -> bytearray:
        size, aes, zero = self.block_size, self._aes, self._zero_block
        view = memoryview(data)
        out = bytearray(len(view))
        lba = offset // size
        for start in range(0, len(view), size):
            block = view[start:start + size]
            if encrypt or block != zero:
                cipher = Cipher(aes, modes.XTS((lba + start // size).to_bytes(16, "little")))
                worker = cipher.encryptor() if encrypt else cipher.decryptor()
                out[start:start + size] = worker.update(block)
        return out

    def read(self, offset: int, length: int, callback: Callable) -> None:
        def decrypted(result) -> None:
            callback(result if isinstance(result, OSError) else memoryview(self._crypt(offset, result, False)))
        self._inner.read(offset, length, decrypted)

    def write(self, offset: int, data, fua: bool, callback: Callable[[OSError | None], None]) -> None:
        self._inner.write(offset, self._crypt(offset, data, True), fua, callback)

    def atomic_write(self, offset: int, data, callback: Callable[[OSError | None], None]) -> None:
        self._inner.atomic_write(offset, self._crypt(offset, data, True), callback)

    def rekey(self) -> None:
        """CRYPTO ERASE: a new key, written over the old one in the key file and synced, then used."""
        key = os.urandom(KEY_BYTES)
        fd = os.open(self._key_path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, key, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._aes = algorithms.AES(key)

    def reload_key(self) -> None:
        """Another worker may have replaced the key (a CRYPTO ERASE ended)."""
        self._aes = algorithms.AES(_read_key(self._key_path))

    def flush(self, callback) -> None:
        self._inner.flush(callback)

    def unmap(self, offset: int, length: int, callback) -> None:
        self._inner.unmap(offset, length, callback)

    def write_zeroes(self, offset: int, length: int, callback) -> None:
        self._inner.write_zeroes(offset, length, callback)

    def try_lock(self, offset: int, length: int) -> bool:
        return self._inner.try_lock(offset, length)

    def unlock(self, offset: int, length: int) -> None:
        self._inner.unlock(offset, length)

    def extents(self, offset: int, length: int):
        return self._inner.extents(offset, length)

    def close(self) -> None:
        self._inner.close()
