"""CHAP in the login state machine: every algorithm, one-way and mutual, and every way to fail it; the ACL."""
import hashlib

import pytest

from target.config import ChapConfig
from target.iscsi import pdu as P
from target.iscsi.access import AccessPolicy, TargetAccess
from target.iscsi.chap import Chap, decode_binary
from target.iscsi.errors import LoginFailure
from target.iscsi.login import Login
from target.iscsi.negotiation import parse_text
from tests.iscsi_helpers import login_request, split

IQN = "iqn.2026-11.org.ringtgt:t"
INI = "iqn.2026-11.org.example:host"
USER = ChapConfig("alice", "alice-secret-123")
TARGET_USER = ChapConfig("tgt", "target-secret-456")
HASHES = {"5": hashlib.md5, "6": hashlib.sha1, "7": hashlib.sha256, "8": hashlib.sha3_256}


def new_login(access=TargetAccess(chap=USER), discovery=TargetAccess()):
    return Login(AccessPolicy(1, {IQN: access}, discovery), lambda: 0x401)


def send(login, keys, *, csg=0, nsg=1, transit=False):
    raw = login.receive(P.decode_bhs_with_data(login_request(keys, csg=csg, nsg=nsg, transit=transit)))
    (pdu, data), = split(raw)
    return pdu, dict(parse_text(data))


def response_to(keys, secret, algorithm):
    challenge = decode_binary("CHAP_C", keys["CHAP_C"])
    return "0x" + HASHES[algorithm](bytes([int(keys["CHAP_I"])]) + secret.encode() + challenge).hexdigest()


def start(login, algorithms="7,6,5", session=(("TargetName", IQN),)):
    pdu, keys = send(login, [("InitiatorName", INI), *session, ("AuthMethod", "CHAP,None")], transit=True)
    assert keys["AuthMethod"] == "CHAP" and not pdu.flags & 0x80       # no transit before authentication
    pdu, keys = send(login, [("CHAP_A", algorithms)])
    assert not pdu.flags & 0x80
    return keys


@pytest.mark.parametrize("algorithm", ["5", "6", "7", "8"])
def test_one_way_chap_with_every_algorithm(algorithm):
    login = new_login()
    keys = start(login, f"{algorithm},5")
    assert keys["CHAP_A"] == algorithm
    assert len(decode_binary("CHAP_C", keys["CHAP_C"])) >= 16
    pdu, answer = send(login, [("CHAP_N", USER.username), ("CHAP_R", response_to(keys, USER.secret, algorithm))],
                       transit=True)
    assert pdu.flags == 0x81 and answer == {}            # T=1, CSG 0 -> NSG 1
    pdu, _ = send(login, [("MaxRecvDataSegmentLength", "8192")], csg=1, nsg=3, transit=True)
    assert login.done


@pytest.mark.parametrize("algorithm", ["5", "8"])
def test_mutual_chap(algorithm):
    login = new_login(TargetAccess(chap=USER, mutual_chap=TARGET_USER))
    keys = start(login, algorithm)
    my_challenge = bytes(range(20))
    pdu, answer = send(login, [("CHAP_N", USER.username), ("CHAP_R", response_to(keys, USER.secret, algorithm)),
                               ("CHAP_I", "77"), ("CHAP_C", "0x" + my_challenge.hex())], transit=True)
    assert pdu.flags == 0x81 and answer["CHAP_N"] == TARGET_USER.username
    expected = HASHES[algorithm](bytes([77]) + TARGET_USER.secret.encode() + my_challenge).hexdigest()
    assert answer["CHAP_R"] == "0x" + expected


def test_base64_response_accepted():
    import base64
    login = new_login()
    keys = start(login, "5")
    raw = bytes.fromhex(response_to(keys, USER.secret, "5")[2:])
    pdu, _ = send(login, [("CHAP_N", USER.username), ("CHAP_R", "0b" + base64.b64encode(raw).decode())],
                  transit=True)
    assert pdu.flags & 0x80


def failure_of(fn) -> LoginFailure:
    with pytest.raises(LoginFailure) as failure:
        fn()
    return failure.value


@pytest.mark.parametrize("name,secret", [("alice", "wrong-secret-123"), ("mallory", USER.secret)])
def test_wrong_secret_or_name_is_an_authentication_failure(name, secret):
    login = new_login()
    keys = start(login, "7")
    failure = failure_of(lambda: send(login, [("CHAP_N", name), ("CHAP_R", response_to(keys, secret, "7"))],
                                      transit=True))
    assert failure.status == 0x0201
    assert USER.secret not in str(failure) and secret not in str(failure)


def test_no_auth_offered_when_chap_required():
    login = new_login()
    failure = failure_of(lambda: send(login, [("InitiatorName", INI), ("TargetName", IQN),
                                              ("AuthMethod", "None")], transit=True))
    assert failure.status == 0x0201


def test_skipping_the_security_stage_when_chap_required():
    failure = failure_of(lambda: send(new_login(), [("InitiatorName", INI), ("TargetName", IQN)],
                                      csg=1, nsg=3, transit=True))
    assert failure.status == 0x0201


def test_transit_without_auth_method_when_chap_required():
    failure = failure_of(lambda: send(new_login(), [("InitiatorName", INI), ("TargetName", IQN)], transit=True))
    assert failure.status == 0x0201


def test_unsupported_algorithm():
    login = new_login()
    send(login, [("InitiatorName", INI), ("TargetName", IQN), ("AuthMethod", "CHAP")])
    assert failure_of(lambda: send(login, [("CHAP_A", "1,2")])).status == 0x0201


def test_mutual_required_but_not_asked_and_reflection():
    login = new_login(TargetAccess(chap=USER, mutual_chap=TARGET_USER))
    keys = start(login, "5")
    good = [("CHAP_N", USER.username), ("CHAP_R", response_to(keys, USER.secret, "5"))]
    assert failure_of(lambda: send(login, good, transit=True)).status == 0x0201
    login = new_login(TargetAccess(chap=USER, mutual_chap=TARGET_USER))
    keys = start(login, "5")
    reflected = [("CHAP_N", USER.username), ("CHAP_R", response_to(keys, USER.secret, "5")),
                 ("CHAP_I", keys["CHAP_I"]), ("CHAP_C", keys["CHAP_C"])]
    assert failure_of(lambda: send(login, reflected, transit=True)).status == 0x0201


def test_mutual_asked_but_not_configured():
    login = new_login()
    keys = start(login, "5")
    asked = [("CHAP_N", USER.username), ("CHAP_R", response_to(keys, USER.secret, "5")), ("CHAP_I", "1"),
             ("CHAP_C", "0x" + "ab" * 16)]
    assert failure_of(lambda: send(login, asked, transit=True)).status == 0x0201


def test_chap_keys_out_of_order_or_in_operational_stage():
    login = new_login()
    send(login, [("InitiatorName", INI), ("TargetName", IQN), ("AuthMethod", "CHAP")])
    assert failure_of(lambda: send(login, [("CHAP_R", "0x00")])).status == 0x0201
    login = new_login(TargetAccess())
    send(login, [("InitiatorName", INI), ("TargetName", IQN), ("AuthMethod", "None")], transit=True)
    assert failure_of(lambda: send(login, [("CHAP_A", "5")], csg=1, nsg=3)).status == 0x0200


def test_malformed_response_value():
    login = new_login()
    start(login, "5")
    failure = failure_of(lambda: send(login, [("CHAP_N", "alice"), ("CHAP_R", "zz")], transit=True))
    assert failure.status in (0x0200, 0x0201)


def test_discovery_chap():
    login = new_login(TargetAccess(), discovery=TargetAccess(chap=USER))
    keys = start(login, "6", session=(("SessionType", "Discovery"),))
    pdu, _ = send(login, [("CHAP_N", "alice"), ("CHAP_R", response_to(keys, USER.secret, "6"))], transit=True)
    assert pdu.flags & 0x80
    # without CHAP: refused
    login = new_login(TargetAccess(), discovery=TargetAccess(chap=USER))
    assert failure_of(lambda: send(login, [("InitiatorName", INI), ("SessionType", "Discovery"),
                                          ("AuthMethod", "None")], csg=0, nsg=3, transit=True)).status == 0x0201


def test_no_chap_configured_keeps_auth_method_none():
    login = new_login(TargetAccess())
    pdu, keys = send(login, [("InitiatorName", INI), ("TargetName", IQN), ("AuthMethod", "CHAP,None")],
                     transit=True)
    assert keys["AuthMethod"] == "None" and pdu.flags & 0x80


def test_acl_refuses_other_initiators_with_authorization_failure():
    access = TargetAccess(allowed_initiators=frozenset({INI}))
    failure = failure_of(lambda: send(new_login(access), [("InitiatorName", "iqn.2026-11.org.example:other"),
                                                           ("TargetName", IQN)], transit=True))
    assert failure.status == 0x0202
    pdu, _ = send(new_login(access), [("InitiatorName", INI.upper().replace("IQN", "iqn")), ("TargetName", IQN)],
                  transit=True)
    assert pdu.flags & 0x80


def test_visible_targets_follow_the_acl():
    policy = AccessPolicy(1, {IQN: TargetAccess(allowed_initiators=frozenset({INI})),
                              "iqn.2026-11.org.ringtgt:open": TargetAccess("open")})
    assert policy.visible(INI) == {IQN: None, "iqn.2026-11.org.ringtgt:open": "open"}
    assert policy.visible("iqn.2026-11.org.example:other") == {"iqn.2026-11.org.ringtgt:open": "open"}


def test_admit_refusal_is_the_login_status():
    login = Login(AccessPolicy(1, {IQN: TargetAccess()}, admit=lambda name: 0x0206), lambda: 1)
    assert failure_of(lambda: send(login, [("InitiatorName", INI), ("TargetName", IQN)])).status == 0x0206


def test_chap_state_table_rejects_keys_after_done():
    chap = Chap(USER, random=lambda n: bytes(n))
    keys = dict(chap.receive({"CHAP_A": "5"}))
    chap.receive({"CHAP_N": "alice", "CHAP_R": response_to(keys, USER.secret, "5")})
    assert chap.complete
    with pytest.raises(LoginFailure):
        chap.receive({"CHAP_A": "5"})
