"""Load: 256 sessions held at once with I/O on every one of them; 1,500 login/logout cycles after which the
workers and the coordinator hold no more file descriptors and (within a small allowance for the allocator)
no more memory than before."""
import os

import initiator as I
from harness import HOST, Lun, poll
from procfs import rss_bytes

SESSIONS = 256
CYCLES = 1500
WARM_UP = CYCLES                # as many cycles first, so the allocator has seen the same peak: each login
                                # keeps two 5 s timers (coordinator waits) alive for a while after it
RSS_ALLOWANCE = 6 << 20         # bytes a process may grow by over the cycles: a leak of 4 KiB per cycle (a
                                # connection's buffers or objects) shows; the allocator alone moves ~2 MiB
BS = 512
TRANSIENT_FDS = 2               # descriptors a process may hold for a moment at any time (a worker's once-a-second
                                # image check opens the image): a leak of one per 100 cycles still shows


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_256_sessions_with_io_on_each(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "64MiB", BS)])
    sessions = []
    try:
        for i in range(SESSIONS):
            ini = I.Initiator.connect(HOST, tgt.port)
            sessions.append(ini)
            ini.login(tgt.iqn, initiator_name=f"iqn.2026-11.org.ringtgt:load{i}")
            ini.clear_unit_attentions()
        for round_ in range(2):
            for i, ini in enumerate(sessions):
                data = bytes([i % 256, round_]) * (4 * BS // 2)
                assert ini.write(i * 4, data, block_size=BS).status == I.GOOD
        for i, ini in enumerate(sessions):
            result = ini.read(i * 4, 4, block_size=BS)
            assert result.status == I.GOOD and result.data == bytes([i % 256, 1]) * (4 * BS // 2), f"session {i}"
        established = sum(len(inodes) for inodes in tgt.connections_per_worker().values())
        assert established == SESSIONS
    finally:
        for ini in sessions:
            ini.close()


def test_login_logout_cycles_leave_nothing_behind(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "16MiB", BS)])
    processes = [*tgt.workers, tgt.coordinator()]

    def cycle(n: int) -> None:
        with I.Initiator.connect(HOST, tgt.port) as ini:
            ini.login(tgt.iqn, initiator_name=f"iqn.2026-11.org.ringtgt:cycle{n % 7}")
            ini.logout()

    def settled() -> dict[int, int]:
        poll(lambda: not any(tgt.connections_per_worker().values()), timeout=30, what="every connection closed")
        return {pid: open_fds(pid) for pid in processes}

    for n in range(WARM_UP):
        cycle(n)
    fds, memory = settled(), {pid: rss_bytes(pid) for pid in processes}
    for n in range(CYCLES):
        cycle(n)
    last = [fds]

    def back() -> bool:
        last[0] = settled()
        return all(last[0][pid] <= fds[pid] + TRANSIENT_FDS for pid in processes)
    try:
        poll(back, timeout=30, what=f"file descriptors back to {fds} (within {TRANSIENT_FDS})")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; last {last[0]}") from None
    grown = {pid: rss_bytes(pid) - memory[pid] for pid in processes}
    print(f"after {CYCLES} login/logout cycles: fds {fds}, RSS growth {grown}")
    assert all(growth < RSS_ALLOWANCE for growth in grown.values()), grown
