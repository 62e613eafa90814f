"""Atomic writes to a file backstore (WRITE ATOMIC(16), SBC-4 4.29): every block of one, or none, for every
reader in every worker process and across a crash.

Crash: a journal beside the backing file (`<path>.atomic`). An atomic write goes to the journal first (its
offset, length and a CRC32C over them and the data), durably; then in place, durably; then the journal record
is cleared, durably. Opening the file replays a valid record (a torn one fails its CRC: nothing was written in
place yet), so after a crash the blocks hold all of the write or none of it.

Other I/O: a generation counter that every worker maps (MAP_SHARED, the journal's first page) is odd while an
atomic write is being written in place, a sequence lock. Every read, write, unmap and zeroing of the file reads
it before and after: if an atomic write ran in between, a read is repeated (it may have seen part of it) and a
write, unmap or zeroing is repeated (so that it lands after the atomic write, not inside it: they are
idempotent) once the counter is even again; only then does the caller hear of it. A write is acknowledged
after the journal record that could overwrite it at a replay is gone. The cost to ordinary I/O is two reads of
the counter.

One atomic write at a time per file and node: an OFD lock on the journal (other workers) and a queue (this
worker). A worker that dies while writing leaves the counter odd and the lock free; the first worker that waits
for the counter then takes the lock, replays the record and evens the counter.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
from collections import deque
from collections.abc import Callable
from struct import Struct

from crc32c import crc32c

from ioring import RWF_DSYNC, error_for

from ..reactor import Reactor
from .base import BackstoreError
from .file import WRITE_QUEUE_DEPTH, FileBackstore, ImageIdentity, ofd_lock, ofd_unlock

log = logging.getLogger(f"ringtgt.{__name__}")

MAX_ATOMIC_BYTES = 1 << 20          # the largest atomic write (Block Limits VPD MAXIMUM ATOMIC TRANSFER LENGTH)
POLL_SECONDS = 0.001                # how often a waiter looks at the counter, or retries the lock
_RECORD = Struct("<QQII")           # magic, offset, length, CRC32C of (offset, length, data)
_RECORD_AT = mmap.PAGESIZE          # the record and its data follow the counter's page
_MAGIC = 0x314F5449_4D4F5441        # b"ATOMITO1", little-endian
_CLEARED = bytes(8)
_COVERED = Struct("<QI")            # what the CRC covers besides the data: offset, length


def _record_crc(offset: int, data) -> int:
    return crc32c(data, crc32c(_COVERED.pack(offset, len(data))))


class JournalError(BackstoreError):
    """The journal cannot be made (a directory the target may not write to): the file has no atomic writes."""


class AtomicFileBackstore(FileBackstore):
    """A regular file with atomic writes (`atomic_write`), and every other operation checked against them."""

    __slots__ = ("_journal", "_counter", "_generation", "_queue", "_writing", "_waiters")

    max_atomic_bytes = MAX_ATOMIC_BYTES
    sends_with_read = False             # a read is checked against the atomic writes only once it completed

    def __init__(self, reactor: Reactor, *, path: str | None, size: int | None, block_size: int, direct: bool = False,
                 write_cache: bool = True, image: ImageIdentity | None = None,
                 write_queue_depth: int = WRITE_QUEUE_DEPTH):
        # (the arguments named: mypyc 2.4 passed `**kwargs` on to the compiled __init__ as its first keyword)
        super().__init__(reactor, path=path, size=size, block_size=block_size, direct=direct, write_cache=write_cache,
                         image=image, write_queue_depth=write_queue_depth)
        journal = self.path + ".atomic"
        try:
            self._journal = os.open(journal, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if os.fstat(self._journal).st_size < _RECORD_AT + _RECORD.size + MAX_ATOMIC_BYTES:
                os.ftruncate(self._journal, _RECORD_AT + _RECORD.size + MAX_ATOMIC_BYTES)
            self._counter = mmap.mmap(self._journal, mmap.PAGESIZE)
            self._generation = memoryview(self._counter).cast("Q")     # [0]: the counter, cheaply
            self._lock(wait=True)
            try:
                self._recover()
            finally:
                self._unlock()
        except OSError as e:
            super().close()
            raise JournalError(f"cannot open the atomic write journal {journal}: {e.strerror}") from e
        self._queue: deque = deque()
        self._writing = False               # this worker holds the journal
        self._waiters: list[Callable[[], None]] = []   # I/O of this worker waiting for its own atomic write

    # -- the journal lock and the counter ------------------------------------------------------------------
    def _lock(self, wait: bool = False) -> bool:
        return ofd_lock(self._journal, 0, 1, wait)

    def _unlock(self) -> None:
        ofd_unlock(self._journal, 0, 1)

    def generation(self) -> int:
        return self._generation[0]

    def _advance(self) -> None:
        self._generation[0] += 1

    def _recover(self) -> None:
        """With the journal lock held: write a valid record in place again, clear it, even the counter."""
        header = os.pread(self._journal, _RECORD.size, _RECORD_AT)
        magic, offset, length, crc = _RECORD.unpack(header)
        if magic == _MAGIC and length <= MAX_ATOMIC_BYTES and offset + length <= self.size:
            data = os.pread(self._journal, length, _RECORD_AT + _RECORD.size)
            if len(data) == length and _record_crc(offset, data) == crc:
                log.warning("%s: completing an atomic write of %d bytes at %d from its journal", self.path,
                            length, offset)
                fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)    # buffered, even for a `direct` unit
                try:
                    os.pwrite(fd, data, offset)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
        if magic:
            os.pwrite(self._journal, _CLEARED, _RECORD_AT)
            os.fdatasync(self._journal)
        if self.generation() & 1:
            self._advance()

    # -- every other operation, checked against atomic writes ----------------------------------------------
    # FileBackstore's read and write check inline, in their one completion closure (`start`, `_moved`, `_again`);
    # the rarer operations get a wrapping completion (`_checked`).
    def _moved(self, start: int) -> bool:
        return bool(start & 1) or self._generation[0] != start

    def _again(self, then: Callable[[], None]) -> None:
        """Run `then` once the counter is even (at once, if it is)."""
        self._when_even(then)

    def _when_even(self, then: Callable[[], None]) -> None:
        if self._writing:
            self._waiters.append(then)
            return
        if self.generation() & 1 and self._lock():   # odd, and nobody holds the journal
            try:
                self._complete_from_journal("left unfinished by a worker that died")
            finally:
                self._unlock()
        if self.generation() & 1:
            self._reactor.call_later(POLL_SECONDS, lambda: self._when_even(then))
        else:
            then()

    def read(self, offset: int, length: int, callback, start: int | None = None, then_send=None) -> None:
        """As FileBackstore's, never with a linked send (`sends_with_read`): the data is checked once read."""
        FileBackstore.read(self, offset, length, callback, self._generation[0] if start is None else start)

    def write(self, offset: int, data, fua: bool, callback, start: int | None = None) -> None:
        FileBackstore.write(self, offset, data, fua, callback, self._generation[0] if start is None else start)

    def unmap(self, offset: int, length: int, callback) -> None:
        FileBackstore.unmap(self, offset, length, self._checked(self._generation[0],
                                                                lambda: self.unmap(offset, length, callback), callback))

    def write_zeroes(self, offset: int, length: int, callback) -> None:
        FileBackstore.write_zeroes(self, offset, length, self._checked(
            self._generation[0], lambda: self.write_zeroes(offset, length, callback), callback))

    # -- atomic writes ------------------------------------------------------------------------------------
    def atomic_write(self, offset: int, data, callback: Callable[[OSError | None], None]) -> None:
        """All of `data` at `offset` or none of it, durable before the callback (at most MAX_ATOMIC_BYTES)."""
        if len(data) > MAX_ATOMIC_BYTES:
            raise ValueError(f"atomic write of {len(data)} bytes, more than {MAX_ATOMIC_BYTES}")
        self._queue.append((offset, bytes(data), callback))
        if not self._writing:
            self._next()

    def _next(self) -> None:
        if not self._queue:
            return
        if not self._lock():
            self._reactor.call_later(POLL_SECONDS, self._next)
            return
        self._writing = True
        offset, data, callback = self._queue.popleft()
        if self.generation() & 1:           # a worker died writing: its record first
            self._recover()
        record = _RECORD.pack(_MAGIC, offset, len(data), _record_crc(offset, data)) + data

        def finish(error: OSError | None) -> None:
            if error is not None:
                log.error("%s: atomic write of %d bytes at %d failed: %s", self.path, len(data), offset, error)
                if self.generation() & 1:   # it may be partly in place: all of it, from the journal
                    self._complete_from_journal("that failed in place")
            self._writing = False
            self._unlock()
            waiters, self._waiters = self._waiters, []
            callback(error)
            for waiter in waiters:
                self._when_even(waiter)
            self._next()

        def cleared(res: int) -> None:
            self._advance()                 # even: readers may trust what they read again
            finish(None if res >= 0 else error_for(res, f"clear the journal {self.path}.atomic"))

        def in_place(error: OSError | None) -> None:
            if error is not None:
                finish(error)
                return
            self._reactor.ring.prep_write(self._journal, _CLEARED, _RECORD_AT, self._reactor.token(cleared),
                                          RWF_DSYNC)

        def journaled(res: int) -> None:
            if res != len(record):
                finish(error_for(res if res < 0 else -errno.EIO, f"journal {self.path}.atomic"))
                return
            self._advance()                 # odd: readers of any worker will look again
            FileBackstore.write(self, offset, data, True, in_place)

        self._reactor.ring.prep_write(self._journal, record, _RECORD_AT, self._reactor.token(journaled), RWF_DSYNC)

    def _complete_from_journal(self, why: str) -> None:
        """With the journal lock held and the counter odd: replay the record; if even that fails, the counter is
        evened all the same (readers must not wait forever; the blocks are then as the failure left them)."""
        log.error("%s: an atomic write %s: completing it from the journal", self.path, why)
        try:
            self._recover()
        except OSError as e:
            log.error("%s: cannot complete it from the journal: %s", self.path, e)
            if self.generation() & 1:
                self._advance()

    def close(self) -> None:
        if self._journal >= 0:
            self._generation.release()
            self._counter.close()
            self._generation = memoryview(bytearray(8)).cast("Q")   # I/O after close fails in the file, not here
            os.close(self._journal)
            self._journal = -1
        super().close()
