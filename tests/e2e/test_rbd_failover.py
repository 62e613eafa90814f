"""Fenced takeover of a two-node cluster on one Ceph cluster: nodes a and b in network namespaces (cluster_lab.py)
serve the same two RBD images of the session's cluster (tests/ceph_cluster.py, reached through a relay of its
loopback ports into the namespaces) behind a VIP.

A persistent reservation is taken on LUN 0 and fio (libiscsi, verify=crc32c) writes LUN 1 through the VIP on a.
Node a is cut off (its link down) and frozen (SIGSTOP of all its processes, as a hung machine or a paused VM); the
VIP moves to b and `ringtgt takeover a` runs there (or, with built-in takeover, b does it all by itself). Then: a's
RADOS clients (the addresses its workers and its coordinator logged) are in the OSD map's blocklist and b's are
not, fio ends with err=0 and its verify passing, the reservation is in force on b (a write from a non-registrant
gets RESERVATION CONFLICT). Node a then resumes: a write through its own portal (from inside its namespace) fails,
refused by Ceph, the block on b is unchanged; a, fenced itself, fences no one (built-in: it takes b for dead); and
a worker of a that is restarted finds the fence mark and serves its LUNs offline, and so does its restarted
coordinator (it starts the units without their stored state, and answers). The pause fio saw and the
addresses fenced are printed.

Without namespaces: two nodes fencing each other at once fence one (the claim in `ringtgt.fencing`), step by step
and in two fencing processes run together; a takeover on a one-node `serve` (its peer never runs, a client address
recorded for it) leaves every worker's RADOS client at an OSD map epoch at least the blocklist's before it answers,
read from each client's admin socket (`perf dump`: the Objecter's map_epoch, which an idle client would not have
moved). With the monitor stopped after fencing (stalled_takeover.py): the workers hold their RBD LUNs NOT READY until
their clients have the map (a sanitize running then stops writing and fails), and the coordinator holds the
unit-state writes of its own client (a PR OUT answered NOT READY, becoming ready) until it has it, its wait begun at
the takeover (its report names it).
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

from cluster_lab import (FIO_BYTES, FIO_INITIATOR, FIO_LUN, FIO_RUNTIME, KEY, NODES, VIP, WRITE_EXCLUSIVE, Node,
                         client_script, fio_sessions, move_vip, pauses, start_fio, stop_fio)
from harness import REPO, Lun, connect_to_worker, poll, ringtgt_binary, run, sessions_on_every_worker
from initiator import CDB_TEST_UNIT_READY, GOOD
from pr_commands import REGISTER, good, prout, read_keys
from stalled_takeover import cluster_section, recorded_peer, takeover_with_monitor_stopped

from target.backstore.fencing import CLAIMS, claim
from target.backstore.rados import Connection
from target.backstore.rbd_image import CephClient

VIP_MOVES_AFTER = 2.0               # seconds after node a froze
SERVER = "hang_timeout = 600"       # a frozen node's watchdog must not restart its workers when it resumes
CHECK_CONDITION, RESERVATION_CONFLICT, NOT_READY, MEDIUM_ERROR = 2, 0x18, 2, 3
BLOCK = 512
UNTOUCHED_LBA = (FIO_BYTES + (8 << 20)) // BLOCK     # in LUN 1, past what fio writes


def rbd_luns(cluster, prefix: str) -> str:
    """LUN 0 (16 MiB) and LUN 1 (64 MiB) on two images of the session's cluster, made afresh."""
    tables = []
    for lun, (image, size) in enumerate(((f"{prefix}-pr", 16 << 20), (f"{prefix}-fio", 64 << 20))):
        cluster.create_image(image, size)
        tables.append(f"[[target.lun]]\nid = {lun}\n{cluster.lun_keys(image)}\n")
    return "\n".join(tables)


def served_as(node: Node, image: str) -> set[str]:
    """The RADOS client addresses node's workers logged when they opened `image`."""
    return set(re.findall(rf"RBD image rbd/{image}: \d+ bytes served, as .* at (\S+)", node.text()))


def state_written_as(node: Node) -> set[str]:
    """The RADOS client address node's coordinator logged for writing the units' state objects in pool rbd."""
    return set(re.findall(r"units' state in pool rbd: written by .* at (\S+) \(recorded for fencing\)", node.text()))


def worker_pids(node: Node) -> list[int]:
    return [w["pid"] for w in json.loads(node.command("status", "--json"))["workers"]]


def unfence(cluster, node: str, addresses: set[str]) -> None:
    """What an operator does for a repaired node (README, Ceph RBD, Fencing), and the node's records removed: the
    session's cluster is left as the test found it."""
    for address in addresses:
        cluster.ceph("osd", "blocklist", "rm", address)
    cluster.rados("-p", "rbd", "rmomapkey", f"ringtgt.node.{node}", "fenced")
    cluster.rados("-p", "rbd", "rmomapkey", CLAIMS, f"fenced.{node}")
    cluster.rados("-p", "rbd", "rm", f"ringtgt.node.{node}")


def fenced_failover(lab_factory, cluster, directory, takeover: str) -> dict:
    """One failover of a frozen node a to node b, the checks of the module docstring; what was measured."""
    prefix = f"fence-{takeover}"
    luns = rbd_luns(cluster, prefix)
    with lab_factory() as lab:
        lab.relay_loopback(list(NODES), cluster.client_ports())
        lab.add_address("a", VIP)
        nodes = {name: Node(lab, name, directory, luns, takeover, SERVER) for name in NODES}
        fio = None
        fenced: set[str] = set()
        try:
            poll(lambda: nodes["a"].ready("b") and nodes["b"].ready("a"), timeout=60, what="both nodes up")
            a_clients, b_clients = served_as(nodes["a"], f"{prefix}-fio"), served_as(nodes["b"], f"{prefix}-fio")
            assert len(a_clients) == 2 and len(b_clients) == 2, (a_clients, b_clients)
            a_clients |= state_written_as(nodes["a"])   # its coordinator's, which writes the units' state objects
            b_clients |= state_written_as(nodes["b"])
            assert len(a_clients) == 3 and len(b_clients) == 3, (a_clients, b_clients)
            assert client_script(lab, "reserve") == [KEY, WRITE_EXCLUSIVE]
            fio, output, log_prefix = start_fio(lab, directory)
            poll(lambda: FIO_INITIATOR in nodes["b"].command("sessions"), timeout=30,
                 what="node b to list fio's session on node a")
            time.sleep(1.5)
            lab.link_down("a")                          # cut off from its clients and its peer, not from Ceph
            nodes["a"].signal(signal.SIGSTOP)           # and frozen, with whatever it had in flight
            if takeover == "external":
                time.sleep(VIP_MOVES_AFTER)
                moved = move_vip(lab, "b")
                said = nodes["b"].command("takeover", "a")
                took = time.time() - moved
                assert "fenced a through Ceph: 3 RADOS clients blocklisted" in said, said
                assert "1 connections tickled" in said, said
                fenced = set(re.findall(r"^  (\S+)$", said, re.M))
            else:
                moved = time.time()
                found = poll(lambda: re.search(r"fencing a took .*: 3 RADOS clients blocklisted: (.*)$",
                                               nodes["b"].text(), re.M), timeout=30, what="node b to fence a")
                fenced = set(found.group(1).split(", "))
                poll(lambda: "cluster: takeover of a" in nodes["b"].text(), timeout=30, what="node b's takeover")
                took = time.time() - moved
            assert fenced == a_clients, (fenced, a_clients)
            blocklist = set(cluster.blocklist())
            assert a_clients <= blocklist and not b_clients & blocklist, (blocklist, a_clients, b_clients)

            status = fio.wait(FIO_RUNTIME + 90)
            text = output.read_text(errors="replace")
            assert status == 0 and "err= 0" in text, f"fio exit {status}:\n{text}\n{nodes['b'].text()}"
            assert f"session of {FIO_INITIATOR}" in nodes["b"].text()     # fio logged in again on b
            assert fio_sessions(nodes["b"]) == []       # and out at its end; a's session left the table
            assert client_script(lab, "show") == [KEY, WRITE_EXCLUSIVE]
            assert client_script(lab, "write", "0", "0") == [RESERVATION_CONFLICT, None]

            before = client_script(lab, "read", str(FIO_LUN), str(UNTOUCHED_LBA))
            nodes["a"].signal(signal.SIGCONT)           # node a resumes, still holding the VIP on its own side
            status, sense_key = client_script(lab, "write", str(FIO_LUN), str(UNTOUCHED_LBA), member="a")
            assert (status, sense_key) == (CHECK_CONDITION, MEDIUM_ERROR), (status, sense_key, nodes["a"].text())
            # librados' EBLOCKLISTED is ESHUTDOWN (logged once per worker: the writes a had in flight come first)
            assert f"(errno {errno.ESHUTDOWN}): answered sense 3/0C/00" in nodes["a"].text(), nodes["a"].text()
            assert client_script(lab, "read", str(FIO_LUN), str(UNTOUCHED_LBA)) == before
            if takeover == "builtin":                   # a takes b for dead in turn, but was fenced itself
                poll(lambda: "fences no one" in nodes["a"].text(), timeout=30, what="node a to refuse fencing b")
            assert not b_clients & set(cluster.blocklist())

            os.kill(worker_pids(nodes["a"])[0], signal.SIGKILL)     # restarted: a new client, not blocklisted
            poll(lambda: "was fenced" in nodes["a"].text(), timeout=30,
                 what="node a's restarted worker to find the fence mark")
            coordinator = json.loads(nodes["a"].command("status", "--json"))["coordinator"]["pid"]
            os.kill(coordinator, signal.SIGKILL)        # restarted too: it finds the mark, and serves on
            poll(lambda: "the unit starts without its saved state" in nodes["a"].text(), timeout=60,
                 what="node a's restarted coordinator to find the fence mark")
            restarted = poll(lambda: (proc := nodes["a"].run("status", "--json")).returncode == 0
                             and json.loads(proc.stdout)["coordinator"], timeout=60,
                             what="node a's restarted coordinator to answer")
            assert restarted["pid"] != coordinator and restarted["restarts"] == 1, restarted
            return {"took": took, "fenced": fenced, "refused": (status, sense_key), **pauses(log_prefix, moved)}
        finally:
            stop_fio(fio)
            for node in nodes.values():
                node.stop()
            unfence(cluster, "a", fenced)
            cluster.rados("-p", "rbd", "rm", "ringtgt.node.b")


def report(what: str, result: dict) -> str:
    return (f"{len(result['fenced'])} RADOS clients blocklisted "
            f"({', '.join(sorted(result['fenced']))}); first write on node b {result['after_move'] * 1000:.0f} ms "
            f"after {what}, longest stall {result['stall']:.2f} s; node a's write after it resumed: status "
            f"{result['refused'][0]:#x}, sense key {result['refused'][1]}")


def test_external_fenced_takeover_on_one_ceph_cluster(lab_factory, ceph_cluster, tmp_path):
    result = fenced_failover(lab_factory, ceph_cluster, tmp_path, "external")
    print(f"fenced takeover on RBD: `ringtgt takeover a` returned {result['took'] * 1000:.0f} ms after the VIP moved; "
          + report("the VIP move", result))


def test_builtin_fenced_takeover_on_one_ceph_cluster(lab_factory, ceph_cluster, tmp_path):
    result = fenced_failover(lab_factory, ceph_cluster, tmp_path, "builtin")
    print(f"built-in fenced takeover on RBD: done {result['took'] * 1000:.0f} ms after node a froze "
          f"(dead_after = 0.5 s); " + report("node a froze", result))


def objecter_epoch(cluster, pid: int) -> int:
    """The OSD map epoch the Objecter of process `pid`'s RADOS client took last (0: none since its start), from the
    client's admin socket (the test cluster's ceph.conf gives every client one, by pid)."""
    sockets = list((cluster.dir / "run").glob(f"*.{pid}.*.asok"))
    assert len(sockets) == 1, (pid, sockets)
    dump = json.loads(run(["ceph", "--admin-daemon", str(sockets[0]), "perf", "dump", "objecter"]).stdout)
    return int(dump["objecter"]["map_epoch"])


def test_a_takeover_answers_once_every_worker_has_the_osd_map_of_the_blocklist(ringtgt, ceph_cluster):
    ceph_cluster.create_image("fence-osdmap", 16 << 20)
    tgt = ringtgt(luns=[Lun(0, "", 512, store=ceph_cluster.lun_keys("fence-osdmap"))], workers=2,
                  extra=cluster_section("osdmap-b", "osdmap-a"))
    with recorded_peer(ceph_cluster, "osdmap-b", "osdmap-a", f"127.0.0.1:0/{os.getpid()}") as address:
        before = {pid: objecter_epoch(ceph_cluster, pid) for pid in tgt.workers}
        epoch_before = json.loads(ceph_cluster.ceph("osd", "stat", "-f", "json"))["epoch"]
        said = run([ringtgt_binary(), "takeover", "osdmap-a", "--config", str(tgt.config)]).stdout
        assert f"1 RADOS clients blocklisted\n  {address}" in said, said
        epoch = int(re.search(r"OSD map epoch (\d+) of .*: this node's workers asked to wait for it", said).group(1))
        after = {pid: objecter_epoch(ceph_cluster, pid) for pid in tgt.workers}
        print(f"blocklist in OSD map epoch {epoch} (before: {epoch_before}); workers' Objecter epochs before the "
              f"takeover {before}, after {after}")
        assert epoch > epoch_before and address in ceph_cluster.blocklist()
        assert all(seen >= epoch for seen in after.values()), (epoch, after, tgt.stderr())
        assert len(re.findall(r"RADOS clients \(\d+\) of \S+ at the takeover's OSD map", tgt.stderr())) == 2, \
            tgt.stderr()


def test_a_worker_that_misses_the_barrier_serves_its_rbd_luns_only_at_the_map(ringtgt, ceph_cluster):
    """A worker the takeover's barrier does not hear from is not known to be at the blocklist's OSD map, so its RBD
    LUNs must not serve after it until it is (README, Fencing). Worker A stopped (SIGSTOP) through the takeover: the
    report names it (no ack); resumed, it takes the push past its deadline and holds its LUN NOT READY until its
    clients have the map (logged, late). Worker B then killed: its replacement, started after the takeover's push,
    connects its clients after the blocklist, so it gets no barrier again (that is for a worker started before the
    push: tests/test_coordinator_cluster.py) and serves at once."""
    ceph_cluster.create_image("fence-noack", 16 << 20)
    tgt = ringtgt(luns=[Lun(0, "", BLOCK, store=ceph_cluster.lun_keys("fence-noack"))], workers=2,
                  extra=cluster_section("noack-b", "noack-a"), server_extra=SERVER)
    stopped, killed = tgt.workers
    with recorded_peer(ceph_cluster, "noack-b", "noack-a", f"127.0.0.1:0/{os.getpid() + 4}"):
        os.kill(stopped, signal.SIGSTOP)
        try:
            said = run([ringtgt_binary(), "takeover", "noack-a", "--config", str(tgt.config)]).stdout
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert re.search(rf"worker \d \(pid {stopped}\): no ack within 3 s: not known to be at the map", said), said
        poll(lambda: f"osdmap_sync[{stopped}] WARNING: RADOS clients (1) of" in tgt.stderr(), timeout=60,
             what="the resumed worker to serve again at the map")
        resumed = [line for line in tgt.stderr().splitlines() if f"osdmap_sync[{stopped}]" in line]
        assert "not at the takeover's OSD map" in resumed[0] and "serve again" in resumed[1], resumed
        os.kill(killed, signal.SIGKILL)
        joined = poll(lambda: re.search(r"\(pid (\d+)\) serving on CPU", tgt.stderr().split(resumed[-1], 1)[1]),
                      timeout=60, what="the replacement to serve").group(1)
        lines = [line for line in tgt.stderr().splitlines() if f"[{joined}]" in line]
        print("\n".join([said.strip(), *resumed, *lines]))
        assert not [line for line in lines if "osdmap_sync" in line], lines
    tgt.workers = [stopped, int(joined)]            # (the harness's list: the replacement instead of the killed)
    pid, ini = connect_to_worker(tgt, lambda pid: pid == int(joined))
    try:
        ini.login(tgt.iqn, initiator_name="iqn.2026-12.org.ringtgt:noack")
        ini.clear_unit_attentions()
        assert ini.write(0, os.urandom(BLOCK), block_size=BLOCK).status == GOOD     # the replacement serves
    finally:
        ini.close()


def test_a_worker_whose_clients_cannot_reach_the_map_in_time_serves_not_ready_until_they_do(ringtgt, ceph_cluster):
    """The monitor does not answer the workers' `rados_wait_for_latest_osdmap` (stalled_takeover.py): each worker
    acks past its 2 s saying it is behind, the takeover goes on and names both workers, and every command touching
    the LUN gets CHECK CONDITION, NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY, nothing of it written;
    once the monitor resumes, the waits end and the LUN serves (what was written before reads back)."""
    ceph_cluster.create_image("fence-late", 16 << 20)
    tgt = ringtgt(luns=[Lun(0, "", BLOCK, store=ceph_cluster.lun_keys("fence-late"))], workers=2,
                  extra=cluster_section("late-b", "late-a"), server_extra=SERVER)
    sessions = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:late")
    before = os.urandom(8 * BLOCK)
    try:
        assert all(ini.write(64, before, block_size=BLOCK).status == GOOD for ini in sessions)
        with recorded_peer(ceph_cluster, "late-b", "late-a", f"127.0.0.1:0/{os.getpid() + 1}") as address, \
                takeover_with_monitor_stopped(ceph_cluster, tgt, "late-a") as (said, epoch, resume_monitor):
            for pid in tgt.workers:
                assert re.search(rf"worker \d \(pid {pid}\): not at OSD map epoch {epoch} of .* yet: its RBD LUNs "
                                 r"there answer NOT READY", said), said
            for ini in sessions:        # (the monitor still stopped)
                for result in (ini.scsi(CDB_TEST_UNIT_READY), ini.read(64, 8, block_size=BLOCK),
                               ini.write(64, os.urandom(BLOCK), block_size=BLOCK)):   # (read back unchanged below)
                    assert result.status == CHECK_CONDITION and result.sense is not None, result
                    assert (result.sense.key, result.sense.asc, result.sense.ascq) == (NOT_READY, 0x04, 0x01), \
                        result.sense
            resume_monitor()
            waited = time.monotonic()
            for ini in sessions:
                poll(lambda ini=ini: ini.scsi(CDB_TEST_UNIT_READY).status == GOOD, timeout=60,
                     what="the LUN to serve again")
            log = tgt.stderr()
            print(f"takeover (blocklist in OSD map epoch {epoch}) with the monitor stopped: {said.strip()}\n"
                  f"serving again {time.monotonic() - waited:.3f} s after the monitor resumed; the workers logged:\n"
                  + "\n".join(line for line in log.splitlines() if "takeover's OSD map" in line))
            for ini in sessions:
                result = ini.read(64, 8, block_size=BLOCK)
                assert result.status == GOOD and result.data == before
                assert ini.write(128, os.urandom(BLOCK), block_size=BLOCK).status == GOOD
            assert log.count("RBD LUNs here answer NOT READY (becoming ready) until they are") == 2, log   # per worker
            assert log.count("RBD LUNs here serve again") == 2, log
            assert address in ceph_cluster.blocklist()
    finally:
        for ini in sessions:
            ini.close()


def test_the_coordinators_unit_state_writes_wait_for_the_osd_map_of_the_blocklist(ringtgt, ceph_cluster):
    """The coordinator's own RADOS client (the units' state objects, coordinator/store_osdmap.py) is held to the
    takeover's OSD map as the workers' are: with the monitor stopped after fencing (stalled_takeover.py), a PR OUT
    REGISTER, which is saved in the unit's object before its answer, gets CHECK CONDITION, NOT READY, LOGICAL UNIT
    IS IN PROCESS OF BECOMING READY and changes nothing (a second one too, without waiting again; logged once); once
    the monitor resumes it is saved and in force, and the coordinator's Objecter has the blocklist's epoch. Its wait
    began at the takeover, not at the first write: the takeover's report names the coordinator, and its log says it
    is behind before any REGISTER is sent."""
    ceph_cluster.create_image("fence-state", 16 << 20)
    tgt = ringtgt(luns=[Lun(0, "", BLOCK, store=ceph_cluster.lun_keys("fence-state"))], workers=1,
                  extra=cluster_section("state-b", "state-a"), server_extra=SERVER)
    coordinator = tgt.coordinator()
    assert coordinator is not None
    ini, = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:state")
    try:
        good(prout(ini, REGISTER, 0, 0x10))             # saved: the coordinator's client is connected
        with recorded_peer(ceph_cluster, "state-b", "state-a", f"127.0.0.1:0/{os.getpid() + 2}"), \
                takeover_with_monitor_stopped(ceph_cluster, tgt, "state-a") as (said, epoch, resume_monitor):
            assert re.search(rf"coordinator \(pid {coordinator}\): RADOS client \S+ of \S+: not at the takeover's "
                             rf"OSD map \(epoch {epoch}\) yet", said), said
            assert tgt.stderr().count("is not at the takeover's OSD map") == 1, tgt.stderr()   # before any write
            held = []
            for _ in range(2):
                began = time.monotonic()
                result = prout(ini, REGISTER, 0x10, 0x11)
                held.append(time.monotonic() - began)
                assert result.status == CHECK_CONDITION and result.sense is not None, result
                assert (result.sense.key, result.sense.asc, result.sense.ascq) == (NOT_READY, 0x04, 0x01), \
                    result.sense
            assert read_keys(ini) == [0x10]
            resume_monitor()
            waited = time.monotonic()
            poll(lambda: prout(ini, REGISTER, 0x10, 0x11).status == GOOD, timeout=60, what="the save to work again")
            saved_after = time.monotonic() - waited
            assert read_keys(ini) == [0x11]
            stored = json.loads(ceph_cluster.rados("-p", "rbd", "get", "ringtgt.unit.fence-state", "/dev/stdout")
                                .partition("\n")[2])
            assert list(stored["unit"]["reservations"]["keys"].values()) == [0x11], stored
            assert objecter_epoch(ceph_cluster, coordinator) >= epoch
        log = tgt.stderr()
        print(f"PR OUT answered NOT READY (becoming ready) after {held[0]:.2f} s, then {held[1]:.3f} s; saved "
              f"{saved_after:.2f} s after the monitor resumed; the coordinator logged:\n"
              + "\n".join(line for line in log.splitlines() if "the coordinator's RADOS client" in line))
        assert log.count("is not at the takeover's OSD map") == 1, log
        assert "at the takeover's OSD map (epoch" in log and "its writes go through again" in log, log
    finally:
        ini.close()


def test_a_sanitize_running_when_its_worker_falls_behind_the_map_writes_nothing_more_and_fails(ringtgt, ceph_cluster):
    """A SANITIZE OVERWRITE (IMMED, AUSE, paced to 256 KiB/s: 64 s for the LUN) runs on the node when a takeover's
    aftermath cannot reach the OSD map (stalled_takeover.py): once its worker is found behind, the sweep submits no
    more writes and ends failed (target/scsi/sanitize.py), rather than going on under the old map. Once the monitor
    resumes, the unit is in sanitize failure mode (not SANITIZE IN PROGRESS); EXIT FAILURE MODE (AUSE) lets the
    blocks be read: the sweep's start overwritten, the LUN's end as it was."""
    ceph_cluster.create_image("fence-sanitize", 16 << 20)
    lun = Lun(0, "", BLOCK, store=ceph_cluster.lun_keys("fence-sanitize"), extra='sanitize_rate = "256KiB"')
    tgt = ringtgt(luns=[lun], workers=1, extra=cluster_section("sweep-b", "sweep-a"), server_extra=SERVER)
    ini, = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:sweep")
    last = (16 << 20) // BLOCK - 1
    before = os.urandom(BLOCK)
    try:
        good(ini.write(last, before, block_size=BLOCK))
        parameters = bytes([1, 0, 0, 1, 0xAA])          # one pass of 0xAA
        good(ini.scsi(bytes([0x48, 0x81 | 0x20, 0, 0, 0, 0, 0, 0, len(parameters), 0]), data_out=parameters))
        with recorded_peer(ceph_cluster, "sweep-b", "sweep-a", f"127.0.0.1:0/{os.getpid() + 3}"), \
                takeover_with_monitor_stopped(ceph_cluster, tgt, "sweep-a") as (said, epoch, resume_monitor):
            assert "not at OSD map epoch" in said, said
            poll(lambda: "SANITIZE of LUN 0 failed" in tgt.stderr(), timeout=60, what="the sanitize to end")
            resume_monitor()
            # Becoming ready until the worker has the map; SANITIZE IN PROGRESS until the coordinator, itself
            # behind the map until it catches up (its clock apart from the worker's), has recorded the failure.
            poll(lambda: sense_of(ini.scsi(CDB_TEST_UNIT_READY)) not in ((NOT_READY, 0x04, 0x01),
                                                                       (NOT_READY, 0x04, 0x1B)), timeout=60,
                 what="the LUN to serve again, the sanitize's end recorded")
            assert sense_of(ini.scsi(CDB_TEST_UNIT_READY)) == (MEDIUM_ERROR, 0x31, 0x03)   # SANITIZE COMMAND FAILED
        good(ini.scsi(bytes([0x48, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0])))                     # EXIT FAILURE MODE
        swept = [ini.read(mib * (1 << 20) // BLOCK, 1, block_size=BLOCK).data[:1] == b"\xaa" for mib in range(16)]
        log = tgt.stderr()
        print(f"sanitize stopped: MiB overwritten {swept}; the worker logged:\n"
              + "\n".join(line for line in log.splitlines() if "SANITIZE" in line or "takeover's OSD map" in line))
        assert swept[0] and not all(swept), swept
        assert ini.read(last, 1, block_size=BLOCK).data == before
        assert "the worker's RADOS clients are behind a takeover's OSD map" in log, log
    finally:
        ini.close()


def sense_of(result) -> tuple[int, int, int] | None:
    """(sense key, ASC, ASCQ) of a CHECK CONDITION, None otherwise."""
    if result.status != CHECK_CONDITION or result.sense is None:
        return None
    return result.sense.key, result.sense.asc, result.sense.ascq


def test_two_nodes_fencing_each_other_at_once_fence_one_of_them(ceph_cluster):
    """The interleaving that fenced both before: each has found its own node's object unmarked, then both claim;
    the second claim is refused. Then two fencing processes of two other nodes started together: one fences, the
    other is refused, and only the loser's object is marked."""
    client = CephClient(str(ceph_cluster.conf))
    conn = Connection(client)
    spec = {"pools": [[str(ceph_cluster.conf), None, None, "rbd"]]}
    try:
        assert claim(conn, "rbd", "tie-b", by="tie-a") is True
        assert claim(conn, "rbd", "tie-a", by="tie-b") is False
        assert claim(conn, "rbd", "tie-b", by="tie-a") is True          # the winner's takeover again: still its own
        procs = {by: subprocess.Popen([sys.executable, "-m", "target.backstore.fencing",
                                       json.dumps({**spec, "node": node, "by": by})], cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for by, node in (("race-a", "race-b"), ("race-b", "race-a"))}
        results = {by: json.loads(proc.communicate(timeout=60)[0].strip().splitlines()[-1])
                   for by, proc in procs.items()}
        print(f"two fencings at once: {results}")
        refused = [by for by, result in results.items() if result["refused"]]
        assert len(refused) == 1 and all(not result["errors"] for result in results.values()), results
        winner = next(by for by in results if by not in refused)
        marked = {by: "fenced" in subprocess.run(["rados", "-c", str(ceph_cluster.conf), "-p", "rbd", "listomapkeys",
                                                  f"ringtgt.node.{by}"], capture_output=True, text=True).stdout.split()
                  for by in results}          # (the winner's object was never written: no such object)
        assert marked == {refused[0]: True, winner: False}, marked
    finally:
        conn.close()
        for node in ("tie-a", "tie-b", "race-a", "race-b"):
            ceph_cluster.rados("-p", "rbd", "rmomapkey", CLAIMS, f"fenced.{node}")
            subprocess.run(["rados", "-c", str(ceph_cluster.conf), "-p", "rbd", "rm", f"ringtgt.node.{node}"],
                           capture_output=True)
