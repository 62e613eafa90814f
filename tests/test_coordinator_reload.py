"""Live reconfiguration, the coordinator's units (coordinator/unit_service.py `reconfigure`): units added and
removed, grown, and the unit attentions a reload establishes for the nexuses it knows."""
from coordinator.unit_service import UnitAuthority
from coordinator.unit_state.sense import CAPACITY_DATA_HAS_CHANGED, REPORTED_LUNS_DATA_HAS_CHANGED

T, U = "iqn.2026-11.org.example:t", "iqn.2026-11.org.example:u"
N1, N2 = f"iqn.x,i,0x000000000001,{T},t,0x0001", f"iqn.y,i,0x000000000002,{T},t,0x0001"
NU = f"iqn.x,i,0x000000000003,{U},t,0x0001"


def authority() -> UnitAuthority:
    units = UnitAuthority([(T, 0), (T, 1), (U, 0)])
    for nexus in (N1, N2):
        units.unit(T, 0).pending[nexus] = []
        units.unit(T, 1).pending[nexus] = []
    units.unit(U, 0).pending[NU] = []
    return units


def test_a_lun_added_and_one_removed_announce_reported_luns_changed_to_the_targets_nexuses():
    units = authority()
    version = units.version
    attentions = units.reconfigure([(T, 2)], [(T, 1)], [], {T})
    assert sorted(units.units) == [(T, 0), (T, 2), (U, 0)]
    assert attentions == [[T, lun, nexus, REPORTED_LUNS_DATA_HAS_CHANGED] for lun in (0, 2) for nexus in (N1, N2)]
    assert units.unit(T, 0).pending == {N1: [REPORTED_LUNS_DATA_HAS_CHANGED], N2: [REPORTED_LUNS_DATA_HAS_CHANGED]}
    assert units.unit(T, 2).pending == units.unit(T, 0).pending
    assert units.unit(U, 0).pending == {NU: []}                   # another target: nothing
    assert units.version == version + 1                          # a change: replicated, saved


def test_a_grown_lun_announces_capacity_changed_and_keeps_its_size():
    units = authority()
    attentions = units.reconfigure([], [], [(T, 1, 1 << 30)], set())
    assert attentions == [[T, 1, N1, CAPACITY_DATA_HAS_CHANGED], [T, 1, N2, CAPACITY_DATA_HAS_CHANGED]]
    assert units.unit(T, 1).size == 1 << 30
    assert units.unit(T, 0).pending == {N1: [], N2: []}


def test_a_target_removed_and_one_added():
    units = authority()
    assert units.reconfigure([("iqn.2026-11.org.example:v", 0)], [(U, 0)], [], set()) == []
    assert sorted(units.units) == [(T, 0), (T, 1), ("iqn.2026-11.org.example:v", 0)]
