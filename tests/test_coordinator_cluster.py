"""Two nodes' coordinators in this process, over a real CURVE-authenticated cluster bus on loopback: session
and reservation replication (snapshot, deltas, a lost delta, a restart), reinstatement across nodes, death
of a peer, the bus refusing a stranger's key or a forged node name, and LUN identities compared between peers."""
import logging
import os
from concurrent.futures import ThreadPoolExecutor
import socket
import struct
import subprocess
import time

import pytest
import zmq
import zmq.auth

from coordinator.bus import ClusterBus, ClusterBusError
from coordinator.cluster import Cluster
from coordinator.control import control_request
from coordinator.fencer import Fenced, Fencer
from coordinator.lun_identities import mismatches
from coordinator.endpoints import workers_endpoint
from coordinator.registry import SessionRegistry
from coordinator.messages import ReservationRequest, Takeover
from coordinator.unit_service import UnitAuthority, register_unit_handlers
from coordinator.schema import ACK, HELLO, NOTIFY, PUSH, WELCOME, decode, encode
from coordinator.service import CoordinatorService
from coordinator.sessions_service import register_session_handlers
from target.config import ClusterConfig
from tests.osdmap_client import PATIENCE, Client
from coordinator.unit_state import reservations as R

T = "iqn.2026-11.org.ringtgt:t"
NEXUS = f"iqn.x,i,0x000000000001,{T},t,0x0001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session(node, tsih=1, isid=0x1234, initiator="iqn.2026-11.org.example:host", portal="127.0.0.1:3260"):
    return {"initiator": initiator, "isid": isid, "tsih": tsih, "target": T, "portal": portal,
            "client": "127.0.0.1", "client_port": 40000 + tsih, "node": node, "origin": "w0.1", "worker": 0,
            "pid": 1, "login_time": 1.0}


class Node:
    def __init__(self, tmp_path, name, ports, keys, dead_after=0.3, rbd_pools=()):
        self.name = name
        other = next(n for n in ports if n != name)
        self.config = ClusterConfig(
            node=name, listen=f"tcp://127.0.0.1:{ports[name]}", peers=((other, f"tcp://127.0.0.1:{ports[other]}"),),
            curve_secret_key=str(keys / f"{name}.key_secret"), peer_public_keys=((other, str(keys / f"{other}.key")),),
            dead_after=dead_after)
        self.context = zmq.Context()
        state = tmp_path / f"{name}-{time.monotonic_ns()}"
        state.mkdir()
        self.state_dir = str(state)
        self.service = CoordinatorService(self.state_dir, context=self.context)
        self.registry = SessionRegistry()
        register_session_handlers(self.service, self.registry, name)
        self.authority = UnitAuthority([(T, 0)])
        register_unit_handlers(self.service, self.authority)
        self.cluster = Cluster(self.service, self.config, self.registry, self.authority,
                               fencer=Fencer(self.service, name, lambda: [list(pool) for pool in rbd_pools]))

    def close(self):
        self.cluster.close()
        self.service.close()
        self.context.destroy(linger=0)      # (not term(): a socket a failed test left open would hang it forever)


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir()
    for name in ("a", "b", "stranger"):
        zmq.auth.create_certificates(directory, name)
    return directory


@pytest.fixture
def nodes(tmp_path, keys):
    ports = {"a": free_port(), "b": free_port()}
    made = {name: Node(tmp_path, name, ports, keys) for name in ports}
    yield made, ports
    for node in made.values():
        node.close()


def pump(nodes, until, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        for node in nodes:
            node.service.run_once(0.005)


def test_sessions_and_reservations_replicate_both_ways(nodes):
    made, _ = nodes
    a, b = made["a"], made["b"]
    pump([a, b], lambda: a.cluster.peers.state("b") == b.cluster.peers.state("a") == "alive")
    a.registry.login(session("a"))
    pump([a, b], lambda: len(b.registry) == 1)
    assert b.registry.sessions()[0]["node"] == "a"
    a.authority.request(ReservationRequest(T, 0, "out", NEXUS, struct.pack(">BBB2xIB", 0x5F, R.REGISTER, 0, 24, 0),
                                           struct.pack(">QQ4xB3x", 0, 7, 0)), "w0.1")
    pump([a, b], lambda: b.authority.units[(T, 0)].reservations.keys == {NEXUS: 7})
    assert b.authority.version == a.authority.version
    a.registry.logout("a", "w0.1", 1)
    pump([a, b], lambda: len(b.registry) == 0)


def test_a_lost_delta_is_repaired_by_a_snapshot(nodes):
    made, _ = nodes
    a, b = made["a"], made["b"]
    pump([a, b], lambda: a.cluster.peers.state("b") == b.cluster.peers.state("a") == "alive")
    a.registry.restore({"version": 1, "x": session("a", tsih=5)}, node="a")    # changed without a delta …
    a.cluster.sent += 1                                                       # … as if the delta was lost
    pump([a, b], lambda: [s["tsih"] for s in b.registry.sessions()] == [5])  # the heartbeat tells, b asks


def test_a_restarted_peer_gets_the_state_again_and_a_dead_one_is_noticed(tmp_path, keys, nodes):
    made, ports = nodes
    a, b = made["a"], made["b"]
    pump([a, b], lambda: a.cluster.peers.state("b") == "alive")
    a.registry.login(session("a"))
    b.close()
    pump([a], lambda: a.cluster.peers.state("b") == "dead")
    made["b"] = b = Node(tmp_path, "b", ports, keys)
    pump([a, b], lambda: len(b.registry) == 1 and a.cluster.peers.state("b") == "alive")


def test_a_login_on_one_node_ends_the_session_it_reinstates_on_the_other(nodes):
    made, _ = nodes
    a, b = made["a"], made["b"]
    worker = b.context.socket(zmq.DEALER)                    # a worker of node b, by the coordinator's protocol
    worker.routing_id = b"w0.%d" % os.getpid()
    worker.connect(workers_endpoint(b.state_dir))
    worker.send(encode(HELLO, body={"pid": os.getpid(), "index": 0}))
    pump([a, b], lambda: worker.poll(0) and decode(worker.recv()).type == WELCOME)
    pump([a, b], lambda: a.cluster.peers.state("b") == b.cluster.peers.state("a") == "alive")
    b.registry.login({**session("b", tsih=9), "origin": "w0.%d" % os.getpid()})
    pump([a, b], lambda: len(a.registry) == 1)
    a.registry.login(session("a", tsih=3))                  # same initiator, ISID and target
    pushes = []
    pump([a, b], lambda: worker.poll(0) and pushes.append(decode(worker.recv())) or
         any(p.type == PUSH and p.kind == "session.end" for p in pushes))
    end = next(p for p in pushes if p.kind == "session.end")
    assert end.body == {"origin": "w0.%d" % os.getpid(), "tsih": 9}
    assert [s["node"] for s in b.registry.sessions()] == ["a"]
    worker.close()


def test_the_bus_refuses_a_strangers_key_and_a_forged_name(nodes, keys, caplog):
    made, ports = nodes
    a, b = made["a"], made["b"]
    pump([a, b], lambda: a.cluster.peers.state("b") == "alive")
    context = zmq.Context()
    for certificate, claimed in (("stranger", "b"), ("b", "c")):
        public, secret = zmq.auth.load_certificate(keys / f"{certificate}.key_secret")
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = zmq.auth.load_certificate(keys / "a.key")[0]
        sock.connect(f"tcp://127.0.0.1:{ports['a']}")
        sock.send(encode(NOTIFY, 0, "cluster.sessions", {"node": claimed, "incarnation": "x", "seq": 1,
                                                          "delta": {"op": "login", "session": session(claimed)}}))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            a.service.run_once(0.01)
        sock.close()
    context.term()
    assert len(a.registry) == 0
    assert "refused a CURVE connection" in caplog.text and "not a peer's notification" in caplog.text


def test_a_peers_malformed_state_is_logged_and_dropped(nodes, caplog):
    made, _ = nodes
    a, b = made["a"], made["b"]
    pump([a, b], lambda: a.cluster.peers.state("b") == b.cluster.peers.state("a") == "alive")
    for kind, body in (("cluster.snapshot", {"incarnation": "x", "seq": 0, "sessions": ["not", "a", "map"],
                                            "reservations": {}}),
                       ("cluster.sessions", {"incarnation": "x"}),
                       ("cluster.nonsense", {})):
        b.cluster.bus.send("a", kind, body)
    pump([a, b], lambda: caplog.text.count("not applied") == 3)
    assert a.cluster.peers.state("b") == "alive" and len(a.registry) == 0


def test_a_listen_address_that_is_not_ours_is_a_clear_error(tmp_path, keys):
    config = ClusterConfig(node="a", listen="tcp://192.0.2.77:5550", peers=(("b", "tcp://127.0.0.1:1"),),
                           dead_after=0.3)
    context = zmq.Context()
    service = CoordinatorService(str(tmp_path), context=context)
    with pytest.raises(ClusterBusError, match="cannot listen on tcp://192.0.2.77:5550"):
        ClusterBus(service, config, lambda *message: None)
    service.close()
    context.destroy(linger=0)


def test_taking_over_a_live_peer_gets_its_table_back(nodes):
    made, _ = nodes
    a, b = made["a"], made["b"]
    pump([a, b], lambda: a.cluster.peers.state("b") == b.cluster.peers.state("a") == "alive")
    b.registry.login(session("b", tsih=4, portal="192.0.2.100:3260"))    # a VIP that is not here
    pump([a, b], lambda: len(a.registry) == 1)
    result = a.cluster.takeover("b")                       # nothing of b's is on a local address here
    assert (result.peer_state, result.sessions, result.tickled) == ("alive", 1, 0)
    pump([a, b], lambda: len(a.registry) == 1)             # b is alive: it sends its sessions again


def test_lun_identities_that_differ_between_peers_are_logged(nodes, caplog):
    made, _ = nodes
    a, b = made["a"], made["b"]
    a.cluster.identities = lambda: [[T, 0, "S0", "6" * 32, 1 << 20], [T, 1, "S1", "6" + "1" * 31, 4096]]
    b.cluster.identities = lambda: [[T, 0, "S0", "6" * 32, 2 << 20]]

    def warnings():
        return sorted(r.getMessage() for r in caplog.records if "an initiator failing over" in r.getMessage())

    with caplog.at_level(logging.WARNING, logger="ringtgt.coordinator"):
        pump([a, b], lambda: len(warnings()) >= 4)
    suffix = ": an initiator failing over would find another logical unit"
    assert warnings() == [f"cluster: LUN 0 of {T}: size 1048576 here, 2097152 on peer b{suffix}",
                          f"cluster: LUN 0 of {T}: size 2097152 here, 1048576 on peer a{suffix}",
                          f"cluster: LUN 1 of {T} is served by peer a, not here{suffix}",
                          f"cluster: LUN 1 of {T} is served here, not by peer b{suffix}"]
    assert mismatches(a.cluster.identities(), a.cluster.identities(), "b") == []
    b.cluster.identities = lambda: [[T, 0, "S9", "6" * 32, 1 << 20]]     # b reloaded another serial
    with caplog.at_level(logging.WARNING, logger="ringtgt.coordinator"):
        b.cluster.announce_identities()
        pump([a, b], lambda: any("serial 'S0' here, 'S9' on peer b" in message for message in warnings()))


def test_a_takeover_whose_fencing_fails_is_refused_unless_told_unfenced(tmp_path, keys):
    """Node a serves an RBD LUN whose cluster cannot be reached (its ceph.conf is missing): fencing b fails in the
    fencing process, so `ringtgt takeover b` is refused (b's sessions kept), and done with --unfenced."""
    ports = {"a": free_port(), "b": free_port()}
    a = Node(tmp_path, "a", ports, keys, rbd_pools=[(str(tmp_path / "missing.conf"), None, None, "rbd")])
    b = Node(tmp_path, "b", ports, keys)
    try:
        pump([a, b], lambda: a.cluster.peers.state("b") == "alive")
        b.registry.login(session("b", tsih=4, portal="192.0.2.100:3260"))
        pump([a, b], lambda: len(a.registry) == 1)
        b.close()
        for unfenced in (False, True):
            with ThreadPoolExecutor(1) as pool:
                reply = pool.submit(control_request, a.state_dir, Takeover("b", unfenced), 30)
                pump([a], reply.done, timeout=30)
                report = reply.result()
            assert "missing.conf" in report.fence_error and report.fenced == [], report
            assert report.taken is unfenced, report
            assert len(a.registry) == (0 if unfenced else 1)
    finally:
        a.close()


def test_a_takeover_goes_on_only_once_every_worker_has_the_osd_map_of_the_blocklist(nodes):
    """After fencing (which reports the blocklist's OSD map epoch) every worker of the node gets an OsdMapBarrier push;
    the takeover's next step (the tickles) waits for their acks, and gets the workers not at the map: those whose
    ack said so, and those that did not ack within the ack deadline."""
    made, _ = nodes
    a = made["a"]
    worker = a.context.socket(zmq.DEALER)
    worker.routing_id = b"w0.%d" % os.getpid()
    worker.connect(workers_endpoint(a.state_dir))
    worker.send(encode(HELLO, body={"pid": os.getpid(), "index": 0}))
    pump([a], lambda: worker.poll(0) and decode(worker.recv()).type == WELCOME)
    went_on = []
    fenced = Fenced(["192.0.2.9:0/1"], epochs={"/etc/ceph/ceph.conf": 42})
    pushes = []

    def pushed():
        while worker.poll(0):
            pushes.append(decode(worker.recv()))
        return pushes

    for acked, ack_body in enumerate(({}, {"behind": {"/etc/ceph/ceph.conf": 42}})):
        pushes.clear()
        a.cluster._after_barrier(fenced, went_on.append)
        pump([a], pushed)
        assert (pushes[0].type, pushes[0].kind, pushes[0].body["epochs"]) == (PUSH, "cluster.osdmap",
                                                                              {"/etc/ceph/ceph.conf": 42})
        assert 0 < pushes[0].body["sent"] <= time.monotonic()      # a worker's deadline counts from there
        for _ in range(20):
            a.service.run_once(0.005)
        assert len(went_on) == acked            # not before the worker's ack
        worker.send(encode(ACK, pushes[0].id, body=ack_body))
        pump([a], lambda acked=acked: len(went_on) > acked)
    # the second ack said the worker's clients were not at the map yet: the takeover's report names it
    assert went_on == [{}, {f"worker 0 (pid {os.getpid()})": "not at OSD map epoch 42 of /etc/ceph/ceph.conf yet: "
                                                              "its RBD LUNs there answer NOT READY (becoming ready) "
                                                              "until it is"}]
    a.service.ack_timeout = 0.3                 # a worker that does not ack at all: named too, not waited for
    a.cluster._after_barrier(fenced, went_on.append)
    pump([a], lambda: len(went_on) > 2)
    assert went_on[2] == {f"worker 0 (pid {os.getpid()})": "no ack within 0.3 s: not known to be at the map; its "
                                                              "RBD LUNs there answer NOT READY (becoming ready) from "
                                                              "the moment it takes the push, before any login after "
                                                              "it, until it is"}
    a.cluster._after_barrier(Fenced(), went_on.append)      # nothing fenced: at once
    assert went_on[3:] == [{}]
    # a worker connecting after the takeover gets its barrier again, alone, before its WELCOME (so before its unit
    # states), even while another push waits for acks: here a fourth takeover's, which w0 has not acked yet
    worker.send(encode(NOTIFY, 0, "nothing.known", {}))    # w0 answers again: waited for
    pump([a], lambda: not a.service._lagging)
    a.service.ack_timeout = 10 * PATIENCE
    pushed()                                                # (the unacked third takeover's push)
    pushes.clear()
    a.cluster._after_barrier(fenced, went_on.append)
    pump([a], pushed)
    late = a.context.socket(zmq.DEALER)
    late.linger = 0
    late.routing_id = b"w1.%d" % os.getpid()                 # this process: started before the push
    late.connect(workers_endpoint(a.state_dir))
    got = []

    def received():
        while late.poll(0):
            got.append(decode(late.recv()))
        return got and got[-1].type == WELCOME
    started_later = None
    try:
        late.send(encode(HELLO, body={"pid": os.getpid(), "index": 1}))
        pump([a], received)
        assert [(m.type, m.kind) for m in got] == [(PUSH, "cluster.osdmap"), (WELCOME, "")], got
        assert got[0].body["epochs"] == {"/etc/ceph/ceph.conf": 42} and got[0].body["again"]
        assert got[0].body["sent"] == pushes[0].body["sent"]    # the last takeover's push time
        assert len(went_on) == 4                                # w0's ack still awaited; the late one's is not
        worker.send(encode(ACK, pushes[0].id, body={}))
        pump([a], lambda: len(went_on) == 5)
        assert len(pushes) == 1 and not pushed()[1:]            # w0 had the takeover's push, not the late one's
        # a worker whose process started after the push: its clients connected after the blocklist, nothing pushed
        time.sleep(0.05)                                        # 5 clock ticks: its start time is past the push's
        started_later = subprocess.Popen(["sleep", "60"])
        fresh = a.context.socket(zmq.DEALER)
        fresh.linger = 0
        fresh.routing_id = b"w2.%d" % started_later.pid
        fresh.connect(workers_endpoint(a.state_dir))
        got.clear()
        late, fresh = fresh, late                               # (`received` reads `late`; both closed below)
        late.send(encode(HELLO, body={"pid": started_later.pid, "index": 2}))
        pump([a], received)
        assert [(m.type, m.kind) for m in got] == [(WELCOME, "")], got
    finally:
        late.close()
        worker.close(linger=0)
        if started_later is not None:
            fresh.close()
            started_later.kill()
            started_later.wait()


def test_a_takeover_names_the_coordinator_whose_own_rados_client_is_not_at_the_map(nodes):
    """The coordinator's own RADOS client (the units' state objects) begins its wait for the blocklist's OSD map at
    the barrier, beside the workers' (coordinator/store_osdmap.py): one not there within its deadline is named in the
    takeover's `behind`, as a worker is; one there is not. (A stand-in client, tests/osdmap_client.py; no worker.)"""
    from coordinator.rados_store import RadosStateClient
    from coordinator.store_osdmap import WAIT_SECONDS
    made, _ = nodes
    a = made["a"]
    store = RadosStateClient()
    store.attach(a.service)
    a.authority.stores._rados = store
    conn = Client("/etc/ceph/ceph.conf")
    store._connections[conn.client] = conn      # as its first read of a unit object there would have made it
    went_on = []
    try:
        a.cluster._after_barrier(Fenced(["192.0.2.9:0/1"], epochs={"/etc/ceph/ceph.conf": 42}), went_on.append)
        began = time.monotonic()
        pump([a], lambda: went_on)
        assert WAIT_SECONDS <= time.monotonic() - began < PATIENCE
        assert went_on == [{f"coordinator (pid {os.getpid()})":
                            "RADOS client client.admin of /etc/ceph/ceph.conf: not at the takeover's OSD map (epoch "
                            "42) yet: waiting for it (its writes of the units' state objects wait until it is: a PR "
                            "OUT that must save answers NOT READY, becoming ready)"}]
        assert conn.calls == 1                  # begun at the takeover, not at a write
        conn.reached.set()                      # the map arrives; a second takeover then waits for its own
        deadline = time.monotonic() + PATIENCE
        while store._maps.waiting(conn.client):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        a.cluster._after_barrier(Fenced(["192.0.2.9:0/1"], epochs={"/etc/ceph/ceph.conf": 43}), went_on.append)
        pump([a], lambda: len(went_on) > 1)
        assert went_on[1] == {} and conn.calls == 2
    finally:
        conn.reached.set()
        a.authority.stores._rados = None
        store.close()
