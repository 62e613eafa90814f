"""The failover state machine of a node's view of its peers, pure code: who is alive, who just died, and
whether what a peer replicated to us arrived whole.

Every peer sends a heartbeat every `dead_after / HEARTBEATS_PER_DEADLINE` seconds, carrying its incarnation
(random per coordinator start) and the sequence number of the last state message it sent. A peer is alive
from its first heartbeat; silent for `dead_after` seconds it is dead (once: `expired` reports it one time).
A peer heard again, or with a new incarnation, is "up": we send it our full state. State messages are numbered
per incarnation; one out of order, or a heartbeat announcing one we never got, means we lost something and
ask for a snapshot, which resets the count.
"""
from __future__ import annotations

from dataclasses import dataclass

HEARTBEATS_PER_DEADLINE = 5
UNKNOWN, ALIVE, DEAD = "unknown", "alive", "dead"


@dataclass
class Peer:
    name: str
    state: str = UNKNOWN
    last_heard: float = 0.0
    incarnation: str = ""
    received: int = -1              # sequence number of the last state message applied; -1: need a snapshot


class Peers:
    def __init__(self, names, dead_after: float):
        self.dead_after = dead_after
        self.peers = {name: Peer(name) for name in names}

    def heard(self, name: str, now: float, incarnation: str, sent: int) -> tuple[bool, bool]:
        """A heartbeat: (came up — send it our snapshot, lost state — ask it for its snapshot)."""
        peer = self.peers[name]
        up = peer.state != ALIVE or peer.incarnation != incarnation
        if peer.incarnation != incarnation:
            peer.incarnation, peer.received = incarnation, -1
        peer.state, peer.last_heard = ALIVE, now
        return up, peer.received < sent

    def accept(self, name: str, incarnation: str, seq: int) -> bool:
        """Whether the state message `seq` of that incarnation follows the last one applied (then it counts)."""
        peer = self.peers[name]
        if incarnation != peer.incarnation or seq != peer.received + 1 or peer.received < 0:
            return False
        peer.received = seq
        return True

    def restored(self, name: str, incarnation: str, seq: int) -> None:
        """A snapshot of that incarnation, current up to `seq`, was applied."""
        peer = self.peers[name]
        peer.incarnation, peer.received = incarnation, seq

    def expired(self, now: float) -> list[str]:
        """Peers alive until now and silent for `dead_after`: now dead (each reported once)."""
        dead = [p for p in self.peers.values() if p.state == ALIVE and now - p.last_heard >= self.dead_after]
        for peer in dead:
            peer.state = DEAD
        return [peer.name for peer in dead]

    def state(self, name: str) -> str:
        return self.peers[name].state
