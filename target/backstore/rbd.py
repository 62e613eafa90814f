"""The RBD backstore: a LUN stored in a Ceph RBD image, every read, write, flush, discard and compare-and-write a
librbd asynchronous op (target/backstore/_librbd).

Completions reach the worker's event loop without a thread of ours: librbd signals the image's eventfd
(rbd_set_image_notification), a ring poll op on it completes, and one C call (rt_rbd_reap) hands over every ready
completion as (token, result) pairs; the poll is then armed again. A second eventfd is written by librbd's header
watch (rt_rbd_update_watch) when the image changes, for `on_resize` to learn that it grew (`rbd resize`).

COMPARE AND WRITE goes to librbd's compare-and-write, which RADOS runs atomically on the OSD: it holds against
every worker and node. ORWRITE's read-modify-write is serialised within a worker only (try_lock has no lock
shared with other clients to take). GET LBA STATUS asks librbd's diff iteration (a synchronous call, bounded to a
window of objects per step). Images are served without exclusive-lock (rados.py `prepare_image`).
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import select
from collections.abc import Callable

from ioring import error_for

from ..buffers import BufferPool
from ..reactor import Reactor
from ._librbd import ffi, lib
from .base import BackstoreError
from .rados import RbdImage, connection, image_size, open_image

log = logging.getLogger(f"ringtgt.{__name__}")

_REAP_BATCH = 64                    # completions taken per rt_rbd_reap call
_EXTENTS_BATCH = 1024               # extents taken per diff-iteration step
_EXTENTS_WINDOW = 1 << 30           # bytes of the image one diff-iteration step covers


class RbdBackstore:
    """A LUN of `size` bytes (None: the image's) in the RBD image `rbd`."""

    __slots__ = ("size", "block_size", "write_cache", "name", "on_resize", "_image", "_reactor", "_ring", "_pool",
                 "_pending", "_waiters", "_next_token", "_end", "_eventfd", "_watch_fd", "_watch", "_scratch", "_pairs",
                 "_closed")

    max_atomic_bytes = 0                # no WRITE ATOMIC: a write that spans two RADOS objects is not atomic
    sends_with_read = False             # librbd completes reads outside the ring
    deallocates = True                  # a discard frees the objects (and zeros partial ones: rados.py)

    def __init__(self, reactor: Reactor, *, rbd: RbdImage, size: int | None, block_size: int,
                 write_cache: bool = True):
        self.name = str(rbd)
        conn = connection(rbd.client)
        self._image = open_image(conn, rbd)
        self._eventfd = self._watch_fd = -1
        self._closed = False
        self._watch = None
        try:
            available = image_size(self._image)
            if size is None:
                size = available - available % block_size
            if not 0 < size <= available:
                raise BackstoreError(f"RBD image {self.name}: {available} bytes, the LUN needs {size}")
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            rc = lib.rbd_set_image_notification(self._image, self._eventfd, lib.EVENT_TYPE_EVENTFD)
            if rc < 0:
                raise BackstoreError(f"RBD image {self.name}: rbd_set_image_notification: {os.strerror(-rc)}")
            self._watch_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            handle = ffi.new("uint64_t *")
            rc = lib.rt_rbd_update_watch(self._image, handle, self._watch_fd)
            if rc < 0:
                raise BackstoreError(f"RBD image {self.name}: rbd_update_watch: {os.strerror(-rc)}")
            self._watch = handle[0]
        except BaseException:
            self.close()
            raise
        self.size = size
        self._end = available           # the image's size as last seen: librbd clips writes past it silently
        self.block_size = block_size
        self.write_cache = write_cache
        self.on_resize: Callable[[int], None] | None = None     # (image size): the image grew or shrank
        self._reactor = reactor
        self._ring = reactor.ring
        self._pool = BufferPool()
        self._pending: dict[int, tuple[Callable[[int], None], object]] = {}    # (handler, buffers) by token
        self._next_token = itertools.count(1).__next__
        self._waiters: list[tuple] = []     # (waiter, handler, buffers) of the compare-and-writes in flight
        self._scratch = ffi.new("rbd_completion_t[]", _REAP_BATCH)
        self._pairs = ffi.new("int64_t[]", 2 * _REAP_BATCH)
        self._arm()
        self._arm_watch()
        log.info("RBD image %s: %d bytes served, as %s at %s", self.name, size, rbd.client, conn.addresses)

    # -- completions ------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._reactor.ring.prep_poll_add(self._eventfd, select.POLLIN, self._reactor.token(self._ready))

    def _ready(self, res: int) -> None:
        if self._closed:
            return
        try:
            os.read(self._eventfd, 8)       # reset before reaping: a completion after this signals again
        except BlockingIOError:
            pass
        pending, pairs = self._pending, self._pairs
        while True:
            n = lib.rt_rbd_reap(self._image, self._scratch, pairs, _REAP_BATCH)
            if n <= 0:
                break
            done = ffi.unpack(pairs, 2 * n)
            self._ring.outside_ops -= n
            for i in range(0, 2 * n, 2):
                entry = pending.pop(done[i], None)
                if entry is not None:
                    try:
                        entry[0](done[i + 1])
                    except Exception:
                        log.exception("RBD image %s: completion handler failed", self.name)
            if n < _REAP_BATCH:
                break
        if self._waiters:
            self._reap_waiters()
        self._arm()

    def _queue(self, rc: int, token: int, what: str, offset: int) -> None:
        """After an rt_rbd_* call: a refused op completes (with its error) at the end of the turn."""
        if rc < 0:
            handler = self._pending.pop(token)[0]
            self._ring.outside_ops -= 1
            self._reactor.call_soon(handler, rc)
            log.debug("RBD image %s: %s at offset %d refused: %s", self.name, what, offset, os.strerror(-rc))

    def _token(self, handler: Callable[[int], None], pinned: object = None) -> int:
        """A token for one op: `handler(result)` runs at its completion; `pinned` (the op's buffers) lives as long.
        The ring counts it as a storage op in flight (no busy polling while librbd's threads work)."""
        token = self._next_token()
        self._pending[token] = handler, pinned
        self._ring.outside_ops += 1
        return token

    # -- the Backstore operations ---------------------------------------------------------------------------
    def read(self, offset: int, length: int, callback: Callable[[memoryview | OSError], None]) -> None:
        view = self._pool.get(length)
        buf = ffi.from_buffer("char[]", view, require_writable=True)

        def complete(res: int) -> None:
            if res < 0:
                callback(error_for(res, f"read RBD image {self.name} at offset {offset}"))
                return
            if res < length:                    # past the image's end: zeros
                view[res:] = bytes(length - res)
            callback(view)
        token = self._token(complete, buf)
        self._queue(lib.rt_rbd_read(self._image, token, offset, length, buf), token, "read", offset)

    def write(self, offset: int, data, fua: bool, callback: Callable[[OSError | None], None]) -> None:
        # no cache in librbd (rados.py): a completed write is in RADOS, durable with FUA or without; librbd sends
        # from `data` itself (zero-copy, rados.py), pinned here until the completion
        if offset + len(data) > self._end:
            self._beyond_end(callback, "write", offset)
            return
        buf = ffi.from_buffer(data)

        def complete(res: int) -> None:
            callback(None if res >= 0 else error_for(res, f"write RBD image {self.name} at offset {offset}"))
        token = self._token(complete, (buf, data))
        self._queue(lib.rt_rbd_write(self._image, token, offset, len(buf), buf), token, "write", offset)

    def flush(self, callback: Callable[[OSError | None], None]) -> None:
        token = self._token(self._status(callback, "flush", 0))
        self._queue(lib.rt_rbd_flush(self._image, token), token, "flush", 0)

    def unmap(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        if offset + length > self._end:
            self._beyond_end(callback, "discard", offset)
            return
        token = self._token(self._status(callback, "discard", offset))
        self._queue(lib.rt_rbd_discard(self._image, token, offset, length), token, "discard", offset)

    def write_zeroes(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        if offset + length > self._end:
            self._beyond_end(callback, "write zeroes", offset)
            return
        token = self._token(self._status(callback, "write zeroes", offset))
        self._queue(lib.rt_rbd_write_zeroes(self._image, token, offset, length), token, "write zeroes", offset)

    def compare_and_write(self, offset: int, expected: bytes, data: bytes,
                          callback: Callable[[OSError | int | None], None]) -> None:
        """Write `data` at `offset` if the image holds `expected` there, atomically in RADOS: callback(None) when
        written, the offset of the first differing byte within `expected` when not, or the OSError. (Its
        completion comes through a waiter: librbd 16.2 does not queue it for rbd_poll_io_events.)"""
        if offset + len(data) > self._end:
            self._beyond_end(callback, "compare and write", offset)
            return
        waiter = ffi.new("struct rt_rbd_waiter *", {"fd": self._eventfd})
        mismatch = ffi.new("uint64_t *")

        def complete(res: int) -> None:
            if res == -errno.EILSEQ:
                callback(int(mismatch[0]) - offset if mismatch[0] >= offset else int(mismatch[0]))
            elif res < 0:
                callback(error_for(res, f"compare and write RBD image {self.name} at offset {offset}"))
            else:
                callback(None)
        rc = lib.rt_rbd_compare_and_write(self._image, waiter, offset, len(data), expected, data, mismatch)
        if rc < 0:
            self._reactor.call_soon(complete, rc)
        else:
            self._waiters.append((waiter, complete, (expected, data, mismatch)))
            self._ring.outside_ops += 1

    def _reap_waiters(self) -> None:
        waiting = []
        for entry in self._waiters:
            waiter, complete, _ = entry
            if lib.rt_rbd_waiter_done(waiter):
                lib.rbd_aio_release(waiter.completion)
                self._ring.outside_ops -= 1
                try:
                    complete(waiter.result)
                except Exception:
                    log.exception("RBD image %s: completion handler failed", self.name)
            else:
                waiting.append(entry)
        self._waiters = waiting

    def _beyond_end(self, callback: Callable, what: str, offset: int) -> None:
        """A change past the image's end (it shrank under the LUN: `rbd resize --allow-shrink`) fails, never
        acknowledged and dropped."""
        error = OSError(errno.EIO, f"{what} RBD image {self.name} at offset {offset}: past the image's end "
                                      f"{self._end} (it shrank)")
        self._reactor.call_soon(callback, error)

    def _status(self, callback: Callable[[OSError | None], None], what: str, offset: int) -> Callable[[int], None]:
        return lambda res: callback(None if res >= 0 else
                                    error_for(res, f"{what} RBD image {self.name} at offset {offset}"))

    def try_lock(self, offset: int, length: int) -> bool:
        """No lock other clients see (ORWRITE is atomic within a worker: compare_and_write.py serialises it)."""
        return True

    def unlock(self, offset: int, length: int) -> None:
        pass

    def extents(self, offset: int, length: int):
        """Yield the range as consecutive (offset, length, mapped) pieces from librbd's diff iteration, a window
        at a time; where a window holds more extents than one step takes, the rest of it counts as mapped."""
        end = offset + length
        out = ffi.new("int64_t[]", 2 * _EXTENTS_BATCH)
        while offset < end:
            stop = min(end, offset + _EXTENTS_WINDOW)
            n = lib.rt_rbd_extents(self._image, offset, stop - offset, out, _EXTENTS_BATCH)
            if n < 0:                           # cannot tell: mapped
                yield offset, end - offset, True
                return
            for i in range(min(n, _EXTENTS_BATCH)):
                start, size = max(out[2 * i], offset), out[2 * i] + out[2 * i + 1] - max(out[2 * i], offset)
                if start > offset:
                    yield offset, start - offset, False
                if size > 0:
                    yield start, size, True
                    offset = start + size
            if n > _EXTENTS_BATCH:
                yield offset, stop - offset, True
            elif stop > offset:
                yield offset, stop - offset, False
            offset = stop

    # -- size changes -----------------------------------------------------------------------------------------
    def _arm_watch(self) -> None:
        self._reactor.ring.prep_poll_add(self._watch_fd, select.POLLIN, self._reactor.token(self._header_changed))

    def _header_changed(self, res: int) -> None:
        if self._closed:
            return
        try:
            os.read(self._watch_fd, 8)
        except BlockingIOError:
            pass
        try:
            size = image_size(self._image)
        except BackstoreError as e:
            log.warning("RBD image %s: %s", self.name, e)
        else:
            self._end = size
            if size != self.size and self.on_resize is not None:
                self.on_resize(size - size % self.block_size)
        self._arm_watch()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            lib.rbd_update_unwatch(self._image, self._watch)
        lib.rbd_close(self._image)
        for fd in (self._eventfd, self._watch_fd):
            if fd >= 0:
                os.eventfd_write(fd, 1)     # completes the ring's poll on it (which sees _closed): else it never
                os.close(fd)                # would, and its callback would keep this store alive
