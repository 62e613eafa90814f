"""A worker killed with SIGKILL in the middle of writes to a write-through LUN (`write_cache = false`): every
write it acknowledged is in the backing file afterwards, read with O_DIRECT; the supervisor starts a new worker
and the target serves again. Four sessions write numbered blocks while one of their workers is killed."""
import mmap
import os
import signal
import struct
import threading

import initiator as I
from harness import HOST, Lun, assert_workers_serve, poll, worker_of

BS = 512
CHUNK = 8                       # blocks per write
WRITERS = 4
REGION = 4096                   # blocks per writer
KILL_AFTER = 100                # acknowledged writes of the victim's session before its worker dies


def pattern(writer: int, lba: int) -> bytes:
    return struct.pack(">IQ", writer, lba).ljust(BS, bytes([writer + 1]))


class Writer(threading.Thread):
    """Sequential writes of CHUNK numbered blocks; `acked` holds the LBAs of every write answered GOOD."""

    def __init__(self, tgt, index: int):
        super().__init__(daemon=True)
        self.index = index
        self.ini = I.Initiator.connect(HOST, tgt.port)
        self.ini.login(tgt.iqn, initiator_name=f"iqn.2026-11.org.ringtgt:durable{index}")
        self.ini.clear_unit_attentions()
        self.acked: list[int] = []
        self.stop = threading.Event()

    def run(self):
        first = self.index * REGION
        try:
            for lba in range(first, first + REGION, CHUNK):
                if self.stop.is_set():
                    return
                data = b"".join(pattern(self.index, lba + i) for i in range(CHUNK))
                if self.ini.write(lba, data, block_size=BS).status == I.GOOD:
                    self.acked.append(lba)
        except (I.ConnectionClosed, I.ProtocolError, OSError):
            return                                          # its worker died: what it acknowledged must be there


def read_direct(path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, length)                         # page-aligned, as O_DIRECT wants
        os.preadv(fd, [buf], offset)
        return bytes(buf)
    finally:
        os.close(fd)


def test_acknowledged_writes_survive_a_killed_worker(ringtgt):
    tgt = ringtgt(luns=[Lun(0, f"{WRITERS * REGION * BS >> 20}MiB", BS)], lun_extra="write_cache = false")
    writers = [Writer(tgt, i) for i in range(WRITERS)]
    victim = worker_of(tgt, writers[0].ini.sock)
    for writer in writers:
        writer.start()
    poll(lambda: len(writers[0].acked) >= KILL_AFTER, timeout=60, what=f"{KILL_AFTER} acknowledged writes")
    os.kill(victim, signal.SIGKILL)
    writers[0].join(30)
    assert not writers[0].is_alive(), "the killed worker's session still writes"
    for writer in writers[1:]:
        writer.stop.set()
        writer.join(60)
    checked = 0
    for writer in writers:
        for lba in writer.acked:
            expected = b"".join(pattern(writer.index, lba + i) for i in range(CHUNK))
            assert read_direct(tgt.lun_path(0), lba * BS, CHUNK * BS) == expected, \
                f"acknowledged write at LBA {lba} (writer {writer.index}) is not in the file"
            checked += 1
    print(f"{checked} acknowledged writes checked after SIGKILL of worker {victim}")
    poll(lambda: len(tgt.listening_children()) == len(tgt.workers), timeout=30, what="the worker restarted")
    assert victim not in tgt.listening_children()
    tgt.workers = sorted(tgt.listening_children())
    assert_workers_serve(tgt, "iqn.2026-11.org.ringtgt:after-kill")
    for writer in writers:
        writer.ini.close()
