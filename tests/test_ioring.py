"""ioring.Ring on the real kernel ring: file, socket, cancel and timeout ops, errors, overflow, buffer pins."""
import errno
import gc
import os
import select
import socket
import threading
import time
import weakref

import pytest

import ioring
from ioring import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, RWF_DSYNC, IoringUnavailable, Ring, error_for
from tests.ring_helpers import wait_all


@pytest.fixture
def ring():
    with Ring(32) as r:
        yield r


@pytest.fixture
def fd(tmp_path):
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT)
    yield fd
    os.close(fd)


@pytest.fixture
def tcp_pair():
    """A connected loopback TCP pair: (client, server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def test_write_then_read(ring, fd):
    ring.prep_write(fd, b"hello, ring", 100, 1)
    assert wait_all(ring, 1) == {1: 11}
    buf = bytearray(11)
    ring.prep_read(fd, memoryview(buf), 100, 2)
    assert wait_all(ring, 2) == {2: 11}
    assert buf == b"hello, ring"


def test_vectored_with_dsync(ring, fd):
    ring.prep_writev(fd, [b"abc", bytearray(b"defg"), memoryview(b"hij")], 0, 1, RWF_DSYNC)
    assert wait_all(ring, 1) == {1: 10}
    parts = [bytearray(4), bytearray(6)]
    ring.prep_readv(fd, parts, 0, 2, RWF_DSYNC)
    assert wait_all(ring, 2) == {2: 10}
    assert parts == [b"abcd", b"efghij"]


def test_fsync_and_fdatasync(ring, fd):
    os.write(fd, b"x" * 4096)
    ring.prep_fsync(fd, 1)
    ring.prep_fsync(fd, 2, datasync=True)
    assert wait_all(ring, 1, 2) == {1: 0, 2: 0}


def test_punch_hole_reads_zeros(ring, fd):
    os.pwrite(fd, b"\xff" * 65536, 0)
    ring.prep_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192, 1)
    assert wait_all(ring, 1) == {1: 0}
    data = os.pread(fd, 65536, 0)
    assert data[:4096] == b"\xff" * 4096
    assert data[4096:12288] == bytes(8192)
    assert data[12288:] == b"\xff" * (65536 - 12288)
    assert os.fstat(fd).st_size == 65536


def test_accept_recv_send_sendmsg(ring):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ring.prep_accept(listener.fileno(), 1)
        ring.submit()
        client = socket.create_connection(listener.getsockname())
        res = wait_all(ring, 1)[1]
        assert res >= 0
        with socket.socket(fileno=res) as accepted, client:
            buf = bytearray(64)
            ring.prep_recv(accepted.fileno(), buf, 2)
            ring.submit()
            client.sendall(b"ping")
            assert wait_all(ring, 2) == {2: 4}
            assert buf[:4] == b"ping"
            ring.prep_send(accepted.fileno(), b"pong", 3)
            ring.prep_sendmsg(accepted.fileno(), [b"one ", bytearray(b"two "), memoryview(b"three")], 4,
                              socket.MSG_NOSIGNAL)
            assert wait_all(ring, 3, 4) == {3: 4, 4: 13}
            received = b""
            while len(received) < 17:
                received += client.recv(64)
            assert received == b"pongone two three"


def test_cancel_pending_recv(ring, tcp_pair):
    _, server = tcp_pair
    ring.prep_recv(server.fileno(), bytearray(16), 1)
    ring.submit()
    ring.prep_cancel(1, 2)
    assert wait_all(ring, 1, 2) == {1: -errno.ECANCELED, 2: 0}


def test_poll_completes_when_the_fd_becomes_readable(ring, tcp_pair):
    client, server = tcp_pair
    ring.prep_poll_add(server.fileno(), select.POLLIN, 1)
    ring.submit_and_wait(1, 0.05)
    assert ring.reap() == [], "nothing to read yet: the poll must still be pending"
    client.sendall(b"x")
    assert wait_all(ring, 1) == {1: select.POLLIN}
    ring.prep_poll_add(server.fileno(), select.POLLIN, 2)       # one-shot: re-armed on a ready fd,
    assert wait_all(ring, 2) == {2: select.POLLIN}               # it completes at once


def test_poll_reports_hangup(ring, tcp_pair):
    client, server = tcp_pair
    ring.prep_poll_add(server.fileno(), select.POLLIN, 1)
    client.close()
    assert wait_all(ring, 1)[1] & select.POLLIN


def test_timeout_fires_with_etime(ring):
    ring.prep_timeout(0.02, 1)
    assert wait_all(ring, 1) == {1: -errno.ETIME}


def test_submit_and_wait_times_out_quietly(ring):
    assert ring.submit_and_wait(1, 0.01) == 0
    assert ring.reap() == []


def test_error_on_closed_fd_is_ebadf(ring, tmp_path):
    fd = os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    ring.prep_read(fd, bytearray(8), 0, 1)
    res = wait_all(ring, 1)[1]
    assert res == -errno.EBADF
    err = error_for(res, "read")
    assert type(err) is OSError and err.errno == errno.EBADF
    assert str(err) == f"[Errno {errno.EBADF}] read: {os.strerror(errno.EBADF)}"


def test_errors_map_to_oserror_subclasses(ring, tmp_path, tcp_pair):
    dir_fd = os.open(tmp_path, os.O_RDONLY)
    try:
        ring.prep_read(dir_fd, bytearray(8), 0, 1)
        assert isinstance(error_for(wait_all(ring, 1)[1]), IsADirectoryError)
    finally:
        os.close(dir_fd)
    client, server = tcp_pair
    server.close()
    client.shutdown(socket.SHUT_WR)
    ring.prep_send(client.fileno(), b"x", 2, socket.MSG_NOSIGNAL)
    assert isinstance(error_for(wait_all(ring, 2)[2]), BrokenPipeError)


def test_setup_errors_raise_oserror_not_unavailable():
    with pytest.raises(OSError) as info:
        Ring(1 << 20)                  # more entries than the kernel allows: EINVAL
    assert info.value.errno == errno.EINVAL
    assert not isinstance(info.value, IoringUnavailable)


def test_more_ops_than_entries_before_submitting(fd):
    with Ring(8) as ring:                       # 8 SQEs, 16 CQEs
        for i in range(100):
            ring.prep_write(fd, bytes([i]), i, i)
        for i in range(100, 140):
            ring.prep_nop(i)
        done = wait_all(ring, *range(140))
    assert all(done[i] == 1 for i in range(100))
    assert os.pread(fd, 100, 0) == bytes(range(100))


class _Buffer(bytearray):
    """A bytearray that can be referenced weakly."""


def _recv_and_sendmsg(ring, client, server, buf):
    ring.prep_recv(server.fileno(), buf, 1)
    ring.prep_sendmsg(client.fileno(), [_Buffer(b"late"), _Buffer(b" data")], 2)
    return b"late data" + bytes(7), {1: 9, 2: 9}


def _recv_at_and_send_bytes(ring, client, server, buf):
    ring.prep_recv_at(server.fileno(), ioring.address_of(buf), 5, buf, 1)     # into the first 5 bytes only
    ring.prep_send(client.fileno(), b"late data"[:7], 2)     # (bytes of their own: pinned by the ring alone)
    return b"late " + bytes(11), {1: 5, 2: 7}


@pytest.mark.parametrize("queue", [_recv_and_sendmsg, _recv_at_and_send_bytes])
def test_buffers_survive_dropped_references(ring, tcp_pair, queue):
    client, server = tcp_pair
    buf = _Buffer(16)
    alive = weakref.ref(buf)
    filled, results = queue(ring, client, server, buf)
    del buf
    gc.collect()
    assert alive() is not None
    ring.submit_and_wait(2, 5.0)                # completed, not yet reaped: still pinned
    gc.collect()
    assert alive() == filled
    assert wait_all(ring, 1, 2) == results
    gc.collect()
    assert alive() is None                      # reaping released the pin


def test_a_receive_in_parts_fills_the_head_the_body_then_the_tail_in_one_completion(ring, tcp_pair):
    client, server = tcp_pair
    head, body, tail = bytearray(4), bytearray(8), bytearray(6)
    client.sendall(b"0123456789abcdefghij")
    ring.prep_recv_parts(server.fileno(), memoryview(head), memoryview(body), tail, 1)
    assert wait_all(ring, 1) == {1: 18}
    assert head == b"0123" and body == b"456789ab" and tail == b"cdefgh"
    ring.prep_recv_parts(server.fileno(), head, body, bytearray(), 2)     # no tail: head and body only
    assert wait_all(ring, 2) == {2: 2} and head == b"ij23"
    ring.prep_recv_parts(server.fileno(), head, body, tail, 3)     # waits for data; stops at what one send brought
    client.sendall(b"xyz")
    assert wait_all(ring, 3) == {3: 3} and head == b"xyz3"


@pytest.mark.parametrize("busy_poll_us", [0, 1_000_000])
def test_other_threads_run_while_a_turn_waits_or_spins(busy_poll_us):
    """The ring's C calls keep the GIL, but for its waits: another thread ticks all through a turn that waits (or
    spins, here for a second, then waits) with nothing to reap, as it could not if the turn held the GIL."""
    ticks: list[int] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.01):
            ticks.append(1)
    with Ring(32, busy_poll_us=busy_poll_us) as ring:
        ticker = threading.Thread(target=tick)
        ticker.start()
        try:
            before = len(ticks)
            assert ring.turn(True, 1.0) == []
            during = len(ticks) - before
        finally:
            stop.set()
            ticker.join()
    assert during >= 10         # about 100 a second with the GIL let go; none, or one, with it held


def test_large_user_data_round_trips(ring):
    ring.prep_nop(2**63 - 1)
    assert wait_all(ring, 2**63 - 1) == {2**63 - 1: 0}


def test_close_cancels_pending_ops(tcp_pair):
    _, server = tcp_pair
    ring = Ring(8)
    ring.prep_recv(server.fileno(), bytearray(16), 1)
    ring.prep_timeout(60, 2)
    ring.submit()
    ring.close()
    ring.close()                                # idempotent


def test_constants_exported():
    assert ioring.RWF_DSYNC == os.RWF_DSYNC and ioring.RWF_NOWAIT == os.RWF_NOWAIT
    assert ioring.RWF_HIPRI == os.RWF_HIPRI
    assert (ioring.FALLOC_FL_KEEP_SIZE, ioring.FALLOC_FL_PUNCH_HOLE, ioring.FALLOC_FL_ZERO_RANGE) == (1, 2, 16)


def test_busy_polling_turns_reap_socket_file_and_timeout_alike(tcp_pair, fd):
    """With busy_poll_us a turn spins before it sleeps: socket completions (task work run by the spin),
    file ops (a longer spin while one is in flight) and a wait that times out all behave as without it."""
    client, server = tcp_pair
    with Ring(32, busy_poll_us=1000) as ring:
        buf = bytearray(5)
        ring.prep_recv(server.fileno(), buf, 1)
        client.sendall(b"hello")
        assert ring.turn(True, 5.0) == [1, 5]
        assert buf == b"hello"
        ring.prep_write(fd, b"abc", 0, 2)
        assert ring.turn(True, 5.0) == [2, 3]
        back = bytearray(3)
        ring.prep_read(fd, back, 0, 3)
        assert ring.turn(True, 5.0) == [3, 3]
        assert back == b"abc"
        assert ring.turn(True, 0.01) == []           # nothing in flight: spin, then the timed wait ends


def test_registered_file_and_buffer_read_and_write(ring, fd):
    slot = ring.register_file(fd)
    buf = bytearray(b"fixed data, ring")
    index = ring.register_buffer(buf)
    assert slot >= 0 and index >= 0
    ring.prep_write(slot, memoryview(buf)[6:], 50, 1, 0, True, index)     # any part of the registered buffer
    assert wait_all(ring, 1) == {1: 10}
    buf[:] = bytes(len(buf))
    ring.prep_read(slot, buf, 44, 2, 0, True, index)
    assert wait_all(ring, 2) == {2: 16}
    assert buf == bytes(6) + b"data, ring"
    ring.unregister_file(slot)
    ring.prep_read(slot, buf, 0, 3, 0, True)            # an emptied slot names no file
    assert wait_all(ring, 3) == {3: -errno.EBADF}
    ring.unregister_buffer(index)


def test_an_emptied_slot_does_not_fail_the_ops_queued_on_it(ring, fd):
    os.pwrite(fd, b"queued read, 16b", 0)
    slot = ring.register_file(fd)
    buf = bytearray(16)
    index = ring.register_buffer(buf)
    first = bytearray(6)
    ring.prep_read(fd, first, 0, 1)                 # a quiet ring's one file op goes at once; the next one waits
    ring.prep_read(slot, buf, 0, 2, 0, True, index)
    ring.unregister_buffer(index)
    ring.unregister_file(slot)
    assert ring.register_buffer(bytearray(16)) == index     # the slot is another buffer's now
    assert wait_all(ring, 1, 2) == {1: 6, 2: 16} and buf == b"queued read, 16b"


def test_registered_tables_are_bounded_and_slots_come_back(ring, fd):
    files = [ring.register_file(fd) for _ in range(ioring.ring.FIXED_FILES)]
    assert -1 not in files and ring.register_file(fd) == -1
    ring.unregister_file(files[0])
    assert ring.register_file(fd) == files[0]
    chunk = ioring.ring.FIXED_BYTES // 4
    bufs = [bytearray(chunk) for _ in range(5)]
    slots = [ring.register_buffer(b) for b in bufs[:4]]
    assert -1 not in slots and ring.register_buffer(bufs[4]) == -1      # FIXED_BYTES reached
    ring.unregister_buffer(slots[1])
    assert ring.register_buffer(bufs[4]) >= 0


def test_a_send_linked_to_a_read_carries_what_the_read_filled(ring, fd, tcp_pair):
    client, server = tcp_pair
    os.pwrite(fd, bytes(range(256)) * 16, 0)
    buf = bytearray(b"HEADER:" + bytes(4096))           # a header in front, the read fills the rest
    ring.prep_read_send(fd, memoryview(buf)[7:], 0, 1, False, -1, server.fileno(), buf, 2, socket.MSG_NOSIGNAL)
    assert wait_all(ring, 1, 2) == {1: 4096, 2: 7 + 4096}
    received = b""
    while len(received) < 7 + 4096:
        received += client.recv(8192)
    assert received == b"HEADER:" + bytes(range(256)) * 16


@pytest.mark.parametrize("entries_queued", [0, 7])      # 7 of 8 SQEs taken: the pair goes in the next submission
def test_a_short_read_cancels_its_linked_send(fd, tcp_pair, entries_queued):
    client, server = tcp_pair
    os.pwrite(fd, b"only 20 bytes here..", 0)
    with Ring(8) as ring:
        for i in range(entries_queued):
            ring.prep_nop(100 + i)
        buf = bytearray(4096)
        ring.prep_read_send(fd, buf, 0, 1, False, -1, server.fileno(), buf, 2, socket.MSG_NOSIGNAL)
        done = wait_all(ring, 1, 2, *range(100, 100 + entries_queued))
    assert done[1] == 20 and done[2] == -errno.ECANCELED
    client.setblocking(False)
    with pytest.raises(BlockingIOError):                # the send never ran: nothing was sent, ever
        client.recv(1)


def test_a_failed_read_cancels_its_linked_send(ring, tcp_pair):
    client, server = tcp_pair
    buf = bytearray(512)
    ring.prep_read_send(987, buf, 0, 1, False, -1, server.fileno(), buf, 2, socket.MSG_NOSIGNAL)
    assert wait_all(ring, 1, 2) == {1: -errno.EBADF, 2: -errno.ECANCELED}


def test_a_read_and_its_linked_send_count_as_one_completion_for_busy_polling(fd, tcp_pair):
    """QD1 on a file LUN: the read's and its send's completions come in one turn, and the next turn still spins
    (as after a lone completion) instead of sleeping until the next command."""
    client, server = tcp_pair
    os.pwrite(fd, b"x" * 512, 0)
    with Ring(32, busy_poll_us=1000) as ring:
        buf = bytearray(512)
        ring.prep_read_send(fd, buf, 0, 1, False, -1, server.fileno(), buf, 2, socket.MSG_NOSIGNAL)
        done = []
        while len(done) < 4:
            done += ring.turn(True, 5.0)
        assert sorted(done[::2]) == [1, 2]
        assert ring._quiet                              # white box: what the next waiting turn decides by
        ring.prep_nop(3)
        ring.prep_nop(4)
        while len(done) < 8:
            done += ring.turn(True, 5.0)
        assert not ring._quiet                          # two completions that are not one command's


def reaped_within(ring, count, seconds=2.0):
    """What reap() (which never submits) finds of the ops already submitted, once `count` came or in `seconds`;
    a moment longer past `count`, for any that should not be there."""
    got, deadline = {}, time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        got.update(ring.reap())
        time.sleep(0.005)
    time.sleep(0.05)
    got.update(ring.reap())
    return got


def test_file_ops_go_to_the_kernel_in_groups_as_they_are_queued(ring, fd):
    """Past a quiet ring's first file op, every fourth queued read and every sixteenth write is submitted with
    those before it, mid-turn: reap() (which never submits) finds their completions. The rest wait for the turn."""
    for n in range(18):
        ring.prep_write(fd, bytes([n % 5]) * 16, 16 * (n % 5), n)  # the first at once (quiet ring), 1-16 as a group,
    assert reaped_within(ring, 17) == {n: 16 for n in range(17)}    # 17 waits for the turn
    assert wait_all(ring, 17) == {17: 16}
    bufs = [bytearray(16) for _ in range(6)]
    for n in range(6):
        ring.prep_read(fd, bufs[n], 16 * (n % 5), 10 + n)   # 10 at once, 11-14 as a group, 15 waits for the turn
    assert reaped_within(ring, 5) == {n: 16 for n in range(10, 15)}
    assert wait_all(ring, 15) == {15: 16}
    assert all(buf == bytes([n % 5]) * 16 for n, buf in enumerate(bufs))


def test_reads_and_big_writes_weigh_four_small_writes_one(ring, fd):
    """A group is sixteen small writes' worth: a read or a write of more than 16 KiB counts four. Past the quiet
    ring's first op, two reads, a 32 KiB write and four small writes fill one; the next small write waits."""
    os.pwrite(fd, bytes(64), 0)                             # what the reads read
    bufs = [bytearray(16) for _ in range(2)]
    ring.prep_write(fd, b"x" * 16, 4096, 0)                 # at once (quiet ring)
    ring.prep_read(fd, bufs[0], 0, 1)                       # 4
    ring.prep_write(fd, bytes(32768), 8192, 2)              # 8
    ring.prep_read(fd, bufs[1], 16, 3)                      # 12
    for n in range(4, 9):
        ring.prep_write(fd, b"y" * 16, 4096 + 16 * n, n)    # 13, 14, 15, 16 (the group goes), then 8 waits
    assert reaped_within(ring, 8) == {0: 16, 1: 16, 2: 32768, 3: 16, 4: 16, 5: 16, 6: 16, 7: 16}
    assert wait_all(ring, 8) == {8: 16}
