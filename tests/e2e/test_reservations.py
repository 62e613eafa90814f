"""Reservations and unit attentions across the worker processes of a real two-worker `ringtgt serve`: each
test pins one session on each worker (SO_REUSEPORT decides; the harness retries until both are covered), so
every check crosses the coordinator. Plus APTPL across a restart of the whole server."""
import os
import signal
import struct

import initiator as I
from harness import connect_to_worker, connections_on_every_worker, poll
from pr_commands import (APTPL, CLEAR, EXCLUSIVE_ACCESS, PREEMPT, PREEMPT_AND_ABORT, READ_KEYS, REGISTER,
                         REGISTER_AND_IGNORE_EXISTING_KEY, RESERVE, WRITE_EXCLUSIVE, conflict, good, lun_reset, prout,
                         read_keys, reservation, unit_attention)

NAME = "iqn.2026-11.org.ringtgt:pr"


def two_sessions(tgt):
    """(a, b): logged-in sessions of two initiators, on different worker processes."""
    held = list(connections_on_every_worker(tgt).values())
    for index, ini in enumerate(held):
        ini.login(tgt.iqn, initiator_name=f"{NAME}-{index}")
        ini.clear_unit_attentions()
    return held


def test_persistent_reservation_across_workers(ringtgt):
    tgt = ringtgt(workers=2)
    a, b = two_sessions(tgt)
    with a, b:
        block = bytes(512)
        good(prout(a, REGISTER, 0, 0xA))
        good(prout(b, REGISTER, 0, 0xB))
        assert read_keys(b) == [0xA, 0xB]
        good(prout(a, RESERVE, 0xA, pr_type=WRITE_EXCLUSIVE))
        assert reservation(b) == (0xA, WRITE_EXCLUSIVE)
        conflict(b.write(0, block, block_size=512))                  # the other worker knows at once
        good(b.read(0, 1, block_size=512))
        good(a.write(0, block, block_size=512))
        # B takes the reservation over as Exclusive Access; A is told, and loses all access
        good(prout(b, PREEMPT_AND_ABORT, 0xB, 0xA, pr_type=EXCLUSIVE_ACCESS))
        unit_attention(a, 0x2A, 0x05)                                # REGISTRATIONS PREEMPTED
        conflict(a.read(0, 1, block_size=512))
        assert reservation(a) == (0xB, EXCLUSIVE_ACCESS) and read_keys(a) == [0xB]
        good(prout(b, CLEAR, 0xB))
        good(a.read(0, 1, block_size=512))
        assert read_keys(a) == [] and reservation(a) is None


def test_spc2_reservation_and_lun_reset_across_workers(ringtgt):
    tgt = ringtgt(workers=2)
    a, b = two_sessions(tgt)
    with b:
        with a:
            good(a.scsi(bytes([0x16]) + bytes(5)))                   # RESERVE(6)
            conflict(b.scsi(bytes([0x1A, 0, 0x3F, 0, 192, 0]), read_length=192))
            conflict(b.scsi(bytes([0x16]) + bytes(5)))
            assert lun_reset(b) == 0                                 # releases it, tells everyone
            unit_attention(a, 0x29, 0x03)                            # BUS DEVICE RESET FUNCTION OCCURRED
            unit_attention(b, 0x29, 0x03)
            good(b.scsi(bytes([0x16]) + bytes(5)))
            conflict(a.read(0, 1, block_size=512))
        # A's worker sees its connection go: B's RESERVE stays; then B's own nexus loss frees the unit
        good(b.scsi(bytes([0x17]) + bytes(5)))                       # RELEASE(6)
        good(b.scsi(bytes([0x16]) + bytes(5)))
    with connect_to_worker(tgt, lambda pid: True)[1] as c:
        c.login(tgt.iqn, initiator_name=f"{NAME}-2")
        c.clear_unit_attentions()
        poll(lambda: c.scsi(bytes([0x16]) + bytes(5)).status == I.GOOD, timeout=30,
             what="B's SPC-2 reservation to go with its connection")


def test_aptpl_registration_and_reservation_survive_a_restart(ringtgt):
    tgt = ringtgt(workers=2)
    a, b = two_sessions(tgt)
    with a, b:
        good(prout(b, REGISTER, 0, 0x99))
        good(prout(a, REGISTER, 0, 0x1234, flags=APTPL))             # the last REGISTER's APTPL bit rules the unit
        good(prout(a, RESERVE, 0x1234, pr_type=WRITE_EXCLUSIVE))
    tgt.stop()
    tgt.start()
    a, b = two_sessions(tgt)                                          # new ISIDs: new, unregistered nexuses
    with a, b:
        assert sorted(read_keys(b)) == [0x99, 0x1234]
        assert reservation(b) == (0x1234, WRITE_EXCLUSIVE)
        conflict(b.write(0, bytes(512), block_size=512))
        good(prout(b, REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0x77))
        good(prout(b, PREEMPT, 0x77, 0x1234, pr_type=WRITE_EXCLUSIVE))
        good(prout(b, CLEAR, 0x77))
    tgt.stop()
    tgt.start()
    a, b = two_sessions(tgt)
    with a, b:
        assert read_keys(a) == [] and reservation(a) is None


def test_reservations_survive_a_coordinator_restart(ringtgt):
    tgt = ringtgt(workers=2)
    a, b = two_sessions(tgt)
    with a, b:
        good(prout(a, REGISTER, 0, 0x5))                              # no APTPL: live state only
        good(prout(a, RESERVE, 0x5, pr_type=EXCLUSIVE_ACCESS))
        old = tgt.coordinator()
        os.kill(old, signal.SIGKILL)
        poll(lambda: tgt.coordinator() not in (None, old), timeout=30, what="the supervisor to restart the coordinator")
        poll(lambda: b.scsi(struct.pack(">BB5xHB", 0x5E, READ_KEYS, 1024, 0), read_length=1024).status == I.GOOD,
             timeout=30, what="the new coordinator to answer")
        assert read_keys(b) == [0x5] and reservation(b) == (0x5, EXCLUSIVE_ACCESS)
        conflict(b.read(0, 1, block_size=512))
        good(prout(a, CLEAR, 0x5))
        good(b.read(0, 1, block_size=512))


def test_spc2_reservation_goes_with_a_killed_worker(ringtgt):
    tgt = ringtgt(workers=2)
    held = connections_on_every_worker(tgt)
    (pid_a, a), (pid_b, b) = held.items()
    for index, ini in enumerate((a, b)):
        ini.login(tgt.iqn, initiator_name=f"{NAME}-{index}")
        ini.clear_unit_attentions()
    with b:
        good(a.scsi(bytes([0x16]) + bytes(5)))                       # RESERVE(6) through worker A
        conflict(b.read(0, 1, block_size=512))
        os.kill(pid_a, signal.SIGKILL)                               # A's nexus is lost with its worker
        a.close()
        poll(lambda: b.read(0, 1, block_size=512).status == I.GOOD, timeout=30,
             what="worker B to learn that the reservation went with worker A")
