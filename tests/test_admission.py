"""The pre-login caps: per worker and per source, the idlest connection evicted first, storms noticed receding."""
from target.admission import STORM, PreLoginConnections, source_of


def test_ipv4_counts_per_address_ipv6_per_64():
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2::99") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("fe80::1%eth0") == "fe80::/64"


def test_below_the_caps_nothing_is_evicted():
    held = PreLoginConnections(max_total=4, max_per_source=2)
    assert held.add("a1", "A") is None and held.add("a2", "A") is None and held.add("b1", "B") is None
    assert len(held) == 3 and "a1" in held and "c" not in held


def test_the_per_source_cap_evicts_the_oldest_from_that_source():
    held = PreLoginConnections(max_total=10, max_per_source=2)
    held.add("a1", "A")
    held.add("b1", "B")
    held.add("a2", "A")
    assert held.add("a3", "A") == ("a1", "max_prelogin_per_address")
    assert "a1" not in held and len(held) == 3


def test_one_per_source():
    held = PreLoginConnections(max_total=10, max_per_source=1)
    held.add("a1", "A")
    assert held.add("a2", "A") == ("a1", "max_prelogin_per_address")
    assert held.add("a3", "A") == ("a2", "max_prelogin_per_address")
    assert len(held) == 1 and held.idlest() == "a3"


def test_the_per_worker_cap_evicts_the_oldest_of_all():
    held = PreLoginConnections(max_total=3, max_per_source=3)
    for key, source in (("a1", "A"), ("b1", "B"), ("c1", "C")):
        held.add(key, source)
    assert held.add("d1", "D") == ("a1", "max_prelogin_connections")
    assert [held.idlest()] == ["b1"] and len(held) == 3


def test_a_full_source_evicts_its_own_even_with_the_worker_full():
    held = PreLoginConnections(max_total=3, max_per_source=2)
    for key, source in (("b1", "B"), ("a1", "A"), ("a2", "A")):
        held.add(key, source)
    assert held.add("a3", "A") == ("a1", "max_prelogin_per_address")
    assert len(held) == 3


def test_a_connection_that_spoke_goes_after_the_silent_ones():
    held = PreLoginConnections(max_total=3, max_per_source=3)
    held.add("talker", "A")
    held.add("idle1", "A")
    held.add("idle2", "A")
    held.heard_from("talker")
    assert held.add("new1", "A") == ("idle1", "max_prelogin_per_address")
    assert held.add("new2", "A") == ("idle2", "max_prelogin_per_address")
    assert held.add("new3", "A") == ("new1", "max_prelogin_per_address")     # silent, though newer
    held.heard_from("new2")
    held.heard_from("new3")
    assert held.add("new4", "A") == ("talker", "max_prelogin_per_address")   # heard from longest ago


def test_discarded_connections_leave_no_trace():
    held = PreLoginConnections(max_total=2, max_per_source=2)
    held.add("a1", "A")
    held.add("a2", "A")
    held.discard("a1")
    held.discard("a1")                          # closed after its eviction: harmless
    held.heard_from("a1")
    assert held.add("a3", "A") is None and len(held) == 2
    held.discard("a2")
    held.discard("a3")
    assert len(held) == 0 and held.idlest() is None and held._by_source == {}


def test_a_storm_recedes_once():
    held = PreLoginConnections(max_total=1000, max_per_source=1000)
    for i in range(STORM - 1):
        held.add(i, "A")
    for i in range(STORM - 1):
        held.discard(i)
    assert not held.receded()                  # too few to be a storm
    for i in range(4 * STORM):
        held.add(i, "A")
    for i in range(3 * STORM - 1):
        held.discard(i)
    assert not held.receded()                  # still more than a quarter held
    held.discard(3 * STORM - 1)
    assert held.receded() and not held.receded()
