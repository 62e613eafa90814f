"""target.backstore: the registry (open_backstore), argument checks, read buffers and their registration."""
import ctypes
import mmap
import os
from functools import partial

import pytest

import ioring
from target.backstore import BackstoreError, open_backstore
from target.buffers import HEADROOM, BufferPool, headroom_view
from target.backstore.file import FileBackstore
from target.backstore.null import NullBackstore
from tests.backstore_helpers import complete
from tests.ring_helpers import wait_all


def test_registry_opens_each_kind(reactor, tmp_path):
    (tmp_path / "lun").write_bytes(b"")
    with_file = open_backstore("file", reactor, path=str(tmp_path / "lun"), size=1 << 20, block_size=512)
    null = open_backstore("null", reactor, path=None, size=1 << 20, block_size=4096, write_cache=False)
    assert isinstance(with_file, FileBackstore) and isinstance(null, NullBackstore)
    assert (null.size, null.block_size, null.write_cache) == (1 << 20, 4096, False)
    with_file.close()
    null.close()


@pytest.mark.parametrize("kind, kwargs, message", [
    ("tape", {"size": 4096, "block_size": 512}, "unknown backstore 'tape'"),
    ("null", {"size": 4096, "block_size": 1024}, "block size must be 512 or 4096"),
    ("null", {"size": 1000, "block_size": 512}, "positive multiple of the block size 512"),
    ("null", {"size": 0, "block_size": 512}, "positive multiple"),
    ("null", {"size": None, "block_size": 512}, "size is required"),
    ("file", {"size": 4096, "block_size": 512}, "path is required"),
])
def test_bad_arguments(reactor, kind, kwargs, message):
    with pytest.raises(BackstoreError, match=message):
        open_backstore(kind, reactor, path=None, **kwargs)


def test_buffers_keep_headroom():
    view = BufferPool().get(1000)
    assert len(view) == 1000 and not view.readonly
    assert isinstance(view.obj, bytearray) and len(view.obj) == HEADROOM + 1000
    view[:] = b"x" * 1000
    assert view.obj[:HEADROOM] == bytes(HEADROOM) and view.obj[HEADROOM:] == b"x" * 1000


def test_aligned_buffers_start_on_a_page_with_headroom_in_front():
    pool = BufferPool(aligned=True)
    for length in (512, 4096, 5000, 128 << 10):
        view = pool.get(length)
        assert len(view) == length and not view.readonly
        assert ctypes.addressof(ctypes.c_char.from_buffer(view)) % mmap.PAGESIZE == 0
        whole = headroom_view(view)
        assert whole is not None and whole.nbytes == HEADROOM + length
        whole[:HEADROOM] = b"h" * HEADROOM                 # the header goes in front, the data stays
        view[:] = b"d" * length
        assert bytes(whole) == b"h" * HEADROOM + b"d" * length
        assert headroom_view(view[:length - 1]) is None    # a truncated view has no headroom of its own


@pytest.mark.parametrize("aligned", [False, True])
def test_buffers_are_reused_only_once_no_view_is_left(aligned):
    pool = BufferPool(aligned=aligned)
    first = pool.get(4096)
    first[:] = b"a" * 4096
    part = first[100:200]                       # what a Data-In PDU or a ring op would hold
    owner = id(first.obj)                       # not a reference: that would keep it in use
    del first
    second = pool.get(4096)
    assert id(second.obj) != owner and bytes(part) == b"a" * 100    # still in use: a fresh one
    del part, second
    third = pool.get(4096)
    assert id(third.obj) == owner and len(third) == 4096 and headroom_view(third).nbytes == HEADROOM + 4096
    assert id(pool.get(512).obj) != owner       # another length, another buffer


def test_aligned_buffers_kept_are_registered_while_kept(reactor):
    ring = reactor.ring
    pool = BufferPool(aligned=True, ring=ring)
    views = [pool.get(1 << 20) for _ in range(3)]   # two kept (KEEP_BYTES); the third, all kept in use, is not
    slots = [v.obj.slot for v in views]
    assert -1 not in slots[:2] and slots[2] == -1
    del views[:2]
    again = pool.get(1 << 20)                       # a kept one again, once it is free, in its slot
    assert again.obj.slot in slots[:2]
    pool.close()
    assert again.obj.slot == -1 and views[0].obj.slot == -1
    whole = bytearray(ioring.ring.FIXED_BYTES)      # every registered byte is free again
    assert ring.register_buffer(whole) >= 0


def test_a_registered_buffer_is_not_handed_out_again_until_its_ring_op_is_reaped(reactor, tmp_path):
    """An op on a whole registered buffer goes by the address noted at registration and pins the pool's own view
    (no cffi view of its own): the pool still sees the buffer in use until the completion is reaped."""
    ring = reactor.ring
    pool = BufferPool(aligned=True, ring=ring)
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT)
    os.pwrite(fd, b"r" * 4096, 0)
    view = pool.get(4096)
    owner, slot = id(view.obj), view.obj.slot
    assert slot >= 0
    ring.prep_read(fd, view, 0, 1, 0, False, slot)
    del view
    assert id(pool.get(4096).obj) != owner          # in flight: a fresh one
    assert wait_all(ring, 1)[1] == 4096
    again = pool.get(4096)
    assert id(again.obj) == owner and bytes(again) == b"r" * 4096     # read into the registered buffer itself
    os.close(fd)
    pool.close()


def test_file_stores_give_their_registered_slots_back(reactor, opener):
    for _ in range(ioring.ring.FIXED_FILES + 1):    # a LUN reopened by reloads more often than there are slots
        store = opener(direct=True, block_size=4096)
        view = complete(reactor, partial(store.read, 0, 4096))
        assert view.obj.slot >= 0
        store.close()
    assert ring_file_slots_free(reactor.ring) == ioring.ring.FIXED_FILES


def ring_file_slots_free(ring) -> int:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        slots = []
        while (slot := ring.register_file(fd)) >= 0:
            slots.append(slot)
        for slot in slots:
            ring.unregister_file(slot)
        return len(slots)
    finally:
        os.close(fd)


@pytest.mark.parametrize("aligned", [False, True])
def test_a_buffer_of_no_bytes_is_a_fresh_empty_one(aligned):
    assert len(BufferPool(aligned=aligned).get(0)) == 0


def test_null_store_answers_later_in_the_same_turn(reactor):
    null = open_backstore("null", reactor, path=None, size=1 << 20, block_size=512)
    got = []
    null.read(0, 4096, got.append)
    null.write(0, b"x" * 512, False, got.append)
    assert got == []                            # never from inside the call
    assert reactor.run_once(0) == 0 and len(got) == 2     # at the end of the turn, no ring op needed
    assert bytes(got[0]) == bytes(4096) and got[1] is None
