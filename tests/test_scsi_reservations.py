"""The reservation state machine (coordinator/unit_state/reservations.py): every type × every service action, CDB
and parameter-list decoding, conflict views (target/scsi/reservations.py), SPC-2 RESERVE/RELEASE, snapshot/restore."""
import struct

import pytest

from coordinator.unit_state import reservations as R
from target.scsi.reservations import NOTHING_RESERVED, ConflictView
from target.scsi.sense import build_sense, Field, ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB, \
    INVALID_FIELD_IN_PARAMETER_LIST, PARAMETER_LIST_LENGTH_ERROR
from target.scsi.target import OPS
from target.scsi.task import CHECK_CONDITION, GOOD, RESERVATION_CONFLICT

TARGET = "iqn.2026-11.org.ringtgt:t,t,0x0001"
A = f"iqn.2026-11.org.ringtgt:a,i,0x000000000001,{TARGET}"
B = f"iqn.2026-11.org.ringtgt:b,i,0x000000000002,{TARGET}"
C = f"iqn.2026-11.org.ringtgt:c,i,0x000000000003,{TARGET}"
KA, KB, KC = 0xA1, 0xB2, 0xC3
# how each command meets a reservation: its row's access class
READ10, WRITE10, INQUIRY, TUR, MODE_SENSE6, PRIN, RELEASE6 = (OPS[op].access
                                                             for op in (0x28, 0x2A, 0x12, 0x00, 0x1A, 0x5E, 0x17))


def view(state):
    """The worker's conflict view of the state."""
    return ConflictView.from_dict(state.view())


def prout_cdb(action, pr_type=0, scope=0, length=24):
    return struct.pack(">BBB2xIB", 0x5F, action, scope << 4 | pr_type, length, 0)


def params(key=0, action_key=0, flags=0):
    return struct.pack(">QQ4xB3x", key, action_key, flags)


def prin_cdb(action, alloc=8192):
    return struct.pack(">BB5xHB", 0x5E, action, alloc, 0)


def out(state, nexus, action, key=0, action_key=0, pr_type=0, flags=0, scope=0):
    return state.persistent_reserve_out(nexus, prout_cdb(action, pr_type, scope), params(key, action_key, flags))


def ok(outcome):
    assert outcome.status == GOOD and outcome.sense is None, outcome
    return outcome


def conflict(outcome):
    assert outcome.status == RESERVATION_CONFLICT and outcome.sense is None, outcome
    return outcome


def sense_of(outcome):
    assert outcome.status == CHECK_CONDITION
    return outcome.sense


def read_keys(state, nexus=A):
    data = ok(state.persistent_reserve_in(nexus, prin_cdb(R.READ_KEYS))).data
    generation, length = struct.unpack_from(">II", data)
    return generation, [struct.unpack_from(">Q", data, 8 + i)[0] for i in range(0, length, 8)]


def read_reservation(state, nexus=A):
    data = ok(state.persistent_reserve_in(nexus, prin_cdb(R.READ_RESERVATION))).data
    generation, length = struct.unpack_from(">II", data)
    if not length:
        return None
    key, scope_type = struct.unpack_from(">Q4xxB", data, 8)
    return key, scope_type & 0x0F


def registered(*pairs):
    state = R.Reservations()
    for nexus, key in pairs:
        ok(out(state, nexus, R.REGISTER, 0, key))
    return state


def reserved(pr_type, *pairs):
    state = registered(*pairs)
    ok(out(state, pairs[0][0], R.RESERVE, pairs[0][1], pr_type=pr_type))
    return state


ALL_TYPES = pytest.mark.parametrize("pr_type", R.TYPES)


# -- REGISTER / REGISTER AND IGNORE EXISTING KEY ----------------------------------------------------------------
@ALL_TYPES
def test_register_replace_and_unregister_under_every_type(pr_type):
    state = reserved(pr_type, (A, KA), (B, KB))
    generation = state.generation
    ok(out(state, B, R.REGISTER, KB, 0x99))
    assert read_keys(state)[1] == [KA, 0x99] and state.generation == generation + 1
    conflict(out(state, B, R.REGISTER, KB, 0x77))                 # wrong current key
    ok(out(state, B, R.REGISTER, 0x99, 0))                         # unregister
    assert read_keys(state)[1] == [KA]
    assert read_reservation(state) == (0 if pr_type in R.ALL_REGISTRANTS else KA, pr_type)


def test_register_unregistered_with_a_key_conflicts_and_zero_is_a_no_op():
    state = R.Reservations()
    conflict(out(state, A, R.REGISTER, KA, KB))
    ok(out(state, A, R.REGISTER, 0, 0))
    assert read_keys(state) == (0, [])


@ALL_TYPES
def test_register_and_ignore_replaces_any_key(pr_type):
    state = reserved(pr_type, (A, KA), (B, KB))
    ok(out(state, B, R.REGISTER_AND_IGNORE_EXISTING_KEY, 0x1234, 0x55))
    assert read_keys(state)[1] == [KA, 0x55]
    ok(out(state, C, R.REGISTER_AND_IGNORE_EXISTING_KEY, 0, KC))
    ok(out(state, C, R.REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0))
    assert read_keys(state)[1] == [KA, 0x55]


@ALL_TYPES
def test_holder_unregistering(pr_type):
    state = reserved(pr_type, (A, KA), (B, KB))
    outcome = ok(out(state, A, R.REGISTER, KA, 0))
    if pr_type in R.ALL_REGISTRANTS:
        assert read_reservation(state) == (0, pr_type)            # B still holds it
        assert outcome.attentions == []
        ok(out(state, B, R.REGISTER, KB, 0))
        assert read_reservation(state) is None
    else:
        assert read_reservation(state) is None
        expected = [(B, R.RESERVATIONS_RELEASED)] if pr_type in R.REGISTRANTS_ONLY else []
        assert outcome.attentions == expected


# -- RESERVE / RELEASE ----------------------------------------------------------------------------------------
@ALL_TYPES
def test_reserve_and_release(pr_type):
    state = registered((A, KA), (B, KB))
    generation = state.generation
    ok(out(state, A, R.RESERVE, KA, pr_type=pr_type))
    assert state.generation == generation                          # RESERVE does not count
    assert read_reservation(state, B) == (0 if pr_type in R.ALL_REGISTRANTS else KA, pr_type)
    ok(out(state, A, R.RESERVE, KA, pr_type=pr_type))              # again: no-op
    other = [t for t in R.TYPES if t != pr_type][0]
    conflict(out(state, A, R.RESERVE, KA, pr_type=other))
    if pr_type in R.ALL_REGISTRANTS:
        ok(out(state, B, R.RESERVE, KB, pr_type=pr_type))          # every registrant holds it
    else:
        conflict(out(state, B, R.RESERVE, KB, pr_type=pr_type))
        ok(out(state, B, R.RELEASE, KB, pr_type=pr_type))          # not the holder: no effect
        assert read_reservation(state) is not None
    assert state.persistent_reserve_out(A, prout_cdb(R.RELEASE, other), params(KA)).sense == \
        build_sense(ILLEGAL_REQUEST, R.INVALID_RELEASE_OF_PERSISTENT_RESERVATION)
    outcome = ok(out(state, A, R.RELEASE, KA, pr_type=pr_type))
    assert read_reservation(state) is None
    released = pr_type not in (R.WRITE_EXCLUSIVE, R.EXCLUSIVE_ACCESS)
    assert outcome.attentions == ([(B, R.RESERVATIONS_RELEASED)] if released else [])


@ALL_TYPES
def test_reserve_needs_registration_and_the_right_key(pr_type):
    state = registered((A, KA))
    conflict(out(state, B, R.RESERVE, 0, pr_type=pr_type))
    conflict(out(state, A, R.RESERVE, KB, pr_type=pr_type))
    conflict(out(state, A, R.RELEASE, KB, pr_type=pr_type))
    ok(out(state, A, R.RELEASE, KA, pr_type=pr_type))             # nothing reserved: GOOD


# -- CLEAR --------------------------------------------------------------------------------------------------------
@ALL_TYPES
def test_clear(pr_type):
    state = reserved(pr_type, (A, KA), (B, KB), (C, KC))
    conflict(out(state, B, R.CLEAR, KA))
    outcome = ok(out(state, B, R.CLEAR, KB))
    assert read_keys(state)[1] == [] and read_reservation(state) is None
    assert sorted(outcome.attentions) == [(A, R.RESERVATIONS_PREEMPTED), (C, R.RESERVATIONS_PREEMPTED)]


# -- PREEMPT / PREEMPT AND ABORT ----------------------------------------------------------------------------------
@ALL_TYPES
@pytest.mark.parametrize("action", [R.PREEMPT, R.PREEMPT_AND_ABORT])
def test_preempt_the_holder(pr_type, action):
    state = reserved(pr_type, (A, KA), (B, KB), (C, KC))
    target_key = 0 if pr_type in R.ALL_REGISTRANTS else KA
    outcome = ok(out(state, B, action, KB, target_key, pr_type=R.WRITE_EXCLUSIVE))
    assert read_reservation(state) == (KB, R.WRITE_EXCLUSIVE)
    if pr_type in R.ALL_REGISTRANTS:                              # every other registration goes
        assert read_keys(state)[1] == [KB]
        victims = [A, C]
    else:
        assert read_keys(state)[1] == [KB, KC]
        victims = [A]
    assert [a for a in outcome.attentions if a[1] == R.REGISTRATIONS_PREEMPTED] == \
        [(v, R.REGISTRATIONS_PREEMPTED) for v in victims]
    assert outcome.aborts == (victims if action == R.PREEMPT_AND_ABORT else [])
    if pr_type != R.WRITE_EXCLUSIVE and pr_type not in R.ALL_REGISTRANTS:
        assert (C, R.RESERVATIONS_RELEASED) in outcome.attentions


@ALL_TYPES
def test_preempt_a_registration_only(pr_type):
    state = reserved(pr_type, (A, KA), (B, KB), (C, KC))
    outcome = ok(out(state, B, R.PREEMPT, KB, KC, pr_type=pr_type))
    assert read_keys(state)[1] == [KA, KB]
    assert read_reservation(state) == (0 if pr_type in R.ALL_REGISTRANTS else KA, pr_type)
    assert outcome.attentions == [(C, R.REGISTRATIONS_PREEMPTED)]
    conflict(out(state, B, R.PREEMPT, KB, 0x4444, pr_type=pr_type))   # nobody has that key


def test_preempt_without_a_reservation_removes_registrations():
    state = registered((A, KA), (B, KB))
    ok(out(state, A, R.PREEMPT, KA, KB, pr_type=R.WRITE_EXCLUSIVE))
    assert read_keys(state)[1] == [KA] and read_reservation(state) is None
    assert sense_of(out(state, A, R.PREEMPT, KA, 0, pr_type=R.WRITE_EXCLUSIVE)) == \
        build_sense(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST, Field(8, None, False))


@ALL_TYPES
def test_preempt_needs_registration(pr_type):
    state = reserved(pr_type, (A, KA))
    conflict(out(state, B, R.PREEMPT, 0, KA, pr_type=pr_type))


# -- REGISTER AND MOVE --------------------------------------------------------------------------------------------
def move_params(key, action_key, destination, unreg=False, aptpl=False, port=1):
    tid = R.transport_id(destination)
    return struct.pack(">QQxBHI", key, action_key, (0x02 if unreg else 0) | int(aptpl), port, len(tid)) + tid


@ALL_TYPES
@pytest.mark.parametrize("unreg", [False, True])
def test_register_and_move(pr_type, unreg):
    state = reserved(pr_type, (A, KA))
    data = move_params(KA, KB, B, unreg)
    outcome = state.persistent_reserve_out(A, prout_cdb(R.REGISTER_AND_MOVE, pr_type, length=len(data)), data)
    if pr_type in R.ALL_REGISTRANTS:
        conflict(outcome)
        return
    ok(outcome)
    assert read_reservation(state) == (KB, pr_type)
    assert read_keys(state)[1] == ([KB] if unreg else [KA, KB])
    assert view(state).holder == B


def test_register_and_move_bad_transport_id_and_port():
    state = reserved(R.WRITE_EXCLUSIVE, (A, KA))
    data = move_params(KA, KB, B, port=2)
    assert sense_of(state.persistent_reserve_out(A, prout_cdb(R.REGISTER_AND_MOVE, 1, length=len(data)), data)) \
        == build_sense(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST, Field(18, None, False))
    data = bytearray(move_params(KA, KB, B))
    data[24] = 0x05                                              # format 00: name only
    assert sense_of(state.persistent_reserve_out(A, prout_cdb(R.REGISTER_AND_MOVE, 1, length=len(data)),
                                                 bytes(data))) == \
        build_sense(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST, Field(24, None, False))
    data = move_params(KA, KB, A)                                # to itself
    assert sense_of(state.persistent_reserve_out(A, prout_cdb(R.REGISTER_AND_MOVE, 1, length=len(data)), data)) \
        == build_sense(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST, Field(24, None, False))


# -- decoding and bad fields ---------------------------------------------------------------------------------------
def invalid(byte, bit=None, in_cdb=True):
    return build_sense(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB if in_cdb else INVALID_FIELD_IN_PARAMETER_LIST,
                       Field(byte, bit, in_cdb))


@pytest.mark.parametrize("cdb, data, expected", [
    (prout_cdb(8), params(), invalid(1, 4)),                                       # service action
    (prout_cdb(R.RESERVE, 2), params(KA), invalid(2, 3)),                           # type 2 is obsolete
    (prout_cdb(R.RESERVE, 1, scope=1), params(KA), invalid(2, 7)),                  # scope
    (prout_cdb(R.REGISTER, length=23), params()[:23], build_sense(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)),
    (prout_cdb(R.REGISTER, length=28), params() + bytes(4), build_sense(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)),
    (prout_cdb(R.REGISTER), params(0, KB, R.SPEC_I_PT), invalid(20, 3, False)),
])
def test_prout_bad_fields(cdb, data, expected):
    state = registered((A, KA))
    assert sense_of(state.persistent_reserve_out(A, cdb, data)) == expected


@pytest.mark.parametrize("action", range(4, 32))
def test_prin_service_action_range(action):
    state = R.Reservations()
    assert sense_of(state.persistent_reserve_in(A, prin_cdb(action))) == invalid(1, 4)


def test_prin_truncated_to_allocation_length():
    state = registered((A, KA), (B, KB))
    data = ok(state.persistent_reserve_in(A, prin_cdb(R.READ_KEYS, 12))).data
    assert len(data) == 12 and struct.unpack(">I", data[4:8])[0] == 16


def test_report_capabilities():
    state = registered((A, KA))
    data = ok(state.persistent_reserve_in(A, prin_cdb(R.REPORT_CAPABILITIES))).data
    length, flags, tmv, mask = struct.unpack(">HBBH2x", data)
    assert length == 8 and flags == 0x15 and tmv == 0x80 and mask == 0xEA01
    ok(out(state, A, R.REGISTER, KA, KA, flags=R.APTPL))
    assert ok(state.persistent_reserve_in(A, prin_cdb(R.REPORT_CAPABILITIES))).data[3] == 0x81


def test_read_full_status():
    state = reserved(R.WRITE_EXCLUSIVE, (A, KA))
    ok(out(state, B, R.REGISTER, 0, KB, flags=R.ALL_TG_PT))
    data = ok(state.persistent_reserve_in(A, prin_cdb(R.READ_FULL_STATUS))).data
    generation, length = struct.unpack_from(">II", data)
    assert len(data) == 8 + length
    offset, seen = 8, []
    while offset < len(data):
        key, flags, scope_type, port, tid_length = struct.unpack_from(">Q4xBB4xHI", data, offset)
        tid = data[offset + 24:offset + 24 + tid_length]
        assert tid[0] == 0x45 and port == 1 and tid_length % 4 == 0
        seen.append((key, flags, scope_type, tid[4:].rstrip(b"\0").decode()))
        offset += 24 + tid_length
    assert seen == [(KA, 0x01, R.WRITE_EXCLUSIVE, R.initiator_port(A)), (KB, 0x02, 0, R.initiator_port(B))]


# -- conflict views --------------------------------------------------------------------------------------------------
# (type, registered non-holder can read, can write, unregistered can read, can write) - libiscsi's ProutReserve.Access*
ACCESS = [
    (R.EXCLUSIVE_ACCESS, False, False, False, False),
    (R.WRITE_EXCLUSIVE, True, False, True, False),
    (R.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, True, True, False, False),
    (R.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, True, True, True, False),
    (R.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, True, True, False, False),
    (R.WRITE_EXCLUSIVE_ALL_REGISTRANTS, True, True, True, False),
]


@pytest.mark.parametrize("pr_type, reg_read, reg_write, unreg_read, unreg_write", ACCESS)
def test_conflict_view(pr_type, reg_read, reg_write, unreg_read, unreg_write):
    view = ConflictView.from_dict(reserved(pr_type, (A, KA), (B, KB)).view())
    assert view.reserved
    for op in (READ10, WRITE10, INQUIRY, TUR):
        assert not view.conflicts(A, op)
    assert view.conflicts(B, READ10) != reg_read and view.conflicts(B, WRITE10) != reg_write
    assert view.conflicts(C, READ10) != unreg_read and view.conflicts(C, WRITE10) != unreg_write
    assert not view.conflicts(C, INQUIRY) and not view.conflicts(C, PRIN)
    assert ConflictView.from_dict(view.to_dict()) == view


def test_nothing_reserved_view():
    state = R.Reservations()
    assert view(state) == NOTHING_RESERVED and not view(state).reserved
    ok(out(state, A, R.REGISTER, 0, KA))
    registrations = view(state)
    assert not registrations.reserved and registrations.registrations


# -- SPC-2 RESERVE / RELEASE -------------------------------------------------------------------------------------------
def test_spc2_reserve_release():
    state = R.Reservations()
    assert state.reserve(A).changed
    ok(state.reserve(A))
    conflict(state.reserve(B))
    ok(state.release(B))                                           # no-op for others
    spc2 = view(state)
    assert spc2.conflicts(B, MODE_SENSE6) and not spc2.conflicts(A, MODE_SENSE6)
    assert not spc2.conflicts(B, INQUIRY) and not spc2.conflicts(B, RELEASE6)
    conflict(state.persistent_reserve_out(B, prout_cdb(R.REGISTER), params(0, KB)))
    ok(state.persistent_reserve_in(B, prin_cdb(R.READ_KEYS)))
    assert state.release(A).changed
    ok(state.reserve(B))
    assert state.nexus_lost(B) and state.spc2_holder is None
    ok(state.reserve(A))
    assert state.reset() and not view(state).reserved


def test_spc2_conflicts_with_registrations():
    state = registered((A, KA))
    conflict(state.reserve(A))
    conflict(state.release(A))


# -- state export ------------------------------------------------------------------------------------------------------
def test_snapshot_restore_and_persistent_state():
    state = reserved(R.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, (A, KA), (B, KB))
    ok(out(state, A, R.REGISTER, KA, KA, flags=R.APTPL))
    state.spc2_holder = C
    copy = R.Reservations()
    copy.restore(state.snapshot())
    assert copy.snapshot() == state.snapshot() and copy.view() == state.view()
    assert state.persistent_state()["spc2_holder"] is None and state.persistent_state()["aptpl"]


def test_outcome_round_trip():
    outcome = R.Outcome(GOOD, None, b"x", [(A, R.RESERVATIONS_RELEASED)], [B], True)
    assert R.Outcome.from_dict(outcome.to_dict()) == outcome
