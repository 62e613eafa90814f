"""A node's part in its cluster: heartbeats, replication of the session table and of the shared SCSI state,
and takeover with tickle ACKs.

Over the cluster bus (bus.py) every coordinator sends, to every peer:
    cluster.heartbeat     {incarnation, sent}         every dead_after / 5 seconds
    cluster.snapshot      {incarnation, seq, sessions, reservations, luns}   to a peer that came up or asked
    cluster.sessions      {incarnation, seq, delta}   a session of this node logged in or out (registry.py)
    cluster.reservations  {incarnation, seq, state}   the reservation authority's whole state after a change
    cluster.want_snapshot {}                          "I lost some of your state messages"
    cluster.identities    {luns}                      after a reload: this node's LUNs [target, lun, serial, naa,
                                                      size] (also in every snapshot); a peer logs what differs
                                                      from its own (coordinator/lun_identities.py)
Sessions are replicated by node: each node's own sessions go to the others, who list them (`ringtgt sessions`
shows the whole cluster) and keep them for a takeover. A login whose initiator, ISID and target match a session
on another node ends that session there (reinstatement across nodes). The SCSI state (reservations,
registrations, unit attentions, mode pages, media, the initiators already greeted) is one state for the whole
cluster: the node where it changes sends all of it with a version number, a peer adopts it if the version is
newer than its own and pushes it to its workers. So one node serves a logical unit at a time (the VIP's
owner); changes through two nodes at once keep whichever came last.

Takeover of a dead peer, once its VIPs are local (`takeover(peer)`: `ringtgt takeover PEER`, or by itself with
`takeover = "builtin"`, which first adds the VIPs and sends gratuitous ARP): every connection the peer held on an
address now local gets a tickle ACK, in TICKLE_ROUNDS rounds TICKLE_INTERVAL apart, and the peer's sessions leave
the table. Where the node serves RBD LUNs, the peer is fenced first (coordinator/fencer.py: its RADOS clients
blocklisted), and then every worker of this node brings its own RADOS clients to the OSD map with that blocklist (an
OsdMapBarrier push, acked once they have it: target/osdmap_sync.py) before anything is tickled (and, built in,
before the VIPs are added), so the writes of the initiators coming back are applied after the fenced clients' (or
those are refused); the coordinator's own client (the units' state objects) begins its wait for that map then too,
and every write there waits for it (coordinator/store_osdmap.py), its loop never waiting. A worker whose clients
are not there within its deadline acks saying so, its RBD LUNs of that cluster NOT READY until they are; the takeover
goes on and its report names those workers, any that did not ack within the service's ack deadline (its own
deadline then passed: NOT READY from the moment it takes the push), and the coordinator if its client is not there
within its wait. A worker that connects later, its process started before the push, gets the barrier again, alone,
before its WELCOME (`_worker_joined`).
If fencing fails, `ringtgt takeover` refuses (nothing tickled, the peer's sessions kept, so that running it again
does it all) unless told `--unfenced`; built-in takeover goes on, with an error logged. A node that was fenced itself
takes over no one (built-in or not, `--unfenced` or not). Without RBD LUNs nothing is fenced: the dead node must
really be dead (or cut off).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable

from . import procinfo
from .bus import ClusterBus
from .fencer import Fenced, Fencer
from .lun_identities import mismatches
from .messages import EndSessions, Nothing, OsdMapBarrier, SessionEnd, StateAdopted, Takeover, TakeoverReport
from .peers import ALIVE, HEARTBEATS_PER_DEADLINE, Peers
from .registry import SNAPSHOT_VERSION, RegistryError, checked, reinstatement_key
from .service import Acks, Deferred, Reply
from .tickle import send_garp, send_tickles

log = logging.getLogger("ringtgt.coordinator")

HEARTBEAT = "cluster.heartbeat"
SNAPSHOT = "cluster.snapshot"
SESSIONS = "cluster.sessions"
RESERVATIONS = "cluster.reservations"
WANT_SNAPSHOT = "cluster.want_snapshot"
IDENTITIES = "cluster.identities"
TICKLE_ROUNDS = 3
TICKLE_INTERVAL = 0.05


class Cluster:
    def __init__(self, service, config, registry, authority, identities=list, fencer: Fencer | None = None):
        """`identities()`: this node's LUN identities now (lun_identities.py); `fencer`: fences a peer through Ceph
        before its takeover (None: nothing to fence)."""
        self.service = service
        self.fencer = fencer
        self.identities = identities
        self.mismatches: dict[str, list[str]] = {}      # by peer: what differed when we last compared
        self.config = config
        self.node = config.node
        self.registry = registry
        self.authority = authority
        self.incarnation = os.urandom(8).hex()
        self.sent = 0                           # sequence number of the last state message sent
        self.peers = Peers([name for name, _ in config.peers], config.dead_after)
        self.bus = ClusterBus(service, config, self._received)
        registry.on_change(self._session_changed)
        authority.on_change(self._reservations_changed)
        service.register(Takeover, self._takeover_request)
        service.register(StateAdopted, self._adopted)
        service.register(EndSessions, self._end_sessions)
        service.register(OsdMapBarrier, self._barrier)
        service.on_worker_joined(self._worker_joined)
        self._barrier_epochs: dict[str, int] = {}     # every takeover's blocklist (newest epoch per cluster) …
        self._barrier_sent = 0.0                      # … when its barrier was pushed (monotonic) …
        self._barrier_booted = 0.0                    # … and the same moment in seconds after boot (procinfo)
        self._beat()

    def close(self) -> None:
        self.bus.close()

    # -- sending ----------------------------------------------------------------------------------------------
    def _beat(self) -> None:
        self.bus.broadcast(HEARTBEAT, {"incarnation": self.incarnation, "sent": self.sent})
        for peer in self.peers.expired(time.monotonic()):
            self._peer_died(peer)
        self.service.call_later(self.config.dead_after / HEARTBEATS_PER_DEADLINE, self._beat)

    def _state_message(self, kind: str, body: dict) -> None:
        self.sent += 1
        self.bus.broadcast(kind, {**body, "incarnation": self.incarnation, "seq": self.sent})

    def _session_changed(self, delta: dict) -> None:
        if delta["session"]["node"] == self.node:
            self._state_message(SESSIONS, {"delta": delta})

    def _reservations_changed(self) -> None:
        self._state_message(RESERVATIONS, {"state": self.authority.snapshot()})

    def announce_identities(self) -> None:
        """After a reload: every peer compares our LUNs with its own."""
        self.bus.broadcast(IDENTITIES, {"luns": self.identities()})

    def _send_snapshot(self, peer: str) -> None:
        self.bus.send(peer, SNAPSHOT, {"incarnation": self.incarnation, "seq": self.sent,
                                       "sessions": self.registry.snapshot(self.node),
                                       "reservations": self.authority.snapshot(), "luns": self.identities()})

    def _compare(self, peer: str, luns: list) -> None:
        """Log what differs between our LUNs and the peer's, once (each snapshot and reload compares again)."""
        found = mismatches(self.identities(), luns, peer)
        if found != self.mismatches.get(peer, []):
            for mismatch in found:
                log.warning("cluster: %s: an initiator failing over would find another logical unit", mismatch)
        self.mismatches[peer] = found

    # -- receiving --------------------------------------------------------------------------------------------
    def _received(self, peer: str, kind: str, body: dict) -> None:
        try:
            self._apply(peer, kind, body)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:    # malformed; RegistryError is a ValueError
            log.warning("cluster bus: %s from %s not applied: %r", kind, peer, exc)

    def _apply(self, peer: str, kind: str, body: dict) -> None:
        if kind == HEARTBEAT:
            up, lost = self.peers.heard(peer, time.monotonic(), body["incarnation"], body["sent"])
            if up:
                log.info("cluster: peer %s is up (incarnation %s)", peer, body["incarnation"])
                self._send_snapshot(peer)
            if lost:
                self.bus.send(peer, WANT_SNAPSHOT, {})
        elif kind == WANT_SNAPSHOT:
            self._send_snapshot(peer)
        elif kind == IDENTITIES:
            self._compare(peer, body["luns"])
        elif kind == SNAPSHOT:
            sessions = body["sessions"]
            self._end_reinstated([r for key, r in sessions.items() if key != "version"], peer)
            self.registry.restore(sessions, node=peer)
            self._adopt(body["reservations"])
            self.peers.restored(peer, body["incarnation"], body["seq"])
            if "luns" in body:
                self._compare(peer, body["luns"])
        elif kind in (SESSIONS, RESERVATIONS):
            if not self.peers.accept(peer, body["incarnation"], body["seq"]):
                self.bus.send(peer, WANT_SNAPSHOT, {})
            elif kind == SESSIONS:
                delta = body["delta"]
                if delta.get("op") == "login":
                    self._end_reinstated([delta.get("session")], peer)
                self.registry.apply(delta)
            else:
                self._adopt(body["state"])
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _end_reinstated(self, records: list, peer: str) -> None:
        """A peer's sessions that reinstate sessions of this node: those end here (RFC 7143 §6.3.5)."""
        ended = []
        for record in map(checked, records):
            if record["node"] != peer:
                raise RegistryError(f"{peer} sent a session of node {record['node']!r}")
            local = self.registry.find(reinstatement_key(record))
            if local is not None and local["node"] == self.node:
                ended.append({"origin": local["origin"], "tsih": local["tsih"]})
        if ended:
            self.service.submit(EndSessions(ended))

    def _adopt(self, state: dict) -> None:
        if self.authority.adopt(state):
            self.service.submit(StateAdopted())

    # -- internal requests (their broadcasts reach this node's workers) -----------------------------------------
    def _adopted(self, message: StateAdopted, origin: str) -> Reply:
        return Reply(Nothing(), self.authority.views_of_every_unit())

    def _barrier(self, message: OsdMapBarrier, origin: str) -> Reply:
        """Pushed now, with the time it goes out (it may have waited in the queue behind another push's acks)."""
        self._barrier_sent = time.monotonic()
        self._barrier_booted = time.clock_gettime(time.CLOCK_BOOTTIME)
        return Reply(Nothing(), [dataclasses.replace(message, sent=self._barrier_sent)])

    def _end_sessions(self, message: EndSessions, origin: str) -> Reply:
        return Reply(Nothing(), [SessionEnd(session["origin"], session["tsih"]) for session in message.sessions])

    # -- takeover ---------------------------------------------------------------------------------------------
    def _peer_died(self, peer: str) -> None:
        log.warning("cluster: peer %s silent for %.2f s, taken for dead", peer, self.config.dead_after)
        if self.config.takeover == "builtin":
            def fenced(result: Fenced | None) -> None:
                if result is not None and result.refused:
                    log.error("cluster: no takeover of %s: %s", peer, result.error)
                    return
                if result is not None and result.error:
                    log.error("cluster: fencing %s failed: %s; taking over anyway (built-in takeover)", peer,
                              result.error)
                def take(behind: dict[str, str]) -> None:   # the VIPs too only once the workers have the map
                    self._take_vips()
                    self.takeover(peer, result, behind)
                self._after_barrier(result, take)
            self._fence(peer, fenced)
        else:
            log.warning("cluster: once %s is fenced and its VIPs are here, run `ringtgt takeover %s`", peer, peer)

    def _take_vips(self) -> None:
        interface = self.config.vip_interface
        for vip in self.config.vips:
            address = vip.split("/")[0]
            if not is_local(address):
                added = subprocess.run(["ip", "addr", "add", vip, "dev", interface], capture_output=True, text=True)
                if added.returncode != 0:
                    log.error("cluster: could not add VIP %s to %s: %s", vip, interface, added.stderr.strip())
                    continue
            send_garp(interface, address)
            log.info("cluster: VIP %s is on %s, gratuitous ARP sent", vip, interface)

    def _fence(self, peer: str, then: Callable[[Fenced | None], None]) -> None:
        """then(what fencing `peer` did), or then(None) at once when there is nothing to fence."""
        if self.fencer is None or not self.fencer.needed():
            then(None)
            return
        log.info("cluster: fencing %s: blocklisting its RADOS clients", peer)
        self.fencer.fence(peer, then)

    def _after_barrier(self, fenced: Fenced | None, then: Callable[[dict[str, str]], object]) -> None:
        """then(behind), once every worker's RADOS clients have the OSD map of the blocklist fencing reports, or the
        worker acked that they are not there yet (its own deadline, shorter than the service's ack deadline: see
        target/osdmap_sync.py), and the coordinator's own client (the units' state objects) has it or is known not
        to within its wait (coordinator/store_osdmap.py), both waits beginning now; at once when nothing was fenced.
        `behind`: by worker (and the coordinator), why it is not known to be at the map (its ack said so, or it did
        not ack: logged by the service, not waited for)."""
        if fenced is None or not fenced.epochs:
            then({})
            return
        parts: dict[str, dict[str, str]] = {}

        def answered(part: str, behind: dict[str, str]) -> None:
            parts[part] = behind
            if len(parts) == 2:
                then({**parts["workers"], **parts["coordinator"]})
        self.authority.stores.osdmap_barrier(fenced.epochs, lambda clients: answered("coordinator",
                                                                                     self._store_behind(clients)))
        for cluster, epoch in fenced.epochs.items():
            self._barrier_epochs[cluster] = max(self._barrier_epochs.get(cluster, 0), epoch)
        self.service.submit(OsdMapBarrier(fenced.epochs, time.monotonic()),
                            then=lambda acks: answered("workers", self._behind(acks)))

    def _worker_joined(self, origin: str) -> None:
        """A worker that connects after a takeover's barrier but whose process started before it (one whose loop
        had not reached its HELLO yet, opening its images: its clients may have connected before the blocklist) gets
        it too, alone (`push_to`), before its WELCOME whatever the service's queue holds, so before its unit states
        and so before it accepts anyone; `again`: its RBD LUNs there are NOT READY (becoming ready) at once, until
        its clients have the map.

        A worker process started after the push gets nothing: every RADOS client it has connected after fencing read
        the blocklist's epoch back from the monitors (fencing.blocklist_epoch), and a client's first OSD map is the
        one its monitor has committed then, which has it (the quorum committed it before the blocklist command
        returned; a member learns a commit with the leader's next message). The one window left, a quorum member
        that has not had that message yet, is the one `rados_wait_for_latest_osdmap` leaves as well (it asks a
        monitor for its latest epoch). That is also why the entries are never dropped: a process started before the
        push may join at any later time (the coordinator does not know the processes that have not said HELLO), and
        only the start times (tick-rounded: one started in the push's tick counts as before) tell the two apart; for
        a worker started later they cost a look at /proc and nothing else."""
        info = self.service.workers.get(origin)
        if not self._barrier_epochs or info is None:
            return
        began = procinfo.started(info.pid)
        if began is not None and began > self._barrier_booted:
            return
        log.info("cluster: worker %s (started before the takeover's OSD map barrier) connected after it: pushed it "
                 "again, to it", origin)
        self.service.push_to(origin, OsdMapBarrier(dict(self._barrier_epochs), self._barrier_sent, again=True))

    def _behind(self, acks: Acks) -> dict[str, str]:
        """The workers an OsdMapBarrier's acks leave not known to be at the map, and why."""
        def name(origin: str) -> str:
            info = self.service.workers.get(origin)
            return f"worker {info.index} (pid {info.pid})" if info is not None else origin
        behind = {}
        for origin, said in acks.said.items():
            epochs = said.get("behind") or {}
            if epochs:
                behind[name(origin)] = "not at " + ", ".join(f"OSD map epoch {epoch} of {conf}"
                                                             for conf, epoch in sorted(epochs.items())) + (
                    " yet: its RBD LUNs there answer NOT READY (becoming ready) until it is")
        for origin in acks.missing:
            behind[name(origin)] = (f"no ack within {self.service.ack_timeout:g} s: not known to be at the map; "
                                    "its RBD LUNs there answer NOT READY (becoming ready) from the moment it takes the "
                                    "push, before any login after it, until it is")
        for worker, why in behind.items():
            log.error("cluster: takeover: %s %s", worker, why)
        return behind

    @staticmethod
    def _store_behind(clients: dict[str, str]) -> dict[str, str]:
        """The coordinator's entry in a takeover's `behind`, from its store's clients not at the map (and why)."""
        if not clients:
            return {}
        why = "; ".join(f"RADOS client {client}: {reason}" if client else reason
                        for client, reason in sorted(clients.items()))
        why += (" (its writes of the units' state objects wait until it is: a PR OUT that must save answers NOT READY, "
                "becoming ready)")
        log.error("cluster: takeover: the coordinator %s", why)
        return {f"coordinator (pid {os.getpid()})": why}

    def takeover(self, peer: str, fenced: Fenced | None = None, behind: dict[str, str] | None = None
                 ) -> TakeoverReport:
        """Tickle every connection `peer` held on an address local now; its sessions leave the table. `fenced`:
        what fencing it did, `behind`: the workers not known to be at its OSD map (`_behind`), for the report."""
        sessions = [s for s in self.registry.sessions() if s["node"] == peer]
        connections = []
        for session in sessions:
            host, port = session["portal"].rsplit(":", 1)
            host = host.strip("[]")
            if ":" not in host and is_local(host):
                connections.append((host, int(port), session["client"], session["client_port"]))
        send_tickles(connections)
        for round_ in range(1, TICKLE_ROUNDS):
            self.service.call_later(round_ * TICKLE_INTERVAL, lambda: send_tickles(connections))
        self.registry.restore({"version": SNAPSHOT_VERSION}, node=peer)
        if self.authority.interrupt_sanitizes(set(self.service.workers)):
            self.service.submit(StateAdopted())      # this node's workers learn it as after an adoption
        if self.peers.state(peer) == ALIVE:         # taken over alive (an operator's call): its own table again
            self.bus.send(peer, WANT_SNAPSHOT, {})
        fenced = fenced or Fenced()
        result = TakeoverReport(peer, self.peers.state(peer), len(sessions), len(connections), TICKLE_ROUNDS,
                                len(sessions) - len(connections), fenced.addresses, fenced.error, epochs=fenced.epochs,
                                behind=behind or {})
        log.info("cluster: takeover of %s (%s): %d RADOS clients blocklisted, %d sessions, %d connections tickled "
                 "×%d, %d not on a local IPv4 address", peer, result.peer_state, len(fenced.addresses),
                 len(sessions), len(connections), TICKLE_ROUNDS, result.not_local)
        return result

    def _takeover_request(self, message: Takeover, origin: str) -> Reply | Deferred:
        peer = message.peer
        if peer not in self.peers.peers:
            raise ValueError(f"{peer!r} is not a peer of node {self.node} ({', '.join(sorted(self.peers.peers))})")
        if self.fencer is None or not self.fencer.needed():
            return Reply(self.takeover(peer))
        deferred = self.service.defer()

        def fenced(result: Fenced | None) -> None:
            assert result is not None
            if result.refused or (result.error and not message.unfenced):
                log.error("cluster: takeover of %s refused: fencing failed: %s", peer, result.error)
                deferred.resolve(Reply(TakeoverReport(peer, self.peers.state(peer), 0, 0, 0, 0, result.addresses,
                                                      result.error, taken=False)))
                return
            if result.error:
                log.error("cluster: fencing %s failed: %s; taking over anyway (--unfenced)", peer, result.error)
            self._after_barrier(result, lambda behind: deferred.resolve(Reply(self.takeover(peer, result, behind))))
        self._fence(peer, fenced)
        return deferred


def is_local(address: str) -> bool:
    """Whether `address` (IPv4) is assigned to this network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True
