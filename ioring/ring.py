"""Ring: one io_uring instance. Queue ops with prep_*, submit, reap completions in batches.

Every prep_* is one C call (SQE, prep, user_data; submitting first when the SQ is full). The ring keeps the
buffers, iovecs and timespecs of an op alive until its completion is reaped, so callers may drop theirs.
user_data is the caller's: an int below 2**63, unique among the ops in flight.

Busy polling (`busy_poll_us`): after a turn that reaped at most one completion while no file op is in flight
(a latency-bound load such as QD1), the next turn spins on the CQ that long, yielding the CPU to anything
runnable, before it sleeps: a command arriving in that window skips the sleep and wakeup that otherwise
dominate its latency. When that turn waits on exactly one file op (the disk read or write of the command the
last turn received: QD1 on a file LUN), it spins `_FILE_SPIN_FACTOR` times as long, since a disk takes longer
than the network's next command; that one file op is submitted as it is queued, not at the end of the turn.
Under load, file ops too go to the kernel as they are queued, in groups, not all at the end of the turn: a turn
that handles dozens of commands would otherwise leave the disk idle for as long as it runs (a virtual disk that
completes what it was given in one batch then waits for a whole turn's worth). Each submission notifies the disk
(a VM exit here): reads and big writes, where the disk is the limit, go in fours (`_FILE_OP_GROUP` / `_HEAVY`),
small writes (up to `_SMALL_WRITE`), where the worker's CPU is and each notification costs it, in sixteens. Writes
in fours since the eighth stop, small ones in sixteens since the thirteenth (4k O_DIRECT writes at QD32, single
runs: 82-85k -> 87-91k IOPS); reads since the twelfth (4k O_DIRECT reads at QD32 65k -> 67-75k IOPS at the same
CPU per read; in sixteens 67k).
Heavier loads never spin, nor do waits on storage I/O done outside the ring (librbd's: its callers count them in
`outside_ops`), whose threads need the CPU a spin would take. A read and the send linked to it
(`prep_read_send`) count as one completion: they are one QD1 command's.

Registered files and buffers (`register_file`, `register_buffer`): a file LUN's fd and its O_DIRECT buffers, set
once in a sparse table of the ring, so that a read or write skips the kernel's file lookup and page pinning per
op. Both tables are bounded (`FIXED_FILES` slots; `FIXED_BUFFERS` slots and `FIXED_BYTES` bytes, pinned memory
counted against RLIMIT_MEMLOCK where not root); past them, or where the kernel refuses, callers use plain fds and
buffers.

Under valgrind (perf/callgrind_per_io.py, perf/profile_worker.py), which runs one thread of a process at a time
and keeps its lock through io_uring_enter (a wait it does not know may block), a turn that waits would starve the
process's other threads, ZeroMQ's I/O thread among them: the worker's messages to and from its coordinator, its
ZMTP handshake even, did not get through for minutes (the coordinator drops a handshake not done in 30 s, so the
worker never got its unit states and never accepted). So under valgrind a waiting turn first yields (sched_yield,
which valgrind does release its lock in) and waits at most `_VALGRIND_WAIT`.

The C calls keep the GIL (cffi would drop and take it back around each, which cost as much as most of them),
but for the waits of a turn (its busy poll and its sleep): the process's other threads run then.

The ring is set up SINGLE_ISSUER|COOP_TASKRUN|TASKRUN_FLAG when the kernel allows (≥ 6.0; plain otherwise):
only the thread that created it may submit, so create it in the worker process, after fork.

This module is compiled with the data path (target/compiled.py): its module constants are `Final` so that the
compiled code holds them, not looks them up, and `Ring` stays open to subclasses in Python (the tests').
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from typing_extensions import Buffer

from ._liburing import ffi, lib
from .errors import IoringUnavailable, _check_rc, error_for

_from_buffer: Final = ffi.from_buffer
_unpack: Final = ffi.unpack
_prep_nop: Final = lib.rt_prep_nop
_prep_read: Final = lib.rt_prep_read
_prep_write: Final = lib.rt_prep_write
_prep_recv: Final = lib.rt_prep_recv
_prep_send: Final = lib.rt_prep_send
_prep_recv_parts: Final = lib.rt_prep_recv_parts
_new: Final = ffi.new
_memoryview: Final = memoryview     # (held here: compiled code looks a builtin up by name at every use)
_turn: Final = lib.rt_turn
_TUNED_FLAGS: Final = lib.IORING_SETUP_SINGLE_ISSUER | lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_TASKRUN_FLAG
_CLOSE_CANCEL: Final = (1 << 64) - 1    # user_data of the cancel-everything op close() queues; callers stay < 2**63
_SPIN_AFTER_AT_MOST: Final = 1          # completions in a turn for the next one to busy-poll
_FILE_SPIN_FACTOR: Final = 4            # a turn waiting on a QD1 load's one file op spins this many times busy_poll_us
_FILE_OP_GROUP: Final = 16              # file ops queued in a turn go to the kernel once their weights add up to this:
_HEAVY: Final = 4                       # a read's or a big write's (a small write's is 1): groups of 4, small writes 16
_SMALL_WRITE: Final = 16384             # bytes a small write has at most
_CLOSE_GRACE: Final = 1.0               # seconds close() waits for cancelled ops to complete
_VALGRIND: Final = "vgpreload" in os.environ.get("LD_PRELOAD", "")  # valgrind preloads its vgpreload_*.so in its client
_VALGRIND_WAIT: Final = 0.05            # seconds a waiting turn waits at most under valgrind (module docstring)
FIXED_FILES: Final = 64                 # registered file slots per ring (one per file LUN of the worker)
FIXED_BUFFERS: Final = 1024             # registered buffer slots per ring
FIXED_BYTES: Final = 4 << 20            # registered buffer bytes per ring at most

_UNAVAILABLE = ("io_uring is not available on this kernel ({}): ringtgt needs Linux ≥ 5.10 with io_uring "
                "enabled (check /proc/sys/kernel/io_uring_disabled)")


def _iovec(bufs: Iterable[Buffer], writable: bool) -> tuple[Any, list[Any]]:     # cffi objects: untyped
    """An iovec array over bufs and the buffer views it points into (both must outlive the op). (from_buffer's
    arguments positional: by keyword they cost 250 ns more a buffer.)"""
    views = [_from_buffer("char[]", b, True) for b in bufs] if writable else [_from_buffer(b) for b in bufs]
    return _new("struct iovec[]", [(v, len(v)) for v in views]), views


def address_of(buf: Buffer) -> Any:
    """The address of writable `buf`'s first byte, for Ring.prep_recv_at: a pointer that owns nothing, valid while
    the caller keeps `buf` alive and unresized (a memoryview of it held does that)."""
    return ffi.cast("char *", _from_buffer("char[]", buf, True))


@mypyc_attr(allow_interpreted_subclasses=True)   # (the tests' recording rings)
class Ring:
    """An io_uring submission/completion queue pair."""

    __slots__ = ("outside_ops", "_ring", "_pins", "_files", "_linked", "_capacity", "_scratch", "_user_data", "_res",
                 "_pairs", "flags", "_busy_poll_ns", "_spin_ns", "_free_files", "_free_buffers", "_fixed",
                 "_quiet", "_group_weight", "_reaper")

    def __init__(self, entries: int = 256, *, flags: int = 0, busy_poll_us: float = 0) -> None:
        self._ring = None                   # until the kernel gives us one (close() and __del__ check)
        ring = ffi.new("struct io_uring *")
        tuned = flags | _TUNED_FLAGS
        rc = lib.io_uring_queue_init(entries, ring, tuned)
        if rc == -errno.EINVAL:             # a kernel before 6.0 refuses SINGLE_ISSUER: plain ring
            tuned = flags
            rc = lib.io_uring_queue_init(entries, ring, tuned)
        if rc in (-errno.ENOSYS, -errno.EPERM):
            raise IoringUnavailable(_UNAVAILABLE.format(os.strerror(-rc)))
        _check_rc(rc, "io_uring_queue_init")
        self._ring = ring
        self.flags = tuned                  # the setup flags the ring runs with
        self._pins: dict[int, object] = {}    # socket and other ops' buffers, by user_data
        self._files: dict[int, object] = {}   # file reads' and writes' buffers: while any, no busy polling
        self._linked: set[int] = set()        # sends linked to a read (prep_read_send), in flight
        self.outside_ops = 0                  # storage ops in flight outside the ring: while any, no busy polling
        self._busy_poll_ns = self._spin_ns = int(busy_poll_us * 1000)
        self._group_weight = 0                # of the prep_read/_write/_read_send ops queued since the last submission
        self._quiet = True                    # the last turn reaped at most one completion, no storage op in flight
        self._capacity = capacity = 2 * entries    # the CQ is twice the SQ: one reap call drains it
        self._scratch = ffi.new("struct io_uring_cqe *[]", capacity)
        self._user_data = ffi.new("uint64_t[]", capacity)
        self._res = ffi.new("int32_t[]", capacity)
        self._pairs = ffi.new("int64_t[]", 2 * capacity)
        # what each turn passes to rt_turn: the ring, the scratch and the pairs above (held by self), the capacity
        self._reaper = ffi.new("struct rt_reaper *", {"ring": ring, "scratch": self._scratch, "out": self._pairs,
                                                      "capacity": capacity})
        self._free_files: list[int] | None = None       # free registered slots; None until the table is set up
        self._free_buffers: list[int] | None = None
        # registered buffers by slot: (length, address: a cffi pointer that owns nothing)
        self._fixed: dict[int, tuple[int, Any]] = {}

    # -- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel what is in flight, wait (briefly) until the kernel lets go of pinned buffers, tear down."""
        if self._ring is None:
            return
        if self._pins or self._files:
            _check_rc(lib.rt_prep_cancel(self._ring, _CLOSE_CANCEL, 0, lib.IORING_ASYNC_CANCEL_ANY), "cancel")
            deadline = time.monotonic() + _CLOSE_GRACE
            while (self._pins or self._files) and time.monotonic() < deadline:
                self.submit_and_wait(1, 0.05)
                self.reap()
        lib.io_uring_queue_exit(self._ring)
        self._ring = self._reaper = None
        self._free_files = self._free_buffers = None
        self._fixed.clear()
        self._pins.clear()
        self._linked.clear()
        self._files.clear()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- queueing ------------------------------------------------------------------------------------------
    # The per-I/O ones call module-level references to the C functions and test rc inline: a `lib.`
    # attribute lookup and a helper call per op showed up in instruction counts.
    def prep_nop(self, user_data: int) -> None:
        rc = _prep_nop(self._ring, user_data)
        if rc:
            raise error_for(rc, "prep_nop")

    # prep_read, prep_write and prep_read_send: the one file op of a quiet ring (QD1 on a file LUN: the command's
    # disk read or write) goes to the kernel as it is queued, and under load each that fills a group (_FILE_OP_GROUP)
    # with those before it, so the disk starts while the rest of the turn runs; a failure to submit is the next
    # turn's to report, as for any op.
    # fixed_file: fd is a slot from register_file; buf_index: buf lies in the buffer register_buffer gave that slot
    # (a memoryview as long as that whole buffer is taken to be it: _file_buffer)
    def prep_read(self, fd: int, buf: Any, offset: int, user_data: int, rw_flags: int = 0,
                  fixed_file: bool = False, buf_index: int = -1) -> None:
        start, pin, length = self._file_buffer(buf, buf_index, True)
        rc: int = _prep_read(self._ring, user_data, fd, start, length, offset, rw_flags, fixed_file, buf_index)
        if rc:
            raise error_for(rc, "prep_read")
        self._file_op_queued(user_data, pin, _HEAVY)

    def prep_write(self, fd: int, buf: Any, offset: int, user_data: int, rw_flags: int = 0,
                   fixed_file: bool = False, buf_index: int = -1) -> None:
        start, pin, length = self._file_buffer(buf, buf_index, False)
        rc: int = _prep_write(self._ring, user_data, fd, start, length, offset, rw_flags, fixed_file, buf_index)
        if rc:
            raise error_for(rc, "prep_write")
        self._file_op_queued(user_data, pin, 1 if length <= _SMALL_WRITE else _HEAVY)

    def _file_buffer(self, buf: Any, buf_index: int, writable: bool) -> tuple[Any, Any, int]:
        """A file op's buffer as (the address C is given, what the op pins, its length in bytes). A memoryview as
        long as the whole registered buffer `buf_index` (and writable, if `writable`) is taken to be it: the address
        noted at registration, the view itself pinned (a cffi view per op, and freeing it at the completion, cost
        more than the op's C call). Else a cffi view, both address and pin. (`len`, not `nbytes`, a generic lookup:
        a view that lies in the registered buffer, as `buf_index` says, with as many items as that buffer has
        bytes is all of it, an item a byte.)"""
        if buf_index >= 0 and type(buf) is _memoryview:
            length = len(buf)
            fixed = self._fixed.get(buf_index)
            if fixed is not None and fixed[0] == length and not (writable and buf.readonly):
                return fixed[1], buf, length
        view = _from_buffer("char[]", buf, True) if writable else _from_buffer(buf)
        return view, view, len(view)

    def prep_read_send(self, fd: int, buf: Any, offset: int, user_data: int, fixed_file: bool, buf_index: int,
                       sock: int, out: Buffer, send_user_data: int, send_flags: int = 0) -> None:
        """A read into `buf`, and a send of `out` on `sock` linked to it: the kernel sends once the read has
        filled all of `buf`, without a turn of the loop between; if the read fails or stops short, the send
        completes with -ECANCELED and sends nothing. Both ops are queued by one C call, into one submission."""
        start, pin, length = self._file_buffer(buf, buf_index, True)
        sending = _from_buffer(out)
        _check_rc(lib.rt_prep_read_send(self._ring, user_data, fd, start, length, offset, fixed_file, buf_index,
                                        send_user_data, sock, sending, len(sending), send_flags), "prep_read_send")
        self._pins[send_user_data] = sending
        self._linked.add(send_user_data)
        self._file_op_queued(user_data, pin, _HEAVY)

    def _file_op_queued(self, user_data: int, buf: Any, weight: int) -> None:
        self._files[user_data] = buf
        self._group_weight += weight
        if self._group_weight >= _FILE_OP_GROUP:
            self._submit_early()
            return
        if self._quiet and len(self._files) == 1:
            self._submit_early()

    def prep_readv(self, fd: int, bufs: Iterable[Buffer], offset: int, user_data: int, rw_flags: int = 0) -> None:
        iov, views = _iovec(bufs, True)
        _check_rc(lib.rt_prep_readv(self._ring, user_data, fd, iov, len(views), offset, rw_flags), "prep_readv")
        self._files[user_data] = iov, views

    def prep_writev(self, fd: int, bufs: Iterable[Buffer], offset: int, user_data: int, rw_flags: int = 0) -> None:
        iov, views = _iovec(bufs, False)
        _check_rc(lib.rt_prep_writev(self._ring, user_data, fd, iov, len(views), offset, rw_flags), "prep_writev")
        self._files[user_data] = iov, views

    def prep_fsync(self, fd: int, user_data: int, datasync: bool = False) -> None:
        flags = lib.IORING_FSYNC_DATASYNC if datasync else 0
        _check_rc(lib.rt_prep_fsync(self._ring, user_data, fd, flags), "prep_fsync")

    def prep_fallocate(self, fd: int, mode: int, offset: int, length: int, user_data: int) -> None:
        _check_rc(lib.rt_prep_fallocate(self._ring, user_data, fd, mode, offset, length), "prep_fallocate")

    def prep_accept(self, fd: int, user_data: int) -> None:
        _check_rc(lib.rt_prep_accept(self._ring, user_data, fd), "prep_accept")

    def prep_recv_at(self, fd: int, start: Any, length: int, buf: Any, user_data: int, flags: int = 0) -> None:
        """prep_recv into the first `length` bytes of bytearray `buf`, whose address `start` is (address_of): the ring
        keeps `buf` alive until the completion, and makes no cffi view of it (that costs as much as the op's C
        call, and as much again to free at the completion)."""
        if length > len(buf):
            raise ValueError(f"prep_recv_at: {length} bytes into a buffer of {len(buf)}")
        rc: int = _prep_recv(self._ring, user_data, fd, start, length, flags)
        if rc:
            raise error_for(rc, "prep_recv")
        self._pins[user_data] = buf

    def prep_recv(self, fd: int, buf: Buffer, user_data: int, flags: int = 0) -> None:
        view = _from_buffer("char[]", buf, True)
        rc: int = _prep_recv(self._ring, user_data, fd, view, len(view), flags)
        if rc:
            raise error_for(rc, "prep_recv")
        self._pins[user_data] = view

    def prep_recv_parts(self, fd: int, head: Buffer, body: Buffer, tail: Buffer, user_data: int,
                        flags: int = 0) -> None:
        """A receive into `head`, on into `body`, then into `tail` (may be empty), as one completion (recvmsg)."""
        head_view = _from_buffer("char[]", head, True)
        body_view = _from_buffer("char[]", body, True)
        tail_view = _from_buffer("char[]", tail, True)
        parts = _new("struct rt_recv_parts *")
        rc: int = _prep_recv_parts(self._ring, user_data, fd, parts, head_view, len(head_view), body_view,
                                   len(body_view), tail_view, len(tail_view), flags)
        if rc:
            raise error_for(rc, "prep_recv_parts")
        self._pins[user_data] = parts, head_view, body_view, tail_view

    def prep_send(self, fd: int, buf: Any, user_data: int, flags: int = 0) -> None:
        """A send of `buf`: bytes go to C as they are (cffi passes their own memory for a `const void *`), other
        buffers through a cffi view."""
        start = buf if type(buf) is bytes else _from_buffer(buf)
        rc: int = _prep_send(self._ring, user_data, fd, start, len(start), flags)
        if rc:
            raise error_for(rc, "prep_send")
        self._pins[user_data] = start

    def prep_sendmsg(self, fd: int, bufs: Iterable[Buffer], user_data: int, flags: int = 0) -> None:
        iov, views = _iovec(bufs, False)
        msg = ffi.new("struct msghdr *", {"msg_iov": iov, "msg_iovlen": len(views)})
        _check_rc(lib.rt_prep_sendmsg(self._ring, user_data, fd, msg, flags), "prep_sendmsg")
        self._pins[user_data] = msg, iov, views

    def prep_cancel(self, target_user_data: int, user_data: int) -> None:
        _check_rc(lib.rt_prep_cancel(self._ring, user_data, target_user_data, 0), "prep_cancel")

    def prep_timeout(self, seconds: float, user_data: int) -> None:
        """Completes with -ETIME after `seconds` (or -ECANCELED when cancelled)."""
        ns = int(seconds * 1e9)
        ts = ffi.new("struct __kernel_timespec *", divmod(ns, 1_000_000_000))
        _check_rc(lib.rt_prep_timeout(self._ring, user_data, ts), "prep_timeout")
        self._pins[user_data] = ts

    def prep_poll_add(self, fd: int, events: int, user_data: int) -> None:
        """One-shot poll: completes with the ready events (select.POLLIN …) as soon as `fd` has any of
        `events` — at once if it already has. Re-arm after each completion to keep watching."""
        _check_rc(lib.rt_prep_poll_add(self._ring, user_data, fd, events), "prep_poll_add")

    # -- registered files and buffers --------------------------------------------------------------------------
    def register_file(self, fd: int) -> int:
        """A registered slot holding `fd` (prep_read/prep_write take it for the fd with fixed_file=True), or -1
        when none is free or the kernel refuses. The fd may be closed after unregister_file."""
        if self._ring is None:
            return -1
        free = self._free_files
        if free is None:
            free = self._free_files = self._table(lib.io_uring_register_files_sparse, FIXED_FILES)
        if not free or lib.rt_register_file(self._ring, free[-1], fd):
            return -1
        return free.pop()

    def unregister_file(self, slot: int) -> None:
        """Empty a register_file slot (ops in flight keep their file until they complete). Queued ops are
        submitted first: an op takes its reference to the slot's file when the kernel receives it. A slot the
        kernel would not empty is not handed out again."""
        if self._ring is not None and self._free_files is not None:
            self.submit()
            if lib.rt_register_file(self._ring, slot, -1) == 0:
                self._free_files.append(slot)

    def register_buffer(self, buf: Buffer) -> int:
        """A registered slot for the memory of `buf` (prep_read/prep_write of any part of it take it as
        buf_index), or -1 when no slot is free, FIXED_BYTES would be passed or the kernel refuses. The caller
        keeps `buf` alive and in place until unregister_buffer."""
        if self._ring is None:
            return -1
        free = self._free_buffers
        if free is None:
            free = self._free_buffers = self._table(lib.io_uring_register_buffers_sparse, FIXED_BUFFERS)
        view = _from_buffer("char[]", buf, True)
        length = len(view)
        if (not free or sum(kept for kept, _ in self._fixed.values()) + length > FIXED_BYTES
                or lib.rt_register_buffer(self._ring, free[-1], view, length)):
            return -1
        slot = free.pop()
        self._fixed[slot] = length, ffi.cast("char *", view)
        return slot

    def unregister_buffer(self, slot: int) -> None:
        """Empty a register_buffer slot (ops in flight keep the pages pinned until they complete). Queued ops are
        submitted first, as in unregister_file; a slot the kernel would not empty is not handed out again."""
        if self._ring is not None and self._fixed.pop(slot, None) is not None:
            self.submit()
            if lib.rt_register_buffer(self._ring, slot, ffi.NULL, 0) == 0:
                assert self._free_buffers is not None
                self._free_buffers.append(slot)

    def _table(self, sparse: Callable[[Any, int], int], slots: int) -> list[int]:
        """The free slots of a fresh sparse table: all of them, or none when the kernel refuses one."""
        return list(range(slots - 1, -1, -1)) if sparse(self._ring, slots) == 0 else []

    # -- submitting and reaping --------------------------------------------------------------------------------
    def submit(self) -> int:
        """Hand every queued SQE to the kernel; the number submitted."""
        self._group_weight = 0
        return _check_rc(lib.io_uring_submit(self._ring), "io_uring_submit")

    def _submit_early(self) -> None:
        """Hand every queued SQE to the kernel in the middle of a turn; a failure is the next turn's to report
        (its submission meets it again)."""
        self._group_weight = 0
        lib.io_uring_submit(self._ring)

    def submit_and_wait(self, wait_nr: int = 1, timeout: float | None = None) -> int:
        """Submit and wait for `wait_nr` completions or `timeout` seconds. A timeout or a signal returns
        normally (0) so the caller's loop, and Python's signal handlers, run. Otherwise liburing's count
        (the SQEs submitted; its timed form may report 0)."""
        self._group_weight = 0
        rc = lib.rt_submit_and_wait(self._ring, wait_nr, -1 if timeout is None else int(timeout * 1e9))
        if rc == -errno.ETIME or rc == -errno.EINTR:
            return 0
        return _check_rc(rc, "io_uring_submit_and_wait")

    def turn(self, wait: bool, timeout: float | None = None) -> list[int]:
        """Submit, wait for one completion if `wait` (or `timeout` seconds; a signal ends the wait too), and
        reap every ready completion, in one C call: a flat list [user_data, res, user_data, res, …], res
        negative errno on failure. Unpins their buffers. The event loop's whole turn; what it reaped decides
        whether the next waiting turn busy-polls first."""
        if _VALGRIND and wait:
            os.sched_yield()
            timeout = _VALGRIND_WAIT if timeout is None else min(timeout, _VALGRIND_WAIT)
        self._group_weight = 0
        spin = self._spin_ns
        if spin and len(self._files) == 1:
            spin *= _FILE_SPIN_FACTOR
        rc: int = _turn(self._reaper, 2 if wait else 1, 1, -1 if timeout is None else int(timeout * 1e9), spin)
        if rc < 0:
            raise error_for(rc, "io_uring_submit_and_wait")
        done = self._reaped(rc) if rc else []
        if self._linked:                    # a read and its linked send complete together: one completion
            rc -= self._linked_reaped(done)
        self._quiet = quiet = not (self._files or self.outside_ops or rc > _SPIN_AFTER_AT_MOST)
        self._spin_ns = self._busy_poll_ns if quiet else 0
        return done

    def submit_and_reap(self) -> list[int]:
        """Submit what is queued and reap what is ready, without waiting, as `turn` does; the busy-poll
        decision stays the last turn's (for a reap within a turn, of what the kernel completed while submitting)."""
        self._group_weight = 0
        rc: int = _turn(self._reaper, 1, 0, 0, 0)
        if rc < 0:
            raise error_for(rc, "io_uring_submit")
        done = self._reaped(rc) if rc else []
        if self._linked and done:
            self._linked_reaped(done)
        return done

    def _linked_reaped(self, done: list[int]) -> int:
        """How many of the linked sends in flight `done` holds; they are in flight no more."""
        linked = self._linked
        reaped = [user_data for user_data in done[::2] if user_data in linked]
        linked.difference_update(reaped)
        return len(reaped)

    def _reaped(self, rc: int) -> list[int]:
        """The `rc` completions the last _turn left in _pairs, and any more the CQ holds beyond them; unpinned."""
        # (the ints stay Python objects, `Any` rather than `int`: compiled, an `int` taken out of a list is unboxed,
        # and boxed again, a new object, for every dict lookup or call it goes on to)
        pairs = self._pairs
        if rc == 1:                         # (a QD1 turn's one completion: two indexings cost less than the call)
            done: list[Any] = [pairs[0], pairs[1]]
        else:
            done = _unpack(pairs, 2 * rc)
        while rc == self._capacity:         # the CQ may hold more than one batch
            rc = _turn(self._reaper, 0, 0, 0, 0)
            done += _unpack(pairs, 2 * rc)
        pins, files = self._pins, self._files
        for i in range(0, len(done), 2):    # (`in` and `del`: native dict calls, compiled; `pop` is a method call)
            user_data = done[i]
            if user_data in pins:
                del pins[user_data]
            elif user_data in files:
                del files[user_data]
        return done

    def reap(self) -> list[tuple[int, int]]:
        """Every ready completion as (user_data, res), res negative errno on failure. Unpins their buffers."""
        done: list[tuple[int, int]] = []
        pop, pop_file = self._pins.pop, self._files.pop
        capacity = self._capacity
        while True:
            n = lib.rt_reap(self._ring, self._scratch, self._user_data, self._res, ffi.NULL, capacity)
            if n:
                user_data = ffi.unpack(self._user_data, n)
                for u in user_data:
                    pop(u, None) or pop_file(u, None)
                self._linked.difference_update(user_data)
                done += zip(user_data, ffi.unpack(self._res, n))
            if n < capacity:
                return done
