"""The peer failover state machine (coordinator/peers.py): alive, dead once, up again, lost state."""
from coordinator.peers import ALIVE, DEAD, UNKNOWN, Peers


def test_alive_dead_once_and_up_again():
    peers = Peers(["b"], dead_after=1.0)
    assert peers.state("b") == UNKNOWN and peers.expired(10.0) == []       # never heard: not "dead"
    assert peers.heard("b", 0.0, "i1", -1) == (True, False)               # came up; nothing sent yet
    assert peers.heard("b", 0.5, "i1", -1) == (False, False)
    assert peers.expired(1.4) == [] and peers.state("b") == ALIVE
    assert peers.expired(1.5) == ["b"] and peers.state("b") == DEAD
    assert peers.expired(9.0) == []                                        # reported once
    assert peers.heard("b", 9.5, "i1", -1)[0] is True                      # back: send it our state again
    assert peers.heard("b", 9.6, "i2", -1)[0] is True                      # restarted: again


def test_state_messages_in_order_or_a_snapshot():
    peers = Peers(["b"], dead_after=1.0)
    peers.heard("b", 0.0, "i1", 3)
    assert not peers.accept("b", "i1", 4)                                  # no snapshot yet
    peers.restored("b", "i1", 3)
    assert peers.accept("b", "i1", 4) and peers.accept("b", "i1", 5)
    assert not peers.accept("b", "i1", 7)                                  # 6 was lost
    assert peers.heard("b", 0.1, "i1", 5) == (False, False)
    assert peers.heard("b", 0.2, "i1", 6) == (False, True)                 # a heartbeat tells of one we lack
    assert not peers.accept("b", "i0", 6)                                  # an old incarnation's
    peers.heard("b", 0.3, "i2", 0)                                         # restarted: its numbers start over
    assert not peers.accept("b", "i2", 0)
    peers.restored("b", "i2", 0)
    assert peers.accept("b", "i2", 1)
