"""target.backstore.atomic on the real ring: atomic writes through the journal, replay after a crash (a valid
record is completed, a torn one ignored), a dead writer recovered by a waiting reader, reads and writes repeated
around another process's atomic write, and no torn read while another process writes atomically."""
import multiprocessing
import os
import struct

import pytest

from target.backstore import open_backstore
from target.backstore.atomic import (_MAGIC, _RECORD, _RECORD_AT, MAX_ATOMIC_BYTES, AtomicFileBackstore, JournalError,
                                    _record_crc)
from target.reactor import Reactor
from ioring import Ring
from tests.backstore_helpers import MiB, complete, read, write


def journal_of(store):
    return store.path + ".atomic"


def put_record(path, offset, data, crc=None):
    """A journal record as an atomic write leaves it after its journal write, before its in-place write."""
    crc = _record_crc(offset, data) if crc is None else crc
    with open(path, "r+b") as f:
        f.seek(_RECORD_AT)
        f.write(_RECORD.pack(_MAGIC, offset, len(data), crc) + data)


def set_counter(path, value):
    with open(path, "r+b") as f:
        f.write(struct.pack("=Q", value))


def atomic(reactor, store, offset, data):
    assert complete(reactor, lambda cb: store.atomic_write(offset, data, cb)) is None


def test_regular_files_get_atomic_writes_through_a_cleared_journal(reactor, opener):
    store = opener()
    assert isinstance(store, AtomicFileBackstore) and store.max_atomic_bytes == MAX_ATOMIC_BYTES
    data = os.urandom(256 * 512)
    atomic(reactor, store, 512, data)
    assert read(reactor, store, 512, len(data)) == data
    with open(journal_of(store), "rb") as f:
        f.seek(_RECORD_AT)
        assert f.read(8) == bytes(8)                                            # the record is cleared
    assert store.generation() % 2 == 0
    with pytest.raises(ValueError):
        store.atomic_write(0, bytes(MAX_ATOMIC_BYTES + 512), lambda error: None)


@pytest.mark.parametrize("direct", [False, True])
def test_a_valid_record_is_written_in_place_at_open_and_a_torn_one_is_not(reactor, opener, direct):
    store = opener(direct=direct)
    write(reactor, store, 0, b"o" * 4096)
    store.close()
    put_record(journal_of(store), 1024, b"n" * 2048)
    set_counter(journal_of(store), 7)                                           # odd: the writer died in place
    store = opener(direct=direct)
    assert read(reactor, store, 0, 4096) == b"o" * 1024 + b"n" * 2048 + b"o" * 1024
    assert store.generation() % 2 == 0
    store.close()
    put_record(journal_of(store), 0, b"t" * 4096, crc=12345)                    # torn: its CRC does not match
    store = opener(direct=direct)
    assert read(reactor, store, 0, 4096) == b"o" * 1024 + b"n" * 2048 + b"o" * 1024


def test_a_reader_completes_the_atomic_write_of_a_worker_that_died(reactor, opener):
    store = opener()
    write(reactor, store, 0, b"o" * 1024)
    put_record(journal_of(store), 0, b"n" * 1024)
    store._advance()                                                            # odd, and nobody holds the lock
    assert read(reactor, store, 0, 1024) == b"n" * 1024
    assert store.generation() % 2 == 0


def test_io_during_another_process_atomic_write_is_repeated_after_it(reactor, opener):
    store = opener()
    write(reactor, store, 0, b"o" * 1024)
    results = []
    store.read(0, 1024, results.append)                                         # queued, not yet run
    store.write(2048, b"w" * 512, False, results.append)
    store._advance()                                                            # another worker: odd …
    os.pwrite(store._fd, b"a" * 3072, 0)                                        # … writes in place …
    store._advance()                                                            # … even
    for _ in range(100):
        if len(results) == 2:
            break
        reactor.run_once(0.05)
    view, error = results
    assert bytes(view) == b"a" * 1024 and error is None
    assert read(reactor, store, 2048, 1024) == b"w" * 512 + b"a" * 512          # the write landed after it


def test_an_atomic_write_whose_in_place_half_waits_past_the_queue_depth_completes(reactor, opener):
    """Its in-place write (counter odd) is held behind a full queue, then started: unchecked, as asked for (an
    atomic store's own write would check it against the odd counter and wait for itself forever)."""
    store = opener(write_queue_depth=1)
    data = os.urandom(8 * 512)
    store._in_flight = 1                    # white box: the one slot taken, as by a write still in the kernel
    done = []
    store.atomic_write(4096, data, done.append)
    for _ in range(100):
        if store._held:
            break
        reactor.run_once(0.05)
    assert len(store._held) == 1 and store.generation() % 2 == 1    # journaled; its in-place write waits
    store._in_flight -= 1                   # that write completes: the held one starts
    store._start_held()
    for _ in range(200):
        if done:
            break
        reactor.run_once(0.05)
    assert done == [None] and store.generation() % 2 == 0
    assert read(reactor, store, 4096, len(data)) == data


def test_without_a_journal_the_file_serves_without_atomic_writes(reactor, tmp_path, caplog):
    (tmp_path / "lun.img.atomic").mkdir()
    (tmp_path / "lun.img").write_bytes(b"")
    store = open_backstore("file", reactor, path=str(tmp_path / "lun.img"), size=MiB, block_size=512)
    try:
        assert not isinstance(store, AtomicFileBackstore) and store.max_atomic_bytes == 0
        assert "atomic write journal" in caplog.text and "WRITE ATOMIC is not offered" in caplog.text
        write(reactor, store, 0, b"x" * 512)
    finally:
        store.close()


def test_atomic_writes_turned_off_leave_a_plain_file_whose_reads_can_be_linked(reactor, tmp_path):
    """`atomic_writes = false`: no journal, no WRITE ATOMIC, and reads may leave linked to their sends, which an
    atomic file's may not (they are checked against the atomic writes once read)."""
    (tmp_path / "lun.img").write_bytes(b"")
    store = open_backstore("file", reactor, path=str(tmp_path / "lun.img"), size=MiB, block_size=512,
                           atomic_writes=False)
    try:
        assert not isinstance(store, AtomicFileBackstore) and store.max_atomic_bytes == 0 and store.sends_with_read
        assert not (tmp_path / "lun.img.atomic").exists()
    finally:
        store.close()
    store = open_backstore("file", reactor, path=str(tmp_path / "lun.img"), size=MiB, block_size=512)
    try:
        assert isinstance(store, AtomicFileBackstore) and not store.sends_with_read
    finally:
        store.close()


def test_atomic_writes_turned_off_complete_what_the_journal_holds_and_clear_it(reactor, opener, tmp_path):
    """A crash left an atomic write in its journal, and the LUN comes back with `atomic_writes = false`: the write
    is completed before the plain file serves, and its record cleared, so that turning atomic writes on again
    later does not replay it over newer data."""
    store = opener()
    path = store.path
    store.close()
    put_record(journal_of(store), 4096, b"J" * 1024)
    plain = open_backstore("file", reactor, path=path, size=MiB, block_size=512, atomic_writes=False)
    try:
        assert not isinstance(plain, AtomicFileBackstore)
        assert read(reactor, plain, 4096, 1024) == b"J" * 1024
        write(reactor, plain, 4096, b"n" * 1024)                # newer data, written without atomic writes
    finally:
        plain.close()
    again = open_backstore("file", reactor, path=path, size=MiB, block_size=512)
    try:
        assert isinstance(again, AtomicFileBackstore) and read(reactor, again, 4096, 1024) == b"n" * 1024
    finally:
        again.close()


def test_an_unreadable_journal_keeps_a_lun_without_atomic_writes_from_opening(reactor, tmp_path):
    (tmp_path / "lun.img.atomic").mkdir()
    (tmp_path / "lun.img").write_bytes(b"")
    with pytest.raises(JournalError, match="atomic write journal"):
        open_backstore("file", reactor, path=str(tmp_path / "lun.img"), size=MiB, block_size=512,
                       atomic_writes=False)


def _atomic_writer(path, rounds, ready):
    """Another worker: whole-range atomic writes, each of one byte value, as fast as it can."""
    with Ring(16) as ring:
        reactor = Reactor(ring)
        store = open_backstore("file", reactor, path=path, size=MiB, block_size=512)
        ready.set()
        for value in range(rounds):
            done = []
            store.atomic_write(0, bytes([value % 251 + 1]) * (128 * 1024), done.append)
            while not done:
                reactor.run_once(0.05)
            assert done == [None]
        store.close()


def test_no_read_sees_part_of_another_process_atomic_write(reactor, opener):
    store = opener(size=MiB)
    write(reactor, store, 0, b"\x01" * (128 * 1024))
    ready = multiprocessing.get_context("fork").Event()
    writer = multiprocessing.get_context("fork").Process(target=_atomic_writer, args=(store.path, 300, ready))
    writer.start()
    assert ready.wait(30)
    reads = 0
    while writer.is_alive() or not reads:
        view = read(reactor, store, 0, 128 * 1024)
        assert view == view[:1] * len(view), f"read {reads} saw parts of two atomic writes"
        reads += 1
    writer.join()
    assert writer.exitcode == 0 and reads
