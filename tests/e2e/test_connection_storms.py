"""Connection storms against one worker: thousands of TCP connections that never log in, and a flood that
exhausts the worker's file descriptors. Real logins still get through, a verified fio session on the same
worker does not notice, the worker's memory stays bounded and comes back afterwards, and the log says what
happened in a bounded number of lines. `serve` started under a low soft RLIMIT_NOFILE raises it."""
import os
import resource
import signal
import socket
import threading
import time
from contextlib import ExitStack, contextmanager

import procfs
from harness import HOST, FioRun, Lun, poll, run, session, tool, write_fio_job

import initiator as I
from coordinator.lograte import DEFAULT_INTERVAL

STORM_SOURCES = [f"127.0.1.{a}" for a in range(1, 51)] + [HOST]     # our own address too: real logins share it
PER_SOURCE = 60             # idle connections from each: 3060 in all
PRELOGIN_CAP = 256          # [server] max_prelogin_connections by default
RSS_STORM_BOUND = 64 << 20  # worker RSS above its figure before the storm, while the storm is held …
RSS_AFTER_BOUND = 16 << 20  # … and once the storm's connections are gone
BIG_CAP = 3000              # a pre-login cap an operator raised: the storm takes tens of MB
LUNS = 96                   # descriptors each in every worker: a soft limit of 64 is too low to start
HEADROOM = 40               # descriptors a worker has left once its limit is lowered …
FLOOD = 120                 # … for this many connections
FLOOD_ADDRESSES = 10


@contextmanager
def open_files_limit_raised():
    """This test process's RLIMIT_NOFILE soft limit at its hard limit (thousands of sockets), restored after."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (old[1], old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def open_idle(port: int, count: int, source: str | None, held: list) -> None:
    """`count` TCP connections to the portal that send nothing, appended to `held`."""
    for _ in range(count):
        sock = socket.socket()
        if source is not None:
            sock.bind((source, 0))
        held.append(sock)
        sock.connect((HOST, port))


def close_all(socks: list) -> None:
    for sock in socks:
        sock.close()
    socks.clear()


def log_lines(tgt, text: str) -> int:
    return sum(text in line for line in tgt.stderr().splitlines())


def lines_allowed(seconds: float, reasons: int) -> int:
    """What rate-limited logging may print in `seconds`: a line per reason and RateLimitedLog interval."""
    return reasons * (int(seconds // DEFAULT_INTERVAL) + 1)


def real_login(tgt, name: str) -> None:
    """A whole session: login, a TEST UNIT READY, logout."""
    with session(tgt, name) as ini:
        assert ini.scsi(bytes(6)).status == I.GOOD
        ini.logout()


def test_idle_connections_before_login_are_bounded_and_real_logins_get_through(ringtgt, tmp_path):
    tgt = ringtgt(workers=1, luns=[Lun(0, "64MiB")], server_extra="login_timeout = 120")
    worker = tgt.workers[0]
    job = write_fio_job(tmp_path / "verified.fio", tgt.url(0), rw="randwrite", bs="4k", iodepth=8, size="32MiB",
                        time_based=1, runtime=600, verify="crc32c", verify_backlog=512, verify_fatal=1,
                        initiator="iqn.2026-11.org.ringtgt:storm-fio")
    idle: list[socket.socket] = []
    with open_files_limit_raised(), ExitStack() as cleanup, FioRun(job, tmp_path / "fio.out") as fio:
        cleanup.callback(close_all, idle)
        poll(lambda: "session of iqn.2026-11.org.ringtgt:storm-fio" in tgt.stderr(), timeout=30,
             what="fio's session")
        rss_before = procfs.rss_bytes(worker)
        started = time.monotonic()

        rss_peak = rss_before
        logins = 0
        storm = threading.Thread(target=lambda: [open_idle(tgt.port, PER_SOURCE, source, idle)
                                                 for source in STORM_SOURCES])
        storm.start()
        try:
            while storm.is_alive():                              # real logins while the storm goes on …
                real_login(tgt, f"iqn.2026-11.org.ringtgt:storm-{logins}")
                logins += 1
                rss_peak = max(rss_peak, procfs.rss_bytes(worker))
        finally:
            storm.join()
        real_login(tgt, "iqn.2026-11.org.ringtgt:storm-held")   # … and with all of it held
        run([tool("iscsi-inq"), "-i", "iqn.2026-11.org.ringtgt:storm-inq", tgt.url(0)])
        rss_peak = max(rss_peak, procfs.rss_bytes(worker))
        held = poll(lambda: len(tgt.connections_per_worker()[worker]) <= PRELOGIN_CAP + 1 and
                    len(tgt.connections_per_worker()[worker]), timeout=30,
                    what=f"the worker to hold at most {PRELOGIN_CAP} idle connections beside fio's")

        close_all(idle)
        poll(lambda: len(tgt.connections_per_worker()[worker]) == 1, timeout=60,
             what="the storm's connections to be gone (fio's session left)")
        rss_after = poll(lambda: procfs.rss_bytes(worker) - rss_before <= RSS_AFTER_BOUND and
                         procfs.rss_bytes(worker), timeout=30, what="the worker's memory to come back")
        elapsed = time.monotonic() - started
        assert fio.proc.poll() is None, f"fio stopped during the storm:\n{fio.text()}"
        fio.proc.send_signal(signal.SIGINT)                     # fio ends its run and reports
        status = fio.wait(timeout=120)

    text = fio.text()
    evictions = log_lines(tgt, "before login")
    print(f"idle storm: {len(STORM_SOURCES) * PER_SOURCE} connections from {len(STORM_SOURCES)} addresses, "
          f"{logins} logins during it, connections the worker held after it {held}; worker RSS before "
          f"{rss_before / 2**20:.1f} MiB, peak {rss_peak / 2**20:.1f} MiB, after {rss_after / 2**20:.1f} MiB; "
          f"{evictions} log lines about connections before login in {elapsed:.1f} s; fio exit {status}, "
          f"{next((line.strip() for line in text.splitlines() if 'err=' in line), 'no err= line')}")
    assert status in (0, 128) and "err= 0" in text, f"fio exit {status}:\n{text}"
    assert rss_peak - rss_before <= RSS_STORM_BOUND, (rss_before, rss_peak)
    assert 1 <= evictions <= lines_allowed(elapsed, reasons=2), tgt.stderr()[-4000:]
    assert "Traceback" not in tgt.stderr(), tgt.stderr()


def test_the_memory_a_storm_took_goes_back(ringtgt):
    tgt = ringtgt(workers=1, server_extra=f"max_prelogin_connections = {BIG_CAP}\nmax_prelogin_per_address = "
                                          f"{BIG_CAP}\nlogin_timeout = 120")
    worker = tgt.workers[0]
    idle: list[socket.socket] = []
    with open_files_limit_raised(), ExitStack() as cleanup:
        cleanup.callback(close_all, idle)
        rss_before = procfs.rss_bytes(worker)
        open_idle(tgt.port, BIG_CAP, None, idle)
        poll(lambda: len(tgt.connections_per_worker()[worker]) == BIG_CAP, timeout=60,
             what=f"the worker to hold {BIG_CAP} connections")
        rss_storm = procfs.rss_bytes(worker)
        close_all(idle)
        poll(lambda: not tgt.connections_per_worker()[worker], timeout=60, what="the connections to be gone")
    took = rss_storm - rss_before
    assert took >= 16 << 20, f"the storm took too little memory to tell anything: {took} bytes"
    try:
        poll(lambda: procfs.rss_bytes(worker) - rss_before <= took // 3, timeout=30,
             what="the worker to give back two thirds of the memory the storm took")
    finally:
        rss_after = procfs.rss_bytes(worker)
        print(f"{BIG_CAP} idle connections held: worker RSS before {rss_before / 2**20:.1f} MiB, "
              f"with them {rss_storm / 2**20:.1f} MiB, after {rss_after / 2**20:.1f} MiB")
    real_login(tgt, "iqn.2026-11.org.ringtgt:after-storm")


def many_luns() -> list[Lun]:
    return [Lun(i, "1MiB") for i in range(LUNS)]


def test_serve_raises_its_open_files_limit_to_the_hard_limit(ringtgt):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    tgt = ringtgt(workers=1, luns=many_luns(), open_files=(64, hard))
    for pid in (tgt.proc.pid, *tgt.workers):
        assert procfs.open_files_limit(pid) == (hard, hard), pid
    lines = log_lines(tgt, "open files limit")
    print(f"serve under a soft limit of 64: limit now {procfs.open_files_limit(tgt.workers[0])}, {lines} log line(s)")
    assert lines == 1, tgt.stderr()
    real_login(tgt, "iqn.2026-11.org.ringtgt:nofile")


def test_running_out_of_descriptors_backs_off_quietly_and_serves_on(ringtgt):
    tgt = ringtgt(workers=1)
    worker = tgt.workers[0]
    limit = len(os.listdir(f"/proc/{worker}/fd")) + HEADROOM
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, limit))        # hard too: no way to raise it
    flood: list[socket.socket] = []
    started = time.monotonic()
    try:
        for address in range(1, FLOOD_ADDRESSES + 1):         # below the per-address cap: descriptors run out
            open_idle(tgt.port, FLOOD // FLOOD_ADDRESSES, f"127.0.2.{address}", flood)
        poll(lambda: log_lines(tgt, "Too many open files"), timeout=30, what="the worker to run out of descriptors")
        real_login(tgt, "iqn.2026-11.org.ringtgt:during-flood")   # room made by dropping idle connections
        lines = log_lines(tgt, "Too many open files")
        total = len(tgt.stderr().splitlines())
        elapsed = time.monotonic() - started
    finally:
        close_all(flood)
    real_login(tgt, "iqn.2026-11.org.ringtgt:after-flood")
    print(f"descriptor flood: {FLOOD} connections, worker RLIMIT_NOFILE {limit}: {lines} line(s) about it in "
          f"{elapsed:.1f} s, {total} log lines in all")
    assert procfs.alive(worker) and tgt.listening_children() == [worker]
    # the reasons, each rate-limited on its own: the accept that failed, the idle connection dropped, and the image
    # watcher's check of the LUN's file when one falls within the flood (every few seconds: in some runs, not others)
    assert lines <= lines_allowed(elapsed, reasons=3), tgt.stderr()[-4000:]
    assert total < 100, tgt.stderr()[-4000:]                 # the whole log, startup and sessions included
