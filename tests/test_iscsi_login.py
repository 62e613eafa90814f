"""Negotiation table and login state machine."""
import pytest

from target.iscsi import pdu as P
from target.iscsi.access import AccessPolicy, TargetAccess
from target.iscsi.errors import LoginFailure
from target.iscsi.login import Login
from target.iscsi.negotiation import Negotiator, SessionParams, parse_text
from target.iscsi.text_exchange import MAX_KEY_TEXT
from tests.iscsi_helpers import login_request, split

IQN = "iqn.2026-11.org.ringtgt:t"
INI = "iqn.2026-11.org.example:host"


def new_login():
    return Login(AccessPolicy(1, {IQN: TargetAccess("alias")}), lambda: 0x401)


def answer(keys, offers=None):
    params = SessionParams()
    negotiator = Negotiator(params, offers)
    answers = dict(negotiator.answer(keys))
    negotiator.finish()
    return answers, params


def test_numeric_min_and_max_rules():
    answers, params = answer([("MaxBurstLength", "65536"), ("FirstBurstLength", "262144"),
                              ("DefaultTime2Wait", "0"), ("MaxOutstandingR2T", "64"), ("ErrorRecoveryLevel", "2")])
    assert answers == {"MaxBurstLength": "65536", "FirstBurstLength": "262144", "DefaultTime2Wait": "2",
                       "MaxOutstandingR2T": "16", "ErrorRecoveryLevel": "0"}
    assert params.first_burst_length == 65536          # clamped to MaxBurstLength


def test_boolean_rules():
    answers, params = answer([("InitialR2T", "No"), ("ImmediateData", "Yes"), ("DataPDUInOrder", "No")],
                             {"InitialR2T": False})
    assert answers == {"InitialR2T": "No", "ImmediateData": "No", "DataPDUInOrder": "Yes"}
    assert params.initial_r2t is False


def test_immediate_data_offered_when_configured():
    answers, params = answer([("ImmediateData", "Yes")], {"ImmediateData": True})
    assert answers == {"ImmediateData": "Yes"} and params.immediate_data is True
    answers, params = answer([("ImmediateData", "Yes")])
    assert answers == {"ImmediateData": "No"} and params.immediate_data is False


def test_initial_r2t_offered_by_default():
    answers, params = answer([("InitialR2T", "No")])
    assert answers == {"InitialR2T": "Yes"} and params.initial_r2t is True


def test_lists_unknown_keys_and_bad_values():
    answers, params = answer([("HeaderDigest", "None,CRC32C"), ("DataDigest", "MD5"), ("X-foo", "1"),
                              ("MaxBurstLength", "12"), ("InitialR2T", "maybe")])
    assert answers == {"HeaderDigest": "None", "DataDigest": "Reject", "X-foo": "NotUnderstood",
                       "MaxBurstLength": "Reject", "InitialR2T": "Reject"}


def test_digests_follow_the_initiators_order():
    answers, params = answer([("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")])
    assert answers == {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}
    assert (params.header_digest, params.data_digest) == ("CRC32C", "CRC32C")


def test_initiator_mrdsl_is_declarative():
    answers, params = answer([("MaxRecvDataSegmentLength", "4096")])
    assert answers == {} and params.max_recv_data_segment_length == 4096


def test_parse_text_rejects_garbage():
    assert parse_text(b"a=b\0c=\0") == [("a", "b"), ("c", "")]
    with pytest.raises(LoginFailure):
        parse_text(b"novalue\0")


def response(raw):
    (pdu, data), = split(raw)
    return pdu, dict(parse_text(data))


def test_login_security_then_operational():
    login = new_login()
    pdu, keys = response(login.receive(P.decode_bhs_with_data(login_request(
        [("InitiatorName", INI), ("TargetName", IQN), ("SessionType", "Normal"), ("AuthMethod", "CHAP,None")],
        csg=0, nsg=1))))
    assert pdu.flags == 0x81 and keys["AuthMethod"] == "None" and keys["TargetPortalGroupTag"] == "1"
    assert keys["TargetAlias"] == "alias" and not login.done
    pdu, keys = response(login.receive(P.decode_bhs_with_data(login_request(
        [("MaxRecvDataSegmentLength", "65536"), ("ImmediateData", "Yes")], csg=1, nsg=3))))
    assert pdu.flags == 0x87 and login.done and login.tsih == 0x401
    assert pdu.lun_field & 0xFFFF == 0x401 and pdu.login_status == 0
    assert keys["MaxRecvDataSegmentLength"] == "262144"
    assert login.params.max_recv_data_segment_length == 65536


@pytest.mark.parametrize("keys,status", [
    ([("TargetName", IQN)], 0x0207),                                            # no InitiatorName
    ([("InitiatorName", INI)], 0x0207),                                         # no TargetName
    ([("InitiatorName", INI), ("TargetName", "iqn.2026-11.x:nope")], 0x0203),    # unknown target
    ([("InitiatorName", INI), ("SessionType", "Other")], 0x0209),
])
def test_login_failures(keys, status):
    with pytest.raises(LoginFailure) as failure:
        new_login().receive(P.decode_bhs_with_data(login_request(keys)))
    assert failure.value.status == status


def test_discovery_needs_no_target_name():
    login = new_login()
    login.receive(P.decode_bhs_with_data(login_request([("InitiatorName", INI), ("SessionType", "Discovery")])))
    assert login.done and login.session_type == "Discovery"


def test_illegal_transition_and_version():
    with pytest.raises(LoginFailure) as failure:
        new_login().receive(P.decode_bhs_with_data(login_request([("InitiatorName", INI)], csg=1, nsg=0)))
    assert failure.value.status == 0x020B
    raw = bytearray(login_request([("InitiatorName", INI), ("TargetName", IQN)]))
    raw[3] = 1          # VersionMin 1
    with pytest.raises(LoginFailure) as failure:
        new_login().receive(P.decode_bhs_with_data(bytes(raw)))
    assert failure.value.status == 0x0205


def test_continued_text_is_joined():
    login = new_login()
    first = login_request([("InitiatorName", INI)], csg=1, transit=False, cont=True)
    pdu, keys = response(login.receive(P.decode_bhs_with_data(first)))
    assert keys == {} and not pdu.flags & 0x80
    login.receive(P.decode_bhs_with_data(login_request([("TargetName", IQN)])))
    assert login.done and login.target_name == IQN


def test_login_key_text_is_capped_across_continuations():
    """The whole key text of a login is refused past 64 KiB with an initiator error (RFC 7143 §11.13.5)."""
    login = new_login()
    chunk = [("X-Pad", "a" * 8000)]
    sent = 0
    with pytest.raises(LoginFailure) as failure:
        for _ in range(20):
            login.receive(P.decode_bhs_with_data(login_request(chunk, csg=1, transit=False, cont=True)))
            sent += 1
    assert failure.value.status == 0x0200 and sent == MAX_KEY_TEXT // 8007


def test_login_continuations_are_kept_as_chunks():
    """Continued login text is collected as a list of the PDUs' data, joined once at the end (linear)."""
    login = new_login()
    for _ in range(500):
        login.receive(P.decode_bhs_with_data(login_request([("X-P", "1" * 100)], csg=1, transit=False, cont=True)))
    assert len(login.pending_text._chunks) == 500 and login.pending_text.size == 500 * 105
    login.receive(P.decode_bhs_with_data(login_request([("InitiatorName", INI), ("TargetName", IQN)])))
    assert login.done and login.pending_text._chunks == []
