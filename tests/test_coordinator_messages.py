"""The coordinator's message classes (coordinator/messages.py): bodies round-trip through the wire, and a body
without its class's shape is refused with the kind and field named."""
import dataclasses

import pytest

from coordinator import messages as M
from coordinator.schema import REPLY, SchemaError, decode, encode

T = "iqn.2026-11.org.ringtgt:t"
N = f"iqn.a,i,0x000000000001,{T},t,0x0001"
CHANGE = M.ReservationChange(T, 0, {"reserved": False}, [[N, 0x2A03]], [N])
EXAMPLES = [
    M.SessionLogin({"initiator": "iqn.a", "tsih": 1}), M.LoginRegistered([]), M.SessionLogout(3),
    M.SessionResync([]), M.SessionEnd("w0.1", 3), M.ListSessions(), M.SessionListing("a", []),
    CHANGE, M.ReservationRequest(T, 0, "out", N, b"\x5f" + bytes(9), bytes(24)),
    M.ReservationAnswer({"status": 0}, CHANGE), M.ReservationAnswer({"status": 0}, None),
    M.UnitReset(T, [0, 1], N, 0x2900, False), M.UnitReset(T, [0], N, 0x2900, True, [[0, {"reserved": False}]]),
    M.ClearTaskSet(T, 0, N), M.AttachNexus(T, N), M.NexusAttentions([[0, [0x2900]]], []),
    M.AttentionReported(T, 0, N, 0x2900), M.NexusLost(T, N), M.NexusLostChanges([CHANGE]),
    M.ModeSelect(T, 0, N, True, False), M.ModeChange(T, 0, True, False, [[N, 0x2A01]]),
    M.MediumRequest(T, 0, "", "sanitized"), M.MediumChange(T, 0, True, 0),
    M.MediumAnswer(T, 0, False, 2, [2, 0x5302]), M.FetchUnitStates(), M.UnitStates([], [], []),
    M.Takeover("b"), M.TakeoverReport("b", "dead", 1, 1, 3, 0), M.StateAdopted(),
    M.StoredStateTaken(T, 0), M.EndSessions([]), M.Nothing(),
    M.FetchStatus(), M.NodeStatus("a", {"pid": 1, "uptime": 2.5}, {"pid": 2, "uptime": 1.0, "restarts": 0},
                                  [{"index": 0, "pid": 3}], [], [{"target": T, "lun": 0}], 1),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.KIND)
def test_every_message_round_trips_through_the_wire(message):
    wire = decode(encode(REPLY, 1, message.KIND, message.to_body()))
    assert wire.kind == message.KIND and type(message).from_body(wire.body) == message


def test_every_request_names_its_reply_class():
    for message in EXAMPLES:
        assert message.REPLY is None or issubclass(message.REPLY, M.Message)
    assert M.FetchStatus.REPLY is M.NodeStatus
    assert M.ReservationRequest.REPLY is M.ReservationAnswer and M.UnitReset.REPLY is M.UnitReset


@pytest.mark.parametrize("cls, body, reason", [
    (M.SessionLogout, {}, "session.logout: field 'tsih' missing"),
    (M.SessionLogout, {"tsih": "3"}, "session.logout: field 'tsih' must be int, got '3'"),
    (M.SessionLogout, {"tsih": True}, "session.logout: field 'tsih' must be int, got True"),
    (M.SessionLogout, {"tsih": 3, "extra": 1}, "session.logout: unknown field(s) extra"),
    (M.MediumAnswer, {"target": T, "lun": 0, "loaded": 1, "sanitize": 0, "refused": None},
     "medium.request.reply: field 'loaded' must be bool, got 1"),
    (M.ReservationAnswer, {"outcome": {}, "change": 3}, "pr.request.reply: field 'change' must be"),
    (M.ReservationAnswer, {"outcome": {}, "change": {"target": T}}, "pr.change: field 'lun' missing"),
    (M.NexusLostChanges, {"changes": [{"target": T, "lun": "0", "view": {}}]}, "pr.change: field 'lun' must be int"),
    (M.NodeStatus, {"node": "a", "supervisor": {}, "coordinator": {}, "workers": [], "peers": [], "luns": [],
                    "sessions": "1"}, "node.status.reply: field 'sessions' must be int, got '1'"),
])
def test_a_body_without_its_class_shape_is_refused_naming_kind_and_field(cls, body, reason):
    with pytest.raises(SchemaError) as error:
        cls.from_body(body)
    assert str(error.value).startswith(reason)


def test_messages_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        M.SessionLogout(3).tsih = 4
