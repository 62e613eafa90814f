"""An RBD LUN's unit state in RADOS (coordinator/rados_store.py) against the one-node Ceph cluster of the session
(tests/conftest.py): versioned writes refuse a writer behind the times, at the object and at the store; an APTPL
registration and reservation made through one `serve` are found by another whose state_dir never saw the LUN; a
PR OUT with APTPL while the cluster does not answer fails with its sense, within the save's deadline."""
import json
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager

import pytest

import initiator as I
from harness import HOST, Lun, log_in, poll, ringtgt_binary, run, session
from pr_commands import (APTPL, CLEAR, PREEMPT, REGISTER, REGISTER_AND_IGNORE_EXISTING_KEY, RESERVE, WRITE_EXCLUSIVE,
                         conflict, good, prout, read_keys, reservation)

from coordinator.rados_store import FORMAT, SAVE_DEADLINE, RadosStateClient, RadosStore
from coordinator.service import CoordinatorService
from coordinator.unit_store import SANITIZE, UNIT, Stale, StoreFailed
from target.backstore.rados import Connection
from target.backstore.rados_objects import StaleObject, read_versioned, write_versioned
from target.backstore.rbd_image import CephClient, RbdImage
from tests.ceph_cluster import POOL

BS = 512
NAME = "iqn.2026-12.org.ringtgt:rados-state"


def logged(tgt, text: str) -> None:
    """`text` is in tgt's log: the coordinator logs its start beside the workers, which the start waits for."""
    poll(lambda: text in tgt.stderr(), timeout=30, what=f"{text!r} in the log")


def client_of(cluster) -> CephClient:
    return CephClient(str(cluster.conf))


def test_a_versioned_object_refuses_a_writer_behind_the_times(ceph_cluster):
    conn = Connection(client_of(ceph_cluster))
    try:
        io = conn.ioctx(POOL)
        oid = "ringtgt.test.versioned"
        assert read_versioned(io, oid) == (0, b"")
        assert write_versioned(io, oid, b"first", 0) == 1               # writer A: the object did not exist
        with pytest.raises(StaleObject):
            write_versioned(io, oid, b"lost", 0)                         # writer B, who saw no object: refused
        assert write_versioned(io, oid, b"second", 1) == 2              # A again
        with pytest.raises(StaleObject):
            write_versioned(io, oid, b"lost", 1)                         # B, who read generation 1: refused
        assert read_versioned(io, oid) == (2, b"second")
        assert write_versioned(io, oid, b"third", 2) == 3               # B once it has read again
        assert read_versioned(io, oid) == (3, b"third")
    finally:
        conn.close()


def run_until(service: CoordinatorService, results: list, deadline: float = 2 * SAVE_DEADLINE) -> object:
    end = time.monotonic() + deadline
    while not results:
        assert time.monotonic() < end, "no answer from the store"
        service.run_once(0.05)
    return results.pop()


def saved(service: CoordinatorService, store: RadosStore, key: str, value, **based_on) -> object:
    results: list = []
    store.save(key, value, results.append, **based_on)
    return run_until(service, results)


def record(nexus: str, key: int) -> dict:
    """A unit record (coordinator/unit_service.py `UnitState.record`) as far as the store cares: its reservations."""
    return {"reservations": {"keys": {nexus: key}}, "greeted": [nexus]}


def refreshed(service: CoordinatorService, store: RadosStore) -> object:
    results: list = []
    store.refresh(results.append)
    return run_until(service, results)


@contextmanager
def two_stores(rbd: RbdImage, tmp_path):
    """Two coordinators' stores of one image, each with its own service (loop) and RADOS thread: [(service, client,
    store)] for "a" and "b"."""
    stores = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            service = CoordinatorService(str(tmp_path / name))
            client = RadosStateClient()
            client.attach(service)
            stores.append((service, client, RadosStore(client, rbd, f"unit of {name}")))
        yield stores
    finally:
        for service, client, _ in stores:
            client.close()
            service.close()


def test_two_coordinators_on_one_unit_state_cannot_clobber_each_other(ceph_cluster, tmp_path):
    """Two stores of one image (two coordinators, their own RADOS threads and loops): A saves; B, which read the
    object before that, is refused with A's state (Stale) and takes it; then B's save works and A's is refused,
    unless the reservations stored are those B's save was based on. A sanitize record is saved on top of the
    other's state instead (it is the unit's own fact). A refresh hands over once what another wrote and this one has
    not taken, even under a write of this one's own (A's sanitize record, made on B's unit)."""
    rbd = RbdImage(POOL, "rados-state-conflict", client_of(ceph_cluster))
    with two_stores(rbd, tmp_path) as stores:
        (sa, _, a), (sb, _, b) = stores
        assert a.load() == (None, None) and b.load() == (None, None)
        state_a = record("x", 1)
        assert saved(sa, a, UNIT, state_a) is None
        refused = saved(sb, b, UNIT, record("y", 2))
        assert refused == Stale(state_a, None) and b.record == state_a
        assert saved(sb, b, UNIT, record("y", 3)) is None                # B has read it: its next save works
        assert isinstance(saved(sa, a, UNIT, record("x", 4)), Stale)
        assert saved(sa, a, UNIT, record("x", 5)) is None               # B is behind again, but has A's state
        assert saved(sb, b, UNIT, record("y", 6), based_on=record("x", 5)["reservations"]) is None   # (the bus)
        assert saved(sa, a, SANITIZE, {"ause": True}) is None            # made again on B's state
        assert RadosStore(stores[0][1], rbd, "a third").load() == (record("y", 6), {"ause": True})
        assert refreshed(sa, a) == {UNIT: record("y", 6)}               # A wrote last, but on B's unit
        assert refreshed(sa, a) is None and a.record == record("y", 6)
        assert refreshed(sb, b) == {SANITIZE: {"ause": True}} and b.sanitize == {"ause": True}   # its unit: B's
        assert refreshed(sb, b) is None                                  # seen once
        assert isinstance(saved(sb, b, UNIT, record("y", 7), based_on={"keys": {"z": 1}}), Stale)   # not what it holds


def test_a_read_answered_after_its_deadline_is_still_news_to_the_next_refresh(ceph_cluster, tmp_path):
    """B's thread is busy (a job of the test's holds it) while A writes and B's refresh waits: the refresh fails at
    its deadline, and its read runs once the thread is free; what it found, never taken by B's loop, is what the
    next refresh hands over (the thread had it already: before, that refresh answered None)."""
    rbd = RbdImage(POOL, "rados-state-late-read", client_of(ceph_cluster))
    gate = threading.Event()
    with two_stores(rbd, tmp_path) as stores:
        (sa, _, a), (sb, client_b, b) = stores
        assert a.load() == (None, None) and b.load() == (None, None)
        try:
            client_b.submit(lambda: gate.wait(30), lambda result: None)
            assert saved(sa, a, UNIT, record("x", 1)) is None
            late = refreshed(sb, b)
            assert isinstance(late, StoreFailed) and "no answer" in str(late), late
            gate.set()
            end = time.monotonic() + 10 * SAVE_DEADLINE
            while b.busy:                                   # the read runs now, its answer dropped by the loop
                assert time.monotonic() < end, "the store's thread did not finish"
                sb.run_once(0.05)
            assert refreshed(sb, b) == {UNIT: record("x", 1)} and b.record == record("x", 1)
            assert refreshed(sb, b) is None
        finally:
            gate.set()


def test_unknown_keys_are_kept_and_a_newer_format_is_refused(ceph_cluster, caplog):
    """An object with a key this ringtgt does not know loads (logged once) and keeps it when written; one of a
    higher format fails its load and every save, naming the object and both formats, and is not written over."""
    client = RadosStateClient()
    conn = Connection(client_of(ceph_cluster))
    try:
        io = conn.ioctx(POOL)
        later = RadosStore(client, RbdImage(POOL, "rados-state-later", client_of(ceph_cluster)), "later")
        write_versioned(io, later.oid, json.dumps({"format": FORMAT, UNIT: record("x", 1), "later": [1]}).encode(), 0)
        assert later.load() == (record("x", 1), None)
        assert later.load() == (record("x", 1), None)
        assert caplog.text.count("keys unknown to this ringtgt (later)") == 1
        results: list = []
        later.save(SANITIZE, {"ause": True}, results.append)            # before the loop: waits for its answer
        assert results == [None]
        assert json.loads(read_versioned(io, later.oid)[1]) == {"format": FORMAT, UNIT: record("x", 1),
                                                                SANITIZE: {"ause": True}, "later": [1]}
        newer = RadosStore(client, RbdImage(POOL, "rados-state-newer", client_of(ceph_cluster)), "newer")
        content = json.dumps({"format": FORMAT + 1, UNIT: record("x", 1)}).encode()
        write_versioned(io, newer.oid, content, 0)
        with pytest.raises(StoreFailed, match=f"format {FORMAT + 1} .*format {FORMAT} at most") as failed:
            newer.load()
        print(f"load of a newer format: {failed.value}")
        assert newer.oid in str(failed.value)
        newer.save(UNIT, record("y", 2), results.append)
        assert isinstance(results[-1], StoreFailed) and read_versioned(io, newer.oid) == (1, content)
    finally:
        conn.close()
        client.close()


def test_a_store_without_a_cluster_fails_within_its_deadline(tmp_path):
    """A ceph.conf naming a monitor no one runs: the save fails (StoreFailed) after SAVE_DEADLINE, not after the
    librados connect's own timeout, and the loop never blocks meanwhile."""
    (tmp_path / "ceph.conf").write_text("[global]\nmon host = 127.0.0.1:9\nauth_client_required = none\n")
    service = CoordinatorService(str(tmp_path))
    client = RadosStateClient()
    client.attach(service)
    try:
        store = RadosStore(client, RbdImage(POOL, "nowhere", CephClient(str(tmp_path / "ceph.conf"))), "a unit")
        started = time.monotonic()
        results: list = []
        store.save(UNIT, record("x", 1), results.append)
        result = run_until(service, results, deadline=10 * SAVE_DEADLINE)
        assert isinstance(result, StoreFailed) and "no answer" in str(result), result
        assert time.monotonic() - started < 2 * SAVE_DEADLINE
    finally:
        client.close()
        service.close()


def test_aptpl_state_is_found_by_a_serve_that_never_saw_the_lun(ringtgt, ceph_cluster):
    """Node A registers two initiators and reserves, with APTPL, then stops and loses its state_dir; node B, a
    `serve` of its own on the same image, reports the registrations and the reservation, and refuses the
    non-holder's write (RESERVATION CONFLICT)."""
    ceph_cluster.create_image("pr-state", 16 << 20)
    lun = Lun(0, "", BS, store=ceph_cluster.lun_keys("pr-state"))
    a = ringtgt(luns=[lun], workers=2)
    with session(a, f"{NAME}-holder") as holder, session(a, f"{NAME}-other") as other:
        good(prout(other, REGISTER, 0, 0x99))
        good(prout(holder, REGISTER, 0, 0x1234, flags=APTPL))
        good(prout(holder, RESERVE, 0x1234, pr_type=WRITE_EXCLUSIVE))
    a.stop()
    shutil.rmtree(a.dir / "state")
    b = ringtgt(luns=[lun], workers=2)
    assert not (b.dir / "state" / "reservations" / f"{b.iqn}-0.json").exists()
    with session(b, f"{NAME}-other") as other:
        assert sorted(read_keys(other)) == [0x99, 0x1234]
        assert reservation(other) == (0x1234, WRITE_EXCLUSIVE)
        conflict(other.write(0, bytes(BS), block_size=BS))
        good(other.read(0, 1, block_size=BS))



CACHING, WCE = 0x08, 0x04
POWER_ON, REGISTRATIONS_PREEMPTED = (0x29, 0x00), (0x2A, 0x05)


def write_cache(ini) -> bool:
    result = good(ini.scsi(bytes([0x1A, 0x08, CACHING, 0, 255, 0]), read_length=255))      # MODE SENSE, DBD
    return bool(result.data[4 + 2] & WCE)


def first_attention(ini) -> tuple[int, int] | None:
    """What the nexus's first TEST UNIT READY answers: the (asc, ascq) of a unit attention, or None (GOOD)."""
    result = ini.scsi(bytes(6))
    if result.status == I.CHECK_CONDITION and result.sense.key == I.UNIT_ATTENTION:
        return result.sense.asc, result.sense.ascq
    good(result)
    return None


def stored_record(cluster, image: str) -> dict:
    conn = Connection(client_of(cluster))
    try:
        generation, payload = read_versioned(conn.ioctx(POOL), f"ringtgt.unit.{image}")
    finally:
        conn.close()
    return json.loads(payload).get("unit") or {} if generation else {}


def test_the_whole_unit_state_is_found_by_a_serve_that_never_saw_the_lun(ringtgt, ceph_cluster):
    """Through node A, without APTPL: WCE turned off by MODE SELECT, P registers and reserves, H registers and
    preempts P (P: REGISTRATIONS PREEMPTED pending), G is told of the power-on and logs out. A dies (SIGKILL) and its
    state_dir goes; node B, a `serve` of its own with no bus to A, serves the image with all of it: P's nexus gets
    its pending unit attention (no POWER ON), H's reservation is in force (PR IN shows it, P's write conflicts), G
    starts with nothing pending, WCE is off; only an initiator new to the unit hears of a power-on."""
    image = "unit-state"
    ceph_cluster.create_image(image, 16 << 20)
    lun = Lun(0, "", BS, store=ceph_cluster.lun_keys(image))
    h_name, p_name, g_name = (f"{NAME}-{who}" for who in ("h", "p", "g"))
    a = ringtgt(luns=[lun], workers=2)
    with session(a, h_name) as h:
        assert write_cache(h)
        good(h.scsi(bytes([0x15, 0x10, 0, 0, 24, 0]), data_out=bytes(4) + bytes([CACHING, 0x12]) + bytes(18)))
        with session(a, p_name) as p:
            good(prout(p, REGISTER, 0, 0xB))
            good(prout(p, RESERVE, 0xB, pr_type=WRITE_EXCLUSIVE))
            good(prout(h, REGISTER, 0, 0xA))
            good(prout(h, PREEMPT, 0xA, 0xB, pr_type=WRITE_EXCLUSIVE))
            p_isid = p.isid
            with session(a, g_name):
                pass
            # the facts a command's answer does not promise are written behind: wait for them to land
            poll(lambda: g_name in stored_record(ceph_cluster, image).get("greeted", []), timeout=10,
                 what="the record written behind")
            a.kill()                                                        # no clean stop, no bus
    shutil.rmtree(a.dir / "state")
    record = stored_record(ceph_cluster, image)
    print(f"the unit's record in RADOS: {json.dumps(record)}")
    assert record["mode"] == [False, False] and sorted(record["greeted"]) == sorted([h_name, p_name, g_name])

    b = ringtgt(luns=[lun], workers=2)
    with log_in(b, p_name, p_isid) as p:
        assert first_attention(p) == REGISTRATIONS_PREEMPTED                # not POWER ON
        assert first_attention(p) is None
        assert read_keys(p) == [0xA] and reservation(p) == (0xA, WRITE_EXCLUSIVE)
        conflict(p.write(0, bytes(BS), block_size=BS))
        assert not write_cache(p)
    with log_in(b, g_name) as g:
        assert first_attention(g) is None
    with log_in(b, f"{NAME}-new") as new:
        assert first_attention(new) == POWER_ON


def test_a_running_serve_takes_what_another_left_when_an_initiator_logs_in(ringtgt, ceph_cluster):
    """Nodes A and B both serve the image, with no bus between them (B started first, and read an empty state).
    Through A, without APTPL: H registers and reserves, P registers and is preempted. A dies; P's login to B reads
    the object again: P gets REGISTRATIONS PREEMPTED (not POWER ON), and H's reservation is in force there."""
    image = "unit-state-running"
    ceph_cluster.create_image(image, 16 << 20)
    lun = Lun(0, "", BS, store=ceph_cluster.lun_keys(image))
    b = ringtgt(luns=[lun], workers=1)
    a = ringtgt(luns=[lun], workers=1)
    h_name, p_name = f"{NAME}-running-h", f"{NAME}-running-p"
    with session(a, h_name) as h, session(a, p_name) as p:
        good(prout(h, REGISTER, 0, 0xA))
        good(prout(h, RESERVE, 0xA, pr_type=WRITE_EXCLUSIVE))
        good(prout(p, REGISTER, 0, 0xB))
        good(prout(h, PREEMPT, 0xA, 0xB, pr_type=WRITE_EXCLUSIVE))
        p_isid = p.isid
        a.kill()
    started = time.monotonic()
    with log_in(b, p_name, p_isid) as p:
        taking = time.monotonic() - started
        assert first_attention(p) == REGISTRATIONS_PREEMPTED
        assert first_attention(p) is None
        assert read_keys(p) == [0xA] and reservation(p) == (0xA, WRITE_EXCLUSIVE)
        conflict(p.write(0, bytes(BS), block_size=BS))
    started = time.monotonic()
    with log_in(b, h_name) as h:
        print(f"logins to B: {taking * 1000:.1f} ms taking A's state, {(time.monotonic() - started) * 1000:.1f} ms "
              "reading it unchanged")
        assert first_attention(h) is None
    assert b.stderr().count("written by another coordinator since this one last did") == 1, b.stderr()


def test_a_reload_adding_an_rbd_lun_finds_its_aptpl_state(ringtgt, ceph_cluster):
    """A registration saved with APTPL by one `serve` is in force on a LUN another `serve` adds by a reload."""
    ceph_cluster.create_image("pr-reload", 16 << 20)
    a = ringtgt(luns=[Lun(0, "", BS, store=ceph_cluster.lun_keys("pr-reload"))], workers=1)
    with session(a, f"{NAME}-holder") as holder:
        good(prout(holder, REGISTER, 0, 0xAB, flags=APTPL))
        good(prout(holder, RESERVE, 0xAB, pr_type=WRITE_EXCLUSIVE))
    a.stop()
    b = ringtgt(workers=1)                                                        # a file LUN 0 only
    b.config.write_text(b.config.read_text() + f'\n[[target.lun]]\nid = 1\n{ceph_cluster.lun_keys("pr-reload")}\n')
    done = run([ringtgt_binary(), "reload", "--config", str(b.config)], check=False)
    assert done.returncode == 0, done.stdout
    with session(b, f"{NAME}-other") as other:
        other.clear_unit_attentions(lun=1)                                        # the new unit's power-on
        assert read_keys(other, lun=1) == [0xAB] and reservation(other, lun=1) == (0xAB, WRITE_EXCLUSIVE)
        conflict(other.write(0, bytes(BS), block_size=BS, lun=1))


def test_a_planned_restart_takes_what_another_node_saved_meanwhile(ringtgt, ceph_cluster):
    """Node A stops cleanly (its stopped.json keeps the reservation); node B serves the image meanwhile and clears
    it; A, started again, has B's state, not its own older one."""
    ceph_cluster.create_image("pr-meanwhile", 16 << 20)
    lun = Lun(0, "", BS, store=ceph_cluster.lun_keys("pr-meanwhile"))
    a = ringtgt(luns=[lun], workers=1)
    with session(a, f"{NAME}-holder") as holder:
        good(prout(holder, REGISTER, 0, 0x1234, flags=APTPL))
        good(prout(holder, RESERVE, 0x1234, pr_type=WRITE_EXCLUSIVE))
    a.stop()
    assert (a.dir / "state" / "reservations" / "stopped.json").exists()
    b = ringtgt(luns=[lun], workers=1)
    with session(b, f"{NAME}-other") as other:
        good(prout(other, REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0x77))
        good(prout(other, CLEAR, 0x77))                                   # any registrant clears them all
    b.stop()
    a.start()
    logged(a, "changed since this node saved its state")
    with session(a, f"{NAME}-other") as other:
        assert read_keys(other) == [] and reservation(other) is None
        good(other.write(0, bytes(BS), block_size=BS))


def test_a_pr_out_with_aptpl_fails_with_its_sense_while_the_cluster_is_stopped(ringtgt, ceph_cluster):
    """The OSD stopped (SIGSTOP) for a moment: REGISTER with APTPL ends CHECK CONDITION, NOT READY, LOGICAL UNIT
    COMMUNICATION FAILURE within the save's deadline (not BUSY, not a hang), is logged once, and changes nothing;
    once the OSD runs again the same command works."""
    ceph_cluster.create_image("pr-stopped", 16 << 20)
    tgt = ringtgt(luns=[Lun(0, "", BS, store=ceph_cluster.lun_keys("pr-stopped"))], workers=1)
    osd = next(proc for name, proc in ceph_cluster.daemons.items() if name.startswith("osd"))
    with session(tgt, f"{NAME}-stopped") as ini:
        os.kill(osd.pid, signal.SIGSTOP)
        try:
            result = prout(ini, REGISTER, 0, 0x42, flags=APTPL)
        finally:
            os.kill(osd.pid, signal.SIGCONT)
        assert result.status == I.CHECK_CONDITION, result
        assert (result.sense.key, result.sense.asc, result.sense.ascq) == (0x2, 0x08, 0x00), result.sense
        assert read_keys(ini) == []
        good(prout(ini, REGISTER, 0, 0x42, flags=APTPL))
        assert read_keys(ini) == [0x42]
    assert tgt.stderr().count("RADOS object rbd/ringtgt.unit.pr-stopped") == 2, tgt.stderr()   # failed, answers


def overwrite_immed(ini):
    """SANITIZE OVERWRITE with IMMED, one pass of 0xAA: its answer."""
    parameters = bytes([1, 0, BS >> 8, BS & 0xFF]) + b"\xaa" * BS
    return ini.scsi(bytes([0x48, 0x81, 0, 0, 0, 0, 0, len(parameters) >> 8, len(parameters) & 0xFF, 0]),
                    data_out=parameters)


def test_a_sanitize_whose_record_cannot_be_saved_does_not_begin(ringtgt, ceph_cluster):
    """The OSD stopped (SIGSTOP): a SANITIZE ends as a PR OUT does then, CHECK CONDITION, NOT READY, LOGICAL UNIT
    COMMUNICATION FAILURE, within the save's deadline: its record is not in RADOS, so it does not begin. Once the OSD
    runs again the unit serves (not sanitizing, not in failure mode), its data as it was."""
    ceph_cluster.create_image("sanitize-stopped", 16 << 20)
    tgt = ringtgt(luns=[Lun(0, "", BS, store=ceph_cluster.lun_keys("sanitize-stopped"))], workers=1)
    osd = next(proc for name, proc in ceph_cluster.daemons.items() if name.startswith("osd"))
    with session(tgt, f"{NAME}-sanitize-stopped") as ini:
        good(ini.scsi(I.cdb_write10(0, 1), data_out=b"\x5a" * BS))
        os.kill(osd.pid, signal.SIGSTOP)
        try:
            result = overwrite_immed(ini)
        finally:
            os.kill(osd.pid, signal.SIGCONT)
        assert result.status == I.CHECK_CONDITION, result
        assert (result.sense.key, result.sense.asc, result.sense.ascq) == (0x2, 0x08, 0x00), result.sense
        good(ini.scsi(bytes(6)))
        read = ini.scsi(I.cdb_read10(0, 1), read_length=BS)
        good(read)
        assert read.data == b"\x5a" * BS


def past_attentions(ini):
    """The nexus's first TEST UNIT READY past its unit attentions (POWER ON)."""
    result = ini.scsi(bytes(6))
    while result.sense is not None and result.sense.key == I.UNIT_ATTENTION:
        result = ini.scsi(bytes(6))
    return result


def sanitize_failed(ini) -> None:
    """The nexus's first command past its unit attentions finds the unit in sanitize failure mode (MEDIUM ERROR,
    SANITIZE COMMAND FAILED)."""
    failed = past_attentions(ini)
    assert (failed.sense.key, failed.sense.asc, failed.sense.ascq) == (0x3, 0x31, 0x03), failed.sense


def test_a_sanitize_cut_short_is_failed_on_a_serve_that_never_saw_the_lun(ringtgt, ceph_cluster):
    """A paced OVERWRITE runs when node A dies (SIGKILL, as a power loss) and its state_dir goes: node B's LUN on
    the image is in sanitize failure mode (MEDIUM ERROR, SANITIZE COMMAND FAILED), from the record in RADOS, until
    a sanitize completes there (BLOCK ERASE), which clears it. So is the LUN of a `serve` that ran beside A all
    along (no bus; it read the object before the sanitize) from an initiator's next login there, and the other way
    round, B's sanitize that completes ends that failure mode there too, at its next login (the record gone from
    the object: coordinator/unit_service.py `take_sanitize`)."""
    ceph_cluster.create_image("sanitize-state", 16 << 20)
    lun = Lun(0, "", BS, store=ceph_cluster.lun_keys("sanitize-state"), extra='sanitize_rate = "1MiB"')     # 16 s

    def stored_object():
        return ceph_cluster.rados("-p", POOL, "get", "ringtgt.unit.sanitize-state", "/dev/stdout")
    beside = ringtgt(luns=[lun], workers=1)
    a = ringtgt(luns=[lun], workers=1)
    with session(a, f"{NAME}-sanitizer") as ini:
        started = overwrite_immed(ini)
        assert (started.status, started.sense) == (I.GOOD, None)
        a.kill()                                # at once: the sanitize's record was saved before that answer
    assert '"sanitize": {' in stored_object()
    with log_in(beside, f"{NAME}-beside") as ini:                               # reads the object first
        sanitize_failed(ini)
    logged(beside, "a sanitize another coordinator ran did not finish here")
    shutil.rmtree(a.dir / "state")
    b = ringtgt(luns=[lun], workers=1)
    logged(b, "a sanitize did not finish before the target stopped")
    with I.Initiator.connect(HOST, b.port) as ini:
        ini.login(b.iqn, initiator_name=f"{NAME}-after")      # served once the worker has the unit states
        sanitize_failed(ini)
        good(ini.scsi(bytes([0x48, 0x02]) + bytes(8)))                           # BLOCK ERASE completes
        good(ini.scsi(bytes(6)))
    poll(lambda: '"sanitize": {' not in stored_object(), timeout=10,
         what="the sanitize record's removal in RADOS (written behind the completion's answer)")
    with log_in(beside, f"{NAME}-beside") as ini:                               # reads the object first
        good(past_attentions(ini))
    logged(beside, "sanitize failure mode ends here too")
    beside.stop()
    b.stop()
    c = ringtgt(luns=[lun], workers=1)                                            # the record is gone from RADOS
    with session(c, f"{NAME}-after") as ini:
        good(ini.scsi(bytes(6)))


def test_a_malformed_unit_object_fails_its_load_and_the_store_goes_on(ceph_cluster):
    """An object whose JSON is not an object (`[1]`): its load fails (StoreFailed: a coordinator's start then exits
    and is restarted), and the store's thread serves the next job: the load of a well-formed object."""
    client = RadosStateClient()
    conn = Connection(client_of(ceph_cluster))
    try:
        bad = RadosStore(client, RbdImage(POOL, "rados-state-malformed", client_of(ceph_cluster)), "bad")
        write_versioned(conn.ioctx(POOL), bad.oid, b"[1]", 0)
        with pytest.raises(StoreFailed, match="malformed") as failed:
            bad.load()
        print(f"load of a malformed object: {failed.value}")
        good_one = RadosStore(client, RbdImage(POOL, "rados-state-wellformed", client_of(ceph_cluster)), "good")
        assert good_one.load() == (None, None)          # the thread still answers
    finally:
        conn.close()
        client.close()
