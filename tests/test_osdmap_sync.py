"""target/osdmap_sync.py's state machine on a real ring and real threads: a worker's answer to a takeover's
OsdMapBarrier when its RADOS clients reach the map in time, when they do not (the RBD LUNs of that cluster NOT READY,
LOGICAL UNIT IS IN PROCESS OF BECOMING READY, the ack saying so, serving again once the map arrives), when an
attempt fails (tried again), and with a second barrier while the first still waits. The clients are stand-ins
(tests/osdmap_client.py); the units are real (scsi/lun.py through the SCSI harness)."""
import logging
import re
import time

import pytest

from coordinator.messages import OsdMapBarrier
from target.osdmap_sync import OsdMapSync
from target.scsi import sense as S
from tests.scsi_harness import TUR, assert_good, assert_sense, rw_cdb
from tests.scsi_harness import Harness as Commands
from tests.osdmap_client import PATIENCE, Client

CONF, OTHER = "/etc/ceph/a.conf", "/etc/ceph/b.conf"
WAIT = 1.0                  # the worker's deadline before its ack (2 s in production); a client let through before
                            # the push has a thread to run in that time: ample even on a loaded machine
ATTEMPT = 0.5               # an attempt blocked this long is logged
RETRY = 0.05


class Coordinator:
    def subscribe(self, cls, handler):
        assert cls is OsdMapBarrier
        self.push = handler


class Acks(list):
    def __call__(self, body=None):
        self.append(body)


def until(reactor, condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"not within {PATIENCE} s: {what}"
        reactor.run_once(0.01)


@pytest.fixture
def node(reactor):
    """(sync, clients, units by cluster, coordinator): a worker with one RBD LUN on each of two clusters."""
    clients = [Client(CONF), Client(OTHER)]
    units = {CONF: Commands(), OTHER: Commands()}
    for harness in units.values():
        harness.ready()
    coordinator = Coordinator()
    sync = OsdMapSync(coordinator, reactor, lambda key: [units[key].unit], lambda: clients, wait_seconds=WAIT,
                      attempt_seconds=ATTEMPT, retry_seconds=RETRY)
    yield sync, clients, units, coordinator
    for client in clients:
        client.reached.set()            # the threads end


def test_clients_at_the_map_in_time_ack_plainly_and_the_luns_never_stop(node, reactor, caplog):
    sync, clients, units, coordinator = node
    caplog.set_level(logging.INFO)
    acks = Acks()
    clients[0].reached.set()
    coordinator.push(OsdMapBarrier({CONF: 40, "/etc/ceph/none.conf": 7}), acks)    # no client of the second here
    until(reactor, lambda: acks, "the ack")
    assert acks == [None] and not units[CONF].unit.becoming_ready
    assert_good(units[CONF].run(TUR))
    assert clients[1].calls == 0                        # a cluster the barrier did not name is not waited for
    assert any(f"of {CONF} at the takeover's OSD map (epoch 40) in" in r.getMessage() for r in caplog.records)
    again = Acks()
    coordinator.push(OsdMapBarrier({CONF: 39}), again)  # an older epoch than one reached since: acked at once
    assert again == [None] and clients[0].calls == 1


@pytest.mark.parametrize("cdb, data_out", [(TUR, None), (rw_cdb(0x28, 0, 1), None), (rw_cdb(0x2A, 0, 1), bytes(512)),
                                           (rw_cdb(0x35, 0, 0), None)])
def test_clients_not_at_the_map_in_time_hold_their_luns_not_ready_until_they_are(node, reactor, caplog, cdb,
                                                                                   data_out):
    sync, clients, units, coordinator = node
    caplog.set_level(logging.INFO)
    acks = Acks()
    pushed = time.monotonic()
    clients[1].reached.set()                            # the other cluster's client is there at once
    coordinator.push(OsdMapBarrier({CONF: 41, OTHER: 12}), acks)
    until(reactor, lambda: acks, "the ack")
    assert time.monotonic() - pushed >= WAIT
    assert acks == [{"behind": {CONF: 41}}]             # said in the ack: the takeover's report names the worker
    store = units[CONF].store
    assert units[CONF].unit.becoming_ready and sync.behind(CONF) and not sync.behind(OTHER)
    assert_sense(units[CONF].run(cdb, data_out=data_out), S.NOT_READY, S.BECOMING_READY)
    assert store.calls == []                            # nothing reached the store
    assert_good(units[OTHER].run(TUR))                  # the other cluster's LUN serves
    request_sense = units[CONF].run(bytes([0x03, 0, 0, 0, 18, 0]))
    assert bytes(request_sense.data_in) == S.build_sense(S.NOT_READY, S.BECOMING_READY)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"RADOS clients of {CONF} not at the takeover's OSD map (epoch 41)" in errors[0]
    until(reactor, lambda: any("still not at" in r.getMessage() for r in caplog.records), "the blocked attempt logged")
    clients[0].reached.set()                            # the map arrives
    until(reactor, lambda: not units[CONF].unit.becoming_ready, "serving again")
    assert_good(units[CONF].run(cdb, data_out=data_out))
    assert not sync.behind(CONF)
    assert any(f"of {CONF} at the takeover's OSD map (epoch 41)" in r.getMessage() and "serve again" in r.getMessage()
               for r in caplog.records)
    assert clients[0].calls == 1                        # one attempt, waited on (a second would wait the same)


def test_a_failed_attempt_is_made_again_and_logged_once(node, reactor, caplog):
    sync, clients, units, coordinator = node
    clients[0].failures = 3
    acks = Acks()
    coordinator.push(OsdMapBarrier({CONF: 50}), acks)
    until(reactor, lambda: clients[0].calls > 3, "the retries")
    clients[0].reached.set()
    until(reactor, lambda: acks, "the ack")
    assert clients[0].calls == 4
    failed = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(failed) == 1 and "Connection timed out" in failed[0], failed      # rate-limited


def test_a_second_barrier_while_the_first_waits_needs_an_attempt_begun_after_it(node, reactor):
    sync, clients, units, coordinator = node
    first, second = Acks(), Acks()
    coordinator.push(OsdMapBarrier({CONF: 60}), first)
    until(reactor, lambda: first, "the first ack")
    assert first == [{"behind": {CONF: 60}}]
    coordinator.push(OsdMapBarrier({CONF: 61}), second)     # a second takeover: epoch 61 is newer than the wait
    until(reactor, lambda: second, "the second ack")
    assert second == [{"behind": {CONF: 61}}] and clients[0].calls == 1
    clients[0].reached.set()        # the first attempt ends: it began before epoch 61 existed, so one more runs
    until(reactor, lambda: not units[CONF].unit.becoming_ready, "serving again")
    assert clients[0].calls == 2



def test_a_push_got_late_holds_the_luns_at_once_before_any_later_command(node, reactor):
    """A worker whose loop was stuck gets the push past its deadline (counted from when it was sent): its LUNs are
    NOT READY before the handler returns, so no command served after it in that turn does I/O."""
    sync, clients, units, coordinator = node
    acks = Acks()
    coordinator.push(OsdMapBarrier({CONF: 80}, time.monotonic() - 10 * WAIT), acks)
    assert acks == [{"behind": {CONF: 80}}] and units[CONF].unit.becoming_ready
    assert_sense(units[CONF].run(TUR), S.NOT_READY, S.BECOMING_READY)
    clients[0].reached.set()
    until(reactor, lambda: not units[CONF].unit.becoming_ready, "serving again")


def test_a_sanitize_running_when_its_worker_falls_behind_writes_nothing_more_and_fails(node, reactor):
    """An OVERWRITE of two passes has its first write in flight when the worker is found behind: that one completes,
    nothing else is written (target/scsi/sanitize.py: failed, not paused), and once the map arrives the unit is in
    sanitize failure mode."""
    sync, clients, units, coordinator = node
    harness = units[CONF]
    parameters = bytes([0x02, 0, 0, 1, 0xAA])               # OVERWRITE COUNT 2, a one-byte pattern
    task = harness.run(bytes([0x48, 0x01, 0, 0, 0, 0, 0, 0, len(parameters), 0]), data_out=parameters, drain=False)
    assert [call[0] for call in harness.store.calls] == ["write"]
    acks = Acks()
    coordinator.push(OsdMapBarrier({CONF: 90}), acks)
    until(reactor, lambda: acks, "the ack")
    assert acks == [{"behind": {CONF: 90}}]
    harness.store.drain()                                   # the write in flight completes
    assert [call[0] for call in harness.store.calls] == ["write"]
    assert_sense(task, S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    clients[0].reached.set()
    until(reactor, lambda: not harness.unit.becoming_ready, "serving again")
    assert_sense(harness.run(TUR), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)


def test_a_barrier_pushed_again_holds_the_worker_that_connected_after_the_takeover_at_once(node, reactor, caplog):
    """`again` (coordinator/cluster.py: pushed to a worker alone, which connected after the takeover's push, its
    process started before it): its LUNs of the cluster named are NOT READY at once, whatever the push's time, until
    its clients have the map (logged as information: nothing is late), its waits counted from the push's arrival, not
    from the takeover's push an hour before."""
    sync, clients, units, coordinator = node
    caplog.set_level(logging.INFO)
    acks = Acks()
    coordinator.push(OsdMapBarrier({CONF: 70}, time.monotonic() - 3600, again=True), acks)
    assert acks == [{"behind": {CONF: 70}}] and units[CONF].unit.becoming_ready
    assert_sense(units[CONF].run(TUR), S.NOT_READY, S.BECOMING_READY)
    assert_good(units[OTHER].run(TUR))                      # a cluster the push did not name
    until(reactor, lambda: "still not at" in caplog.text, "the blocked attempt logged")
    blocked = re.search(r"\(epoch 70\) (\d+) s after the push", caplog.text)
    assert blocked and int(blocked[1]) < 100, caplog.text   # counted from its arrival (3600 s: the takeover's)
    clients[0].reached.set()
    until(reactor, lambda: not units[CONF].unit.becoming_ready, "serving")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "connected after a takeover's OSD map barrier (epoch 70)" in caplog.text
    again = Acks()                                          # (at the map now: acked at once)
    coordinator.push(OsdMapBarrier({CONF: 70}, time.monotonic(), again=True), again)
    assert again == [None] and not units[CONF].unit.becoming_ready
