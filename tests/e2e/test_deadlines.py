"""Deadlines, withdrawal and the watchdog (issue 12, section 5), on a real two-worker `ringtgt serve` whose
coordinator or worker is stopped with SIGSTOP:

- a command that needs the coordinator ends BUSY, and a LUN RESET is answered FUNCTION REJECTED, within the
  request deadline (5 s) however long the coordinator is stopped; the next logins on that worker do not wait;
- a PR OUT REGISTER whose connection closed while the coordinator was stopped is never applied;
- a stopped worker or coordinator is killed and restarted after `hang_timeout`, and the other worker's PR OUTs
  do not wait for the stopped one's acknowledgement each time;
- a worker restarted while the coordinator is stopped answers nothing (not even a login's first step) until the
  coordinator's unit states reach it, and then serves with the reservation in force.

Every bound asserted is several times what the code takes (the deadline is 5 s, the ack wait 3 s), and far
below what the old code took (as long as the coordinator was stopped; 10 s per PR OUT; 5 s per login)."""
import os
import signal
import socket
import struct
import threading
import time
from contextlib import contextmanager

import initiator as I
import procfs
from harness import HOST, connect_to_worker, connections_on_every_worker, poll
from pr_commands import READ_KEYS, REGISTER, RESERVE, WRITE_EXCLUSIVE, conflict, good, lun_reset, prout, read_keys

NAME = "iqn.2026-11.org.ringtgt:deadlines"
BUSY = 0x08
TMF_FUNCTION_REJECTED = 255
DEADLINE_BOUND = 20.0           # seconds: the request deadline is 5 s
NO_WAIT_BOUND = 3.0             # seconds: what takes milliseconds, against the old 5 s per login
QUIET = "hang_timeout = 600"    # the coordinator stays stopped longer than the default 10 s: no watchdog here
TCP_CLOSE_WAIT = 0x08


@contextmanager
def stopped(pid: int):
    """The process stays stopped (SIGSTOP) inside the block; SIGCONT whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def lines(tgt, text: str) -> list[str]:
    return [line for line in tgt.stderr().splitlines() if text in line]


def logged_in(tgt, name: str, wanted=lambda pid: True):
    """(worker pid, a logged-in session on a worker for which wanted(pid) holds, its login's duration)."""
    pid, ini = connect_to_worker(tgt, wanted)
    started = time.monotonic()
    ini.login(tgt.iqn, initiator_name=name)
    return pid, ini, time.monotonic() - started


def test_commands_end_busy_and_lun_reset_is_rejected_while_the_coordinator_is_stopped(ringtgt):
    tgt = ringtgt(workers=2, server_extra=QUIET)
    pid, ini, _ = logged_in(tgt, f"{NAME}-a")
    coordinator = tgt.coordinator()
    with ini:
        ini.clear_unit_attentions()
        good(prout(ini, REGISTER, 0, 0x1))
        with stopped(coordinator):
            result, seconds = timed(prout, ini, REGISTER, 0x1, 0x2)
            print(f"PR OUT with the coordinator stopped: status {result.status:#x} after {seconds:.2f} s")
            assert result.status == BUSY and seconds < DEADLINE_BOUND, (result, seconds)
            response, seconds = timed(lun_reset, ini)
            print(f"LUN RESET with the coordinator stopped: response {response} after {seconds:.2f} s")
            assert response == TMF_FUNCTION_REJECTED and seconds < DEADLINE_BOUND, (response, seconds)
            for index in range(2):          # the worker knows the coordinator does not answer: no wait
                _, later, seconds = logged_in(tgt, f"{NAME}-later{index}", lambda p: p == pid)
                later.close()
                print(f"login {index} on the same worker with the coordinator stopped: {seconds:.2f} s")
                assert seconds < NO_WAIT_BOUND, seconds
        expired = lines(tgt, "no answer from the coordinator to pr.request within 5 s")
        assert expired and lines(tgt, "no answer from the coordinator to unit.reset within 5 s"), tgt.stderr()
        print(f"log lines on expiry: {len(expired)} for pr.request")
        assert read_keys(ini) == [0x1]      # the REGISTER answered BUSY was dropped unapplied, key 0x2 unknown
        assert lines(tgt, "dropped pr.request"), tgt.stderr()


def test_a_closed_connections_register_is_withdrawn_not_applied_later(ringtgt):
    tgt = ringtgt(workers=2, server_extra=QUIET)
    pid, gone, _ = logged_in(tgt, f"{NAME}-gone")
    gone.clear_unit_attentions()
    coordinator = tgt.coordinator()
    client_port = gone.sock.getsockname()[1]
    outcome = []
    with stopped(coordinator):
        sender = threading.Thread(target=lambda: outcome.append(_try(prout, gone, REGISTER, 0, 0x7)))
        sender.start()
        time.sleep(1.0)                     # the worker has passed the PR OUT on to the (stopped) coordinator
        gone.sock.shutdown(socket.SHUT_RDWR)
        sender.join(30)
        poll(lambda: not _held(tgt, pid, client_port), timeout=10, what="the worker to close the connection")
    gone.close()
    with I.Initiator.connect(HOST, tgt.port) as other:
        other.login(tgt.iqn, initiator_name=f"{NAME}-other")
        other.clear_unit_attentions()
        keys, = poll(lambda: _keys_if_answered(other), timeout=30, what="READ KEYS after SIGCONT")
        print(f"READ KEYS after SIGCONT: {keys}; the closed connection's REGISTER answered {outcome}")
        assert keys == [], keys
    assert lines(tgt, "withdrawn (its connection closed)"), tgt.stderr()


def test_a_stopped_worker_is_killed_and_restarted_and_not_waited_for(ringtgt):
    tgt = ringtgt(workers=2, server_extra="hang_timeout = 3")
    held = connections_on_every_worker(tgt)
    (stuck, a), (serving, b) = held.items()
    for index, ini in enumerate((a, b)):
        ini.login(tgt.iqn, initiator_name=f"{NAME}-{index}")
        ini.clear_unit_attentions()
    with b:
        with stopped(stuck):
            since = time.monotonic()
            for key in (0x11, 0x12, 0x13):
                result, seconds = timed(prout, b, REGISTER, 0 if key == 0x11 else key - 1, key)
                print(f"PR OUT through the other worker while worker {stuck} is stopped: status "
                      f"{result.status:#x} after {seconds:.2f} s")
                assert result.status == I.GOOD and seconds < 8.0, (result, seconds)
            poll(lambda: lines(tgt, f"(pid {stuck}) hung: no heartbeat for 3 s (hang_timeout); killing it"),
                 timeout=30, what="the supervisor to log the hang")
        replacement = poll(lambda: [p for p in tgt.listening_children() if p not in (stuck, serving)], timeout=30,
                           what="a new worker")[0]
        print(f"worker {stuck} stopped, killed as hung, replaced by {replacement} listening "
              f"{time.monotonic() - since:.2f} s after SIGSTOP")
        assert lines(tgt, f"(pid {stuck}) killed by SIGKILL; restarting")
        tgt.workers = [serving, replacement]
        _, again, seconds = logged_in(tgt, f"{NAME}-again", lambda p: p == replacement)
        with again:
            again.clear_unit_attentions()
            assert read_keys(again) == [0x13]
        print(f"login on the new worker: {seconds:.2f} s")
    a.close()


def test_a_stopped_coordinator_is_killed_and_restarted(ringtgt):
    tgt = ringtgt(workers=2, server_extra="hang_timeout = 3")
    old = tgt.coordinator()
    with stopped(old):
        since = time.monotonic()
        new = poll(lambda: (pid := tgt.coordinator()) not in (None, old) and pid, timeout=30,
                   what="the supervisor to replace the stopped coordinator")
        seconds = time.monotonic() - since
    assert lines(tgt, f"coordinator (pid {old}) hung: no heartbeat for 3 s (hang_timeout); killing it")
    print(f"coordinator {old} stopped, killed as hung, replaced by {new} {seconds:.2f} s after SIGSTOP")
    pid, ini, _ = logged_in(tgt, f"{NAME}-after")
    with ini:
        ini.clear_unit_attentions()
        assert poll(lambda: _keys_if_answered(ini), timeout=30, what="the new coordinator to answer") == ([],)


def test_a_restarted_worker_serves_nothing_before_the_unit_states_reach_it(ringtgt):
    """Worker 0, alone, is killed while the coordinator is stopped; its replacement listens but accepts nothing:
    the security step of a login, which the worker answers by itself, gets no answer in NO_WAIT_BOUND (the old code
    answered it at once, and let the login through after the 5 s deadline, with no reservation in force). Once the
    coordinator runs again the same connection logs in and a non-registrant's WRITE gets RESERVATION CONFLICT."""
    tgt = ringtgt(workers=1, server_extra=QUIET)
    with I.Initiator.connect(HOST, tgt.port) as holder:
        holder.login(tgt.iqn, initiator_name=f"{NAME}-holder")
        holder.clear_unit_attentions()
        good(prout(holder, REGISTER, 0, 0x51))
        good(prout(holder, RESERVE, 0x51, pr_type=WRITE_EXCLUSIVE))
    coordinator, (old,) = tgt.coordinator(), tgt.workers
    with stopped(coordinator):
        os.kill(old, signal.SIGKILL)
        new = poll(lambda: [p for p in tgt.listening_children() if p != old], timeout=30,
                   what="the supervisor to restart the worker")[0]
        tgt.workers = [new]
        probe = I.Initiator.connect(HOST, tgt.port)
        security = [("InitiatorName", f"{NAME}-other"), ("SessionType", "Normal"), ("TargetName", tgt.iqn),
                    ("AuthMethod", "None")]
        probe.send_pdu(probe.login_request(security, csg=0, nsg=1, itt=probe.next_itt()))
        probe.sock.settimeout(NO_WAIT_BOUND)
        try:
            answer = probe.recv_pdu()
        except TimeoutError:
            answer = None
        assert answer is None, f"worker {new} answered {answer!r} before the unit states reached it"
        print(f"worker {new}, restarted with the coordinator stopped: no answer to a login in {NO_WAIT_BOUND:g} s")
        poll(lambda: lines(tgt, "no unit states from the coordinator"), timeout=DEADLINE_BOUND,
             what="the worker to log that it waits for the unit states")
    with probe:
        probe.sock.settimeout(30)
        probe.params = dict(I.RFC_DEFAULTS)
        probe.recv_pdu()                    # the security step's answer, now
        probe.tsih = 0
        probe._login_stage([(k, v) for k, v in I.DEFAULT_OPERATIONAL_KEYS.items() if v is not None], 1, 3)
        probe.full_feature = True
        probe.clear_unit_attentions()
        conflict(probe.write(0, bytes(512), block_size=512))
    assert lines(tgt, "unit states applied"), tgt.stderr()


def _try(fn, *args):
    try:
        return fn(*args).status
    except (OSError, I.ConnectionClosed, I.ProtocolError) as exc:
        return type(exc).__name__


def _held(tgt, pid: int, client_port: int) -> bool:
    """Whether worker `pid` still holds the server side of the connection from `client_port` (the worker
    closes it, withdrawing its commands, once it has seen the end of the stream)."""
    server_side = set().union(*(procfs.tcp_sockets(tgt.port, state, remote_port=client_port)
                                for state in (procfs.TCP_ESTABLISHED, TCP_CLOSE_WAIT)))
    return bool(procfs.socket_inodes(pid) & server_side)


def _keys_if_answered(ini):
    """(the registered keys,) once READ KEYS answers GOOD; None while it does not."""
    result = ini.scsi(struct.pack(">BB5xHB", 0x5E, READ_KEYS, 1024, 0), read_length=1024)
    if result.status != I.GOOD:
        return None
    length = struct.unpack_from(">I", result.data, 4)[0]
    return [struct.unpack_from(">Q", result.data, 8 + i)[0] for i in range(0, length, 8)],
