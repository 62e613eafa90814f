"""coordinator/store_osdmap.py: the coordinator's RADOS client waits for a takeover's OSD map before a write, on real
threads, with stand-in clients (tests/osdmap_client.py)."""
import time

import pytest

from coordinator.store_osdmap import OsdMapWaits
from coordinator.unit_store import StoreBehind
from tests.osdmap_client import PATIENCE, Client

CONF, OTHER = "/etc/ceph/a.conf", "/etc/ceph/b.conf"
WAIT = 0.2                  # the deadline of an attempt that is to run out (1 s in production)


def test_no_takeover_no_wait():
    conn = Client(CONF)
    OsdMapWaits(WAIT).before_write(conn)
    assert conn.calls == 0


def test_a_write_after_a_takeover_waits_for_the_map_once():
    waits, conn = OsdMapWaits(PATIENCE), Client(CONF)
    waits.want({CONF: 12, OTHER: 3})
    conn.reached.set()
    waits.before_write(conn)
    waits.before_write(conn)
    assert conn.calls == 1 and not waits.waiting(conn.client)


def test_a_client_behind_holds_writes_without_waiting_again_until_the_map_arrives(caplog):
    waits, conn = OsdMapWaits(WAIT), Client(CONF)
    waits.want({CONF: 12})
    began = time.monotonic()
    with pytest.raises(StoreBehind, match="epoch 12"):
        waits.before_write(conn)
    assert WAIT <= time.monotonic() - began < PATIENCE
    began = time.monotonic()
    for _ in range(3):                  # the attempt still blocks: later writes only look
        with pytest.raises(StoreBehind):
            waits.before_write(conn)
    assert time.monotonic() - began < WAIT and conn.calls == 1 and waits.waiting(conn.client)
    assert caplog.text.count("not at the takeover's OSD map (epoch 12)") == 1       # logged once
    conn.reached.set()
    deadline = time.monotonic() + PATIENCE
    while waits.waiting(conn.client):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waits.before_write(conn)
    assert conn.calls == 1 and "writes go through again" in caplog.text
    waits.want({CONF: 13})              # a second takeover: a new attempt
    waits.wait_seconds = PATIENCE       # (one that gets through: a deadline no thread misses)
    waits.before_write(conn)
    assert conn.calls == 2


def test_a_failed_attempt_is_made_again_by_the_next_write(caplog):
    waits, conn = OsdMapWaits(PATIENCE), Client(CONF, failures=1)     # the failure is at once, the retry gets through
    waits.want({CONF: 5})
    conn.reached.set()
    with pytest.raises(StoreBehind, match="Connection timed out"):
        waits.before_write(conn)
    waits.before_write(conn)            # the retry
    assert conn.calls == 2 and "waiting for the takeover's OSD map (epoch 5) failed" in caplog.text


def test_only_the_clusters_fenced_wait():
    waits, conn = OsdMapWaits(WAIT), Client(OTHER)
    waits.want({CONF: 12})
    waits.before_write(conn)
    assert conn.calls == 0


def test_a_takeover_begins_every_clients_wait_at_once_and_reports_those_behind():
    """`at_takeover` (the store's thread, right after the takeover's `want`): the clients of the clusters named begin
    their waits together, not at their next write; those not at the map within the deadline are reported, and a
    write after it only looks at the attempt the takeover began."""
    waits = OsdMapWaits(WAIT)
    late, there, elsewhere = Client(CONF), Client(OTHER), Client("/etc/ceph/c.conf")
    there.reached.set()
    waits.want({CONF: 21, OTHER: 4})
    began = time.monotonic()
    behind = waits.at_takeover([late, there, elsewhere])
    assert WAIT <= time.monotonic() - began < PATIENCE
    assert list(behind) == [late.client] and "epoch 21" in behind[late.client]
    assert (late.calls, there.calls, elsewhere.calls) == (1, 1, 0)
    began = time.monotonic()
    with pytest.raises(StoreBehind):
        waits.before_write(late)
    assert time.monotonic() - began < WAIT and late.calls == 1     # the takeover's attempt, not a new one
    waits.before_write(there)                                       # at the map: no wait, no attempt
    assert there.calls == 1
    late.reached.set()
