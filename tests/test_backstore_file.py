"""target.backstore.file on the real ring: data paths, durability flags, sparse files, devices, errors."""
import errno
import os
import subprocess

import pytest

from ioring import FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, RWF_DSYNC, Ring
from target.backstore import BackstoreError, images, open_backstore
from target.backstore.file import FileBackstore
from target.buffers import HEADROOM
from target.reactor import Reactor
from tests.mounts import mounted
from tests.backstore_helpers import MiB, complete, read, write


class RecordingRing(Ring):
    """A real ring that remembers the rw_flags of every write it queues."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_flags = []

    def prep_write(self, fd, buf, offset, user_data, rw_flags=0, fixed_file=False, buf_index=-1):
        self.write_flags.append(rw_flags)
        super().prep_write(fd, buf, offset, user_data, rw_flags, fixed_file, buf_index)


@pytest.fixture
def reactor():
    with RecordingRing(64) as ring:
        yield Reactor(ring)


def test_write_then_read_back(reactor, opener):
    store = opener()
    write(reactor, store, 8192, b"a" * 4096)
    assert read(reactor, store, 8192, 4096) == b"a" * 4096
    assert read(reactor, store, 0, 512) == bytes(512)


def test_read_buffer_has_headroom(reactor, opener):
    store = opener()
    view = complete(reactor, lambda cb: store.read(0, 4096, cb))
    assert len(view.obj) == HEADROOM + 4096


def test_unaligned_and_large_transfers(reactor, opener):
    store = opener(size=8 * MiB)
    data = os.urandom(3 * MiB + 123)
    write(reactor, store, 777, memoryview(bytearray(data)))
    assert read(reactor, store, 777, len(data)) == data
    assert read(reactor, store, 0, 777) == bytes(777)


def test_write_flags_follow_fua_and_write_cache(reactor, opener):
    store = opener()
    write(reactor, store, 0, b"1" * 512)
    write(reactor, store, 512, b"2" * 512, fua=True)
    store.write_cache = False
    write(reactor, store, 1024, b"3" * 512)
    assert reactor.ring.write_flags == [0, RWF_DSYNC, RWF_DSYNC]
    assert read(reactor, store, 0, 1536) == b"1" * 512 + b"2" * 512 + b"3" * 512


def test_write_cache_off_from_the_start(reactor, opener):
    store = opener(write_cache=False)
    assert store.write_cache is False
    write(reactor, store, 0, b"x" * 4096)
    assert reactor.ring.write_flags == [RWF_DSYNC]


def test_flush(reactor, opener):
    store = opener()
    write(reactor, store, 0, b"x" * 4096)
    assert complete(reactor, store.flush) is None


def test_unmap_reads_back_zeros(reactor, opener, tmp_path):
    store = opener()
    write(reactor, store, 0, b"\xff" * (1 * MiB))
    assert complete(reactor, lambda cb: store.unmap(64 * 1024, 128 * 1024, cb)) is None
    data = read(reactor, store, 0, MiB)
    assert data[:65536] == b"\xff" * 65536
    assert data[65536:196608] == bytes(131072)
    assert data[196608:] == b"\xff" * (MiB - 196608)
    assert os.stat(tmp_path / "lun.img").st_size == 4 * MiB


def test_a_missing_file_is_never_created(reactor, tmp_path):
    with pytest.raises(BackstoreError, match="lun.img: No such file"):
        FileBackstore(reactor, path=str(tmp_path / "lun.img"), size=MiB, block_size=512)
    assert not (tmp_path / "lun.img").exists()


def test_existing_file_extended_never_truncated(reactor, opener, tmp_path):
    path = tmp_path / "lun.img"
    path.write_bytes(b"keep" * 1024)
    store = opener(size=MiB)
    assert os.stat(path).st_size == MiB and store.size == MiB
    assert read(reactor, store, 0, 4096) == b"keep" * 1024
    store.close()
    smaller = opener(size=8192)
    assert smaller.size == 8192 and os.stat(path).st_size == MiB


def test_size_defaults_to_the_existing_file(opener, tmp_path):
    (tmp_path / "lun.img").write_bytes(bytes(10000))
    assert opener(size=None, block_size=4096).size == 8192


def test_short_read_at_eof_is_zero_filled(reactor, opener, tmp_path):
    store = opener()
    write(reactor, store, 0, b"d" * 8192)
    os.truncate(tmp_path / "lun.img", 6000)             # shrunk behind the store's back
    assert read(reactor, store, 4096, 4096) == b"d" * 1904 + bytes(2192)


def test_io_errors_reach_the_callback(reactor, opener):
    store = opener()
    store.close()
    error = complete(reactor, lambda cb: store.read(0, 512, cb))
    assert isinstance(error, OSError) and "read" in str(error) and "lun.img" in str(error)
    assert isinstance(complete(reactor, lambda cb: store.write(0, b"x" * 512, False, cb)), OSError)
    assert isinstance(complete(reactor, store.flush), OSError)
    assert isinstance(complete(reactor, lambda cb: store.unmap(0, 512, cb)), OSError)


def test_direct_io(reactor, opener):
    store = opener(direct=True, block_size=4096)
    data = os.urandom(3 * 4096)
    unaligned = memoryview(bytearray(b"?" + data))[1:]
    write(reactor, store, 4096, unaligned, fua=True)
    view = complete(reactor, lambda cb: store.read(4096, len(data), cb))
    assert bytes(view) == data


@pytest.mark.parametrize("setup, name, reason", [
    (lambda d: (d / "adir").mkdir(), "adir", "Is a directory"),
    (lambda d: (d / "afile").write_bytes(b""), "afile/lun.img", "Not a directory|File exists"),
    (lambda d: None, "/proc/ringtgt-lun.img", "No such file|Permission denied|Read-only"),
])
def test_open_errors_name_path_and_reason(opener, tmp_path, setup, name, reason):
    setup(tmp_path)
    with pytest.raises(BackstoreError, match=f"{os.path.basename(name)}.*({reason})"):
        opener(name)


def test_empty_file_without_size(opener):
    with pytest.raises(BackstoreError, match="empty, and no size given"):
        opener("new.img", size=None)


@pytest.fixture
def loop_device(tmp_path):
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(2 * MiB)
    try:
        device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no loop device: {e}")
    yield device
    subprocess.run(["losetup", "--detach", device], check=False)


def test_block_device(reactor, opener, loop_device):
    store = opener(loop_device, size=None)
    assert store.size == 2 * MiB
    write(reactor, store, 4096, b"b" * 4096)
    assert read(reactor, store, 4096, 4096) == b"b" * 4096
    store.close()
    assert opener(loop_device, size=MiB).size == MiB
    with pytest.raises(BackstoreError, match="exceeds the device's 2097152 bytes"):
        opener(loop_device, size=4 * MiB)


def test_extents_follow_holes_and_zero_ranges(reactor, opener):
    store = opener(size=4 * MiB)
    assert list(store.extents(0, 4 * MiB)) == [(0, 4 * MiB, False)]             # created sparse
    write(reactor, store, MiB, b"\xAA" * 65536)
    assert list(store.extents(0, 4 * MiB)) == [(0, MiB, False), (MiB, 65536, True),
                                               (MiB + 65536, 3 * MiB - 65536, False)]
    assert complete(reactor, lambda cb: store.write_zeroes(2 * MiB, 65536, cb)) is None
    assert read(reactor, store, 2 * MiB, 65536) == bytes(65536)
    assert (2 * MiB, 65536, True) in list(store.extents(2 * MiB, 65536))         # allocated zeros


def test_range_locks_exclude_other_open_files_only(opener, tmp_path):
    """Two opens of one file are two open file descriptions, as two worker processes have."""
    first, second = opener("shared.img"), opener("shared.img")
    assert first.try_lock(4096, 512)
    assert not second.try_lock(4096, 512)                                        # held by the other
    assert second.try_lock(8192, 512)                                            # another range
    first.unlock(4096, 512)
    assert second.try_lock(4096, 512)


class FallocateRing(RecordingRing):
    """… and the mode of every fallocate."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fallocate_modes = []

    def prep_fallocate(self, fd, mode, offset, length, user_data):
        self.fallocate_modes.append(mode)
        super().prep_fallocate(fd, mode, offset, length, user_data)


@pytest.fixture
def tmpfs(tmp_path):
    with mounted(tmp_path / "tmpfs", "tmpfs", "16m") as path:
        yield path


def new_image(reactor, path, size):
    """A file store on an image made as `serve` makes one (backstores never create their file)."""
    images.create(str(path), size)
    return open_backstore("file", reactor, path=str(path), size=size, block_size=512)


def test_zeroing_where_the_file_system_refuses_zero_range(tmpfs):
    """tmpfs has no FALLOC_FL_ZERO_RANGE: the range is written with zeros, and the refusal is met once."""
    with FallocateRing(64) as ring:
        reactor = Reactor(ring)
        store = new_image(reactor, tmpfs / "lun.img", 4 * MiB)
        try:
            write(reactor, store, 0, b"\xff" * (3 * MiB))
            assert complete(reactor, lambda cb: store.write_zeroes(4096, 2 * MiB + 512, cb)) is None
            assert complete(reactor, lambda cb: store.write_zeroes(0, 512, cb)) is None
            assert ring.fallocate_modes == [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]
            data = read(reactor, store, 0, 3 * MiB)
            assert data[:512] == bytes(512) and data[512:4096] == b"\xff" * 3584
            assert data[4096:4096 + 2 * MiB + 512] == bytes(2 * MiB + 512)
            assert data[4096 + 2 * MiB + 512:] == b"\xff" * (MiB - 4096 - 512)
            assert store.deallocates                            # tmpfs punches holes
        finally:
            store.close()


def test_a_file_system_without_hole_punching_is_found_at_open(reactor, tmp_path):
    """ramfs refuses every fallocate mode: the backstore says it cannot deallocate, and unmap writes zeros."""
    with mounted(tmp_path / "ramfs", "ramfs") as path:
        store = new_image(reactor, path / "lun.img", MiB)
        try:
            assert not store.deallocates
            write(reactor, store, 0, b"\xee" * 8192)
            assert complete(reactor, lambda cb: store.unmap(512, 4096, cb)) is None
            assert complete(reactor, lambda cb: store.write_zeroes(4608, 512, cb)) is None
            assert read(reactor, store, 0, 8192) == b"\xee" * 512 + bytes(4608) + b"\xee" * 3072
        finally:
            store.close()


def test_io_errors_name_the_path_and_offset(reactor, tmp_path):
    with mounted(tmp_path / "small", "tmpfs", "1m") as path:
        store = new_image(reactor, path / "lun.img", 4 * MiB)
        try:
            error = complete(reactor, lambda cb: store.write(2 * MiB, b"\1" * (2 * MiB), False, cb))
            assert isinstance(error, OSError) and error.errno == errno.ENOSPC
            assert f"write {path}/lun.img at offset " in str(error)
        finally:
            store.close()


def test_writes_past_the_write_queue_depth_wait_their_turn_and_reads_never_wait(reactor, opener):
    store = opener(write_queue_depth=2)
    done = []
    for n in range(6):
        store.write(4096 * n, bytes([n + 1]) * 4096, False, lambda error, n=n: done.append((n, error)))
    assert len(reactor.ring.write_flags) == 2           # two in the kernel, four held in order
    reads = []
    for n in range(6):
        store.read(4096 * n, 4096, lambda view, n=n: reads.append(n))
    assert len(reactor.ring._files) == 2 + 6            # white box: every read in the ring at once
    for _ in range(200):
        if len(done) == 6 and len(reads) == 6:
            break
        reactor.run_once(0.05)
    assert sorted(done) == [(n, None) for n in range(6)] and len(reactor.ring.write_flags) == 6
    assert [read(reactor, store, 4096 * n, 4096) for n in range(6)] == [bytes([n + 1]) * 4096 for n in range(6)]


def test_held_writes_still_reach_the_file_when_the_store_closes(reactor, opener, tmp_path):
    store = opener(write_queue_depth=1)
    done = []
    for n in range(4):
        store.write(512 * n, bytes([0x41 + n]) * 512, False, done.append)
    store.close()                                       # LUN removed: the three held writes are queued first
    for _ in range(200):
        if len(done) == 4:
            break
        reactor.run_once(0.05)
    assert done == [None] * 4
    assert (tmp_path / "lun.img").read_bytes()[:2048] == b"A" * 512 + b"B" * 512 + b"C" * 512 + b"D" * 512


def test_a_held_write_is_as_durable_as_the_write_cache_was_when_it_came(reactor, opener):
    store = opener(write_queue_depth=1)
    store.write_cache = False
    done = []
    store.write(0, b"1" * 512, False, done.append)
    store.write(512, b"2" * 512, False, done.append)    # held
    store.write_cache = True                            # a MODE SELECT meanwhile
    store.write(1024, b"3" * 512, False, done.append)   # held, with the cache on
    for _ in range(200):
        if len(done) == 3:
            break
        reactor.run_once(0.05)
    assert done == [None] * 3 and reactor.ring.write_flags == [RWF_DSYNC, RWF_DSYNC, 0]
