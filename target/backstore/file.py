"""The file backstore: a regular file or a block device, every read, write, flush and unmap a ring op.

The store never creates its file (the supervisor creates a LUN's image once, target/backstore/images.py); given
the image's identity (`ImageIdentity`) it opens only that file and raises ImageGone otherwise. A regular file is
extended when smaller than the LUN, never truncated.
Short transfers are continued; a read that meets the end of the file is completed with zeros. Where the file
system refuses a fallocate mode (tmpfs: no FALLOC_FL_ZERO_RANGE; ramfs: no hole punching) the range is written
with zeros instead, and the refusal remembered so that it is paid once. Whether holes can be punched is probed
at open (`deallocates`), for the Logical Block Provisioning VPD to promise only what the file can do; zeroing is
found out at its first refusal, since no VPD bit depends on it and a probe of ZERO_RANGE could allocate blocks.
Every error names the operation, the path and the offset. The fd is registered with the worker's ring, and so
are the buffers an O_DIRECT store reads into (`Ring.register_file`, `BufferPool`'s ring): the first op of a read
or write names them by slot, skipping the kernel's file lookup and, for reads, its page pinning. A write's data
comes in a buffer of the LUN's own pool (`LogicalUnit.data_buffers`, not registered), so only its file is fixed;
the rarer ops (and the rest of a short transfer) use the plain fd.

At most `write_queue_depth` writes of a store are in the kernel at once (the rest of a short one not counted);
more wait in the store, in order, and start as earlier ones complete (each is a command in flight, so no more wait
than the sessions' command windows allow: login.COMMAND_WINDOW each). A worker keeps the disk fed that way while
it handles a turn's commands: without a bound, a load of 64 writes went to a virtual disk as one batch, which it
completed as one, and the disk then idled while the worker answered all 64 and took in the next 64 (4k O_DIRECT
writes at QD 2x32: 25k/s; bounded to 32, and with the ring submitting writes in groups of 4 as they are queued
then: 45k/s, tgtd's 42k). Since the ring hands small writes to the kernel in sixteens as they are queued, the bound
is 128: at 32 it held half of that load back in the worker while the disk could take it (72k-73k/s at 32, 73k-79k
at 128, three interleaved pairs; 64: 73k-76k; 1024: 69k-78k). Reads are not bounded: the worker, not the disk, is
what limits them, and holding them cost more than it gave (4k O_DIRECT reads at QD 2x32: 0.88x the IOPS bounded to
32).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from struct import Struct
from typing import Any

from ioring import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, RWF_DSYNC, error_for

from ..reactor import Reactor
from .base import BackstoreError
from ..buffers import BufferPool, page_aligned
from .fill import fill

log = logging.getLogger(f"ringtgt.{__name__}")
_PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_ZERO = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
_FLOCK = Struct("hh4xqqi4x")        # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD)
_FS_IOC_GETVERSION = 0x80087601     # _IOR('v', 1, long): the inode's generation, written as an int
_GENERATION = Struct("I4x")
_ZERO_CHUNK = bytes(1 << 20)        # what a range is written with where fallocate cannot zero or punch it
WRITE_QUEUE_DEPTH = 128             # writes of a store in the kernel at once, by default (docstring)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


@dataclass(frozen=True)
class ImageIdentity:
    """Which file a LUN's image is: a regular file's device, inode and inode generation (which tells a file
    made again on a reused inode number apart, where the file system keeps one: ext4, xfs, btrfs; 0 elsewhere),
    or a block device's number (st_rdev), which stays when the device node is made again."""

    block: bool
    device: int
    inode: int
    generation: int = 0

    @classmethod
    def of(cls, st: os.stat_result, generation: int = 0) -> ImageIdentity:
        if stat.S_ISBLK(st.st_mode):
            return cls(True, st.st_rdev, 0)
        return cls(False, st.st_dev, st.st_ino, generation)

    def __str__(self) -> str:
        device = f"{os.major(self.device)}:{os.minor(self.device)}"
        if self.block:
            return f"block device {device}"
        return f"inode {self.inode} generation {self.generation} on device {device}"


def identify(fd: int) -> ImageIdentity:
    """The identity of the open file `fd`."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return ImageIdentity.of(st)
    try:
        generation = _GENERATION.unpack(fcntl.ioctl(fd, _FS_IOC_GETVERSION, bytes(_GENERATION.size)))[0]
    except OSError:                     # not kept by this file system (tmpfs): the inode number alone
        generation = 0
    return ImageIdentity.of(st, generation)


class ImageGone(BackstoreError):
    """The path no longer holds the LUN's image: it is missing, or another file took its place."""


def _open(path: str, size: int | None, block_size: int, direct: bool,
          image: ImageIdentity | None = None) -> tuple[int, int]:
    """The open fd and the LUN size in bytes; ImageGone when `image` is given and the path holds no file or
    another one; BackstoreError naming the path for any other reason the file cannot serve."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    fd = -1
    try:
        fd = os.open(path, flags)
        st = os.fstat(fd)
        if image is not None and (found := identify(fd)) != image:
            raise ImageGone(f"image {path} was replaced: it is now {found}, the LUN's was {image}")
        if stat.S_ISBLK(st.st_mode):
            available = os.lseek(fd, 0, os.SEEK_END)
            if size is not None and size > available:
                raise BackstoreError(f"backstore {path}: size {size} exceeds the device's {available} bytes")
        elif stat.S_ISREG(st.st_mode):
            available = st.st_size
            if size is not None and available < size:
                os.ftruncate(fd, size)           # sparse: no blocks allocated
        else:
            raise BackstoreError(f"backstore {path}: not a regular file or block device")
        if size is None:
            size = available - available % block_size
            if size <= 0:
                raise BackstoreError(f"backstore {path}: empty, and no size given")
        return fd, size
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        if image is not None and e.errno == errno.ENOENT:
            raise ImageGone(f"image {path} is missing (expected {image})") from e
        raise BackstoreError(f"cannot open backstore {path}: {e.strerror}") from e
    except BackstoreError:
        os.close(fd)
        raise


def ofd_lock(fd: int, offset: int, length: int, wait: bool = False) -> bool:
    """An OFD write lock on a byte range of `fd` (held by this open file description, gone with it): False while
    another one holds it, or with `wait` once it is ours."""
    command = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
    try:
        fcntl.fcntl(fd, command, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0))
    except (BlockingIOError, PermissionError):
        return False
    return True


def ofd_unlock(fd: int, offset: int, length: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, length, 0))


def _status(callback: Callable[[OSError | None], None], what: str) -> Callable[[int], None]:
    """A completion handler passing None, or the OSError for a negative result, to callback."""
    return lambda res: callback(None if res >= 0 else error_for(res, what))


def _punches_holes(fd: int, size: int, block_size: int) -> bool:
    """Whether the file system behind a regular file can punch holes: a punch past the end of the file (which
    changes nothing, KEEP_SIZE) is refused with EOPNOTSUPP where it cannot. A block device is taken at its word
    (a refusal is met when it comes, as for any file)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return True
    end = max(size, st.st_size)
    end += -end % block_size
    if _libc.fallocate(fd, _PUNCH, end, block_size) == 0:
        return True
    return ctypes.get_errno() != errno.EOPNOTSUPP


class FileBackstore:
    """A LUN stored in a file or block device; `direct` opens it O_DIRECT with page-aligned buffers; `image`:
    the file must be that one (ImageGone otherwise)."""

    __slots__ = ("path", "size", "block_size", "write_cache", "_fd", "_reactor", "_pool", "_refused", "_slot",
                 "_ring_fd", "_fixed", "write_queue_depth", "_in_flight", "_held")

    max_atomic_bytes = 0                # no atomic writes (atomic.py adds them to regular files)
    sends_with_read = True              # a read's whole transfer is one ring op: a send can be linked to it

    def __init__(self, reactor: Reactor, *, path: str | None, size: int | None, block_size: int,
                 direct: bool = False, write_cache: bool = True, image: ImageIdentity | None = None,
                 write_queue_depth: int = WRITE_QUEUE_DEPTH):
        if path is None:
            raise BackstoreError("file backstore: a path is required")
        self._fd, self.size = _open(path, size, block_size, direct, image)
        self.path = path
        self.block_size = block_size
        self.write_cache = write_cache
        self._reactor = reactor
        # fallocate modes the file system refused: hole punching is probed now, for the VPD pages to tell
        self._refused = set() if _punches_holes(self._fd, self.size, block_size) else {_PUNCH}
        self._pool = BufferPool(aligned=direct, ring=reactor.ring)
        # what the first op of a read or write names the file by: its registered slot, or the fd
        self._slot = reactor.ring.register_file(self._fd)
        self._fixed = self._slot >= 0
        self._ring_fd = self._slot if self._fixed else self._fd
        self.write_queue_depth = write_queue_depth
        self._in_flight = 0                 # writes in the kernel (module docstring)
        self._held: deque[tuple[Callable[[], None], Callable[[OSError], None]]] = deque()    # (start, callback)

    def _transfer(self, prep, what: str, buf, done: int, offset: int, rw_flags: int, finish) -> None:
        """prep(fd, rest of buf, offset, token, rw_flags) until all of buf is done: finish(None); the
        transfer stops short (end of file, no space): finish(bytes done); or fails: finish(OSError)."""
        prep(self._fd, buf[done:] if done else buf, offset + done,
             self._reactor.token(self._step(prep, what, buf, done, offset, rw_flags, finish)), rw_flags)

    def _step(self, prep, what: str, buf, done: int, offset: int, rw_flags: int, finish) -> Callable[[int], None]:
        """The completion handler of a transfer op queued after `done` bytes of buf."""
        def complete(res: int) -> None:
            if res < 0:
                finish(error_for(res, f"{what} {self.path} at offset {offset + done}"))
            elif done + res == len(buf):
                finish(None)
            elif res == 0:
                finish(done)
            else:
                self._transfer(prep, what, buf, done + res, offset, rw_flags, finish)
        return complete

    # read and write queue their first op themselves, with one closure: when it does all the work (nearly always)
    # the completion goes straight to the callback; only a short or failed op takes the general _step path
    # (`_read_rest`, `_write_rest`). `start`: the generation an AtomicFileBackstore read before the op, for
    # `_moved` to check at its end (None for a plain file: nothing to check). `then_send`: the transport's offer
    # of a send linked to the read (ScsiTask.send_with_read); when it takes it, a short or failed read cancels
    # the send and goes on as any other. A write past `write_queue_depth` waits in `_held`.
    def read(self, offset: int, length: int, callback: Callable[[memoryview | OSError], None],
             start: int | None = None,
             then_send: Callable[[memoryview], tuple[int, memoryview, int, int] | None] | None = None) -> None:
        view = self._pool.get(length)

        def complete(res: int) -> None:
            if start is not None and self._moved(start):
                self._again(lambda: self.read(offset, length, callback))
            elif res == length:
                callback(view)
            else:
                self._read_rest(view, offset, res, self._checked(start, lambda: self.read(offset, length, callback),
                                                                 callback))
        buf: Any = view.obj                     # its registered slot, or -1
        send = then_send(view) if then_send is not None else None
        if send is None:
            self._reactor.ring.prep_read(self._ring_fd, view, offset, self._reactor.token(complete), 0, self._fixed,
                                         buf.slot)
        else:
            token = self._reactor.token(complete)
            try:
                self._reactor.ring.prep_read_send(self._ring_fd, view, offset, token, self._fixed, buf.slot, *send)
            except OSError:                     # nothing queued: the transport hears of its send as cancelled
                self._reactor.not_queued(token)
                self._reactor.not_queued(send[2], -errno.ECANCELED)
                raise

    def _start_held(self) -> None:
        """The oldest held writes start, as far as `write_queue_depth` lets them (as a write's first op completes,
        and at close), as they were asked for: FileBackstore's own write, so an AtomicFileBackstore's `start` stays
        the one its caller passed (None for the in-place half of an atomic write). One that cannot be queued fails
        its own command, not the one whose completion started it."""
        held = self._held
        while held and self._in_flight < self.write_queue_depth:
            start, callback = held.popleft()
            try:
                start()
            except Exception as e:          # whatever it is, it is that command's error
                callback(e if isinstance(e, OSError) else OSError(errno.EIO, f"{self.path}: held write: {e!r}"))

    def _read_rest(self, view: memoryview, offset: int, res: int, callback) -> None:
        """The first op of a read did `res` (short or failed): the rest, or the error; zeros past the file's end."""
        length = len(view)

        def finish(outcome) -> None:
            if isinstance(outcome, OSError):
                callback(outcome)
                return
            if outcome is not None:             # end of file: the rest reads as zeros
                view[outcome:] = bytes(length - outcome)
            callback(view)
        self._step(self._reactor.ring.prep_read, "read", view, 0, offset, 0, finish)(res)

    def write(self, offset: int, data, fua: bool, callback: Callable[[OSError | None], None],
              start: int | None = None) -> None:
        if self._in_flight >= self.write_queue_depth:
            # durable as the write cache is now, whatever a MODE SELECT makes of it before the write starts
            fua = fua or not self.write_cache
            self._held.append((partial(FileBackstore.write, self, offset, data, fua, callback, start), callback))
            return
        slot = -1
        if self._pool.aligned:
            if not page_aligned(data):          # O_DIRECT needs aligned memory
                buf = self._pool.get(len(data))
                buf[:] = data
                data = buf
            slot = data.obj.slot
        rw_flags = RWF_DSYNC if fua or not self.write_cache else 0
        length = len(data)

        def complete(res: int) -> None:
            self._in_flight -= 1                # its slot to the oldest held write, before the answer's work
            if self._held:
                self._start_held()
            if start is not None and self._moved(start):
                self._again(lambda: self.write(offset, data, fua, callback))
            elif res == length:
                callback(None)
            else:
                self._write_rest(data, offset, res, rw_flags,
                                 self._checked(start, lambda: self.write(offset, data, fua, callback), callback))
        self._reactor.ring.prep_write(self._ring_fd, data, offset, self._reactor.token(complete), rw_flags,
                                      self._fixed, slot)
        self._in_flight += 1

    def _write_rest(self, data, offset: int, res: int, rw_flags: int, callback) -> None:
        """The first op of a write did `res` (short or failed): the rest, or the error (ENOSPC when the kernel
        writes nothing more)."""
        def finish(outcome) -> None:
            if isinstance(outcome, int):        # the kernel wrote nothing more
                outcome = error_for(-errno.ENOSPC, f"write {self.path} at offset {offset + outcome}")
            callback(outcome)
        self._step(self._reactor.ring.prep_write, "write", data, 0, offset, rw_flags, finish)(res)

    # -- what AtomicFileBackstore checks against its atomic writes: a plain file has none
    def _moved(self, start: int) -> bool:
        """Whether an atomic write ran (or was running) since the generation was `start`."""
        return False

    def _again(self, then: Callable[[], None]) -> None:
        """Run `then` (the whole operation again) once no atomic write runs."""
        then()

    def _checked(self, start: int | None, again: Callable[[], None], callback: Callable) -> Callable:
        """`callback`, or for an operation that started at generation `start` a completion that runs again()
        instead if an atomic write ran meanwhile (the rarer operations, and the rest of a short read or write)."""
        if start is None:
            return callback

        def done(result) -> None:
            if self._moved(start):
                self._again(again)
            else:
                callback(result)
        return done

    def flush(self, callback: Callable[[OSError | None], None]) -> None:
        self._reactor.ring.prep_fsync(self._fd, self._reactor.token(_status(callback, f"flush {self.path}")),
                                      datasync=True)

    def unmap(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        self._fallocate(_PUNCH, "unmap", offset, length, callback)

    def try_lock(self, offset: int, length: int) -> bool:
        """An OFD write lock on the byte range, without waiting: False while another process holds it."""
        return ofd_lock(self._fd, offset, length)

    def unlock(self, offset: int, length: int) -> None:
        ofd_unlock(self._fd, offset, length)

    def write_zeroes(self, offset: int, length: int, callback: Callable[[OSError | None], None]) -> None:
        self._fallocate(_ZERO, "zero", offset, length, callback)

    @property
    def deallocates(self) -> bool:
        """Whether `unmap` frees space (the file system punches holes) rather than writing zeros."""
        return _PUNCH not in self._refused

    def _fallocate(self, mode: int, what: str, offset: int, length: int,
                   callback: Callable[[OSError | None], None]) -> None:
        """fallocate through the ring; where the file system refuses `mode` (EOPNOTSUPP) the range is written
        with zeros instead, and from then on at once."""
        if mode in self._refused:
            fill(partial(FileBackstore.write, self), offset, length, _ZERO_CHUNK, callback)
            return

        def done(res: int) -> None:
            if res == -errno.EOPNOTSUPP:
                self._refused.add(mode)
                self._fallocate(mode, what, offset, length, callback)
            else:
                callback(None if res >= 0 else error_for(res, f"{what} {self.path} at offset {offset}"))
        self._reactor.ring.prep_fallocate(self._fd, mode, offset, length, self._reactor.token(done))

    def extents(self, offset: int, length: int):
        """Yield the range as consecutive (offset, length, mapped) pieces, from SEEK_DATA/SEEK_HOLE (metadata
        lookups: io_uring has no lseek). Where the file system cannot tell, the rest counts as mapped."""
        end = offset + length
        while offset < end:
            try:
                data = os.lseek(self._fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:            # ENXIO: only a hole from here to the end of the file
                    yield offset, end - offset, True
                    return
                data = end
            if data > offset:
                stop = min(data, end)
                yield offset, stop - offset, False
            else:
                stop = min(os.lseek(self._fd, offset, os.SEEK_HOLE), end)
                yield offset, stop - offset, True
            offset = stop

    def close(self) -> None:
        if self._fd >= 0:
            self.write_queue_depth = 1 << 62    # closing: nothing is held any more; what was still goes to this
            if self._held:                      # file, submitted before it closes
                self._start_held()
                if not self._fixed:             # (unregister_file submits first)
                    try:
                        self._reactor.ring.submit()
                    except OSError as e:        # the ring's next turn meets it again
                        log.error("%s: submitting its last I/O before closing: %s", self.path, e)
            self._pool.close()
            if self._fixed:
                self._reactor.ring.unregister_file(self._slot)
            self._fixed = False
            self._ring_fd = -1              # I/O after close fails in the ring (EBADF), as on the fd
            os.close(self._fd)
            self._fd = -1
