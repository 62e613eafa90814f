"""coordinator.registry: login/logout, reinstatement across workers and nodes, worker loss, resync,
snapshot/restore and deltas applied on a peer."""
import pytest

from coordinator.registry import RegistryError, SessionRegistry


def record(initiator="iqn.2026-11.org.example:host", isid=0x23D000000001, tsih=1025, node="a", worker=0,
           target="iqn.2026-11.org.ringtgt:t", client_port=40000, login_time=1000.0):
    return {"initiator": initiator, "isid": isid, "tsih": tsih, "target": target, "portal": "192.0.2.1:3260",
            "client": "192.0.2.50", "client_port": client_port, "node": node, "origin": f"w{worker}.{100 + worker}",
            "worker": worker, "pid": 100 + worker, "login_time": login_time}


@pytest.fixture
def registry():
    return SessionRegistry()


def test_login_logout(registry):
    first, second = record(), record(initiator="iqn.2026-11.org.example:other", tsih=1026, login_time=1001.0)
    assert registry.login(first) == [] and registry.login(second) == []
    assert registry.sessions() == [first, second]
    assert registry.logout("a", first["origin"], 1025) == first
    assert registry.logout("a", first["origin"], 1025) is None
    assert registry.sessions() == [second]


def test_same_initiator_isid_and_target_reinstates_across_workers_and_nodes(registry):
    old = record(worker=0, tsih=1025)
    registry.login(old)
    new = record(worker=1, tsih=2049, login_time=1002.0)
    assert registry.login(new) == [old]
    assert registry.sessions() == [new]
    elsewhere = record(node="b", worker=0, tsih=1030, login_time=1003.0)
    assert registry.login(elsewhere) == [new]
    assert registry.sessions() == [elsewhere]
    # the old worker's late logout of a session already replaced changes nothing
    assert registry.logout("a", old["origin"], 1025) is None
    assert registry.sessions() == [elsewhere]


def test_other_isid_or_target_is_another_session(registry):
    registry.login(record())
    registry.login(record(isid=0x23D000000002, tsih=1026))
    registry.login(record(target="iqn.2026-11.org.ringtgt:u", tsih=1027))
    assert len(registry) == 3


def test_worker_gone_and_resync(registry):
    registry.login(record(worker=0, tsih=1025))
    registry.login(record(worker=0, tsih=1026, isid=2))
    kept = record(worker=1, tsih=2049, isid=3)
    registry.login(kept)
    assert len(registry.drop_origin("a", "w0.100")) == 2
    assert registry.sessions() == [kept]
    again = record(worker=1, tsih=2050, isid=4)
    registry.resync("a", "w1.101", [again])
    assert registry.sessions() == [again]
    with pytest.raises(RegistryError, match="in a resync of a/w1.101"):
        registry.resync("a", "w1.101", [record(worker=0)])


@pytest.mark.parametrize("change, message", [
    ({"isid": "1"}, "'isid' missing or of the wrong type"),
    ({"tsih": True}, "'tsih' missing or of the wrong type"),
    ({"login_time": None}, "'login_time' missing or of the wrong type"),
    ({"colour": "red"}, "unknown session field"),
])
def test_malformed_records_are_refused(registry, change, message):
    with pytest.raises(RegistryError, match=message):
        registry.login({**record(), **change})
    assert len(registry) == 0


def test_deltas_replayed_on_a_peer_give_the_same_table(registry):
    deltas = []
    registry.on_change(deltas.append)
    registry.login(record(worker=0, tsih=1025))
    registry.login(record(worker=1, tsih=2049))          # reinstates: logout of the first, then login
    registry.login(record(worker=1, tsih=2050, isid=9))
    registry.logout("a", "w1.101", 2050)
    assert [d["op"] for d in deltas] == ["login", "logout", "login", "login", "logout"]
    peer = SessionRegistry()
    for delta in deltas:
        peer.apply(delta)
    assert peer.sessions() == registry.sessions()
    with pytest.raises(RegistryError, match="unknown registry delta op"):
        peer.apply({"op": "rename", "session": record()})


def test_snapshot_restore_per_node(registry):
    registry.login(record(node="a", tsih=1))
    registry.login(record(node="b", tsih=2, isid=2))
    peer = SessionRegistry()
    peer.login(record(node="a", tsih=7, isid=7))             # stale: replaced by a's snapshot
    peer.login(record(node="c", tsih=3, isid=3))             # another node's: kept
    deltas = []
    peer.on_change(deltas.append)
    peer.restore(registry.snapshot(node="a"), node="a")
    assert [(r["node"], r["tsih"]) for r in peer.sessions()] == [("a", 1), ("c", 3)]
    assert deltas == [], "restoring a peer's state emits no deltas"
    peer.restore(registry.snapshot())
    assert peer.sessions() == registry.sessions()
    with pytest.raises(RegistryError, match="another node's sessions"):
        peer.restore(registry.snapshot(), node="a")
    with pytest.raises(RegistryError, match="not a version 1"):
        peer.restore({"version": 99})


def test_snapshot_has_one_key_per_session(registry):
    registry.login(record(tsih=1))
    before = registry.snapshot()
    registry.login(record(tsih=2, isid=2))
    after = registry.snapshot()
    assert set(after) - set(before) == {"a/w0.100/2"}
    assert after["a/w0.100/1"] == before["a/w0.100/1"] == record(tsih=1)
