"""RFC 7143 behaviour seen through tests/initiator.py: login negotiation, write paths, Data-In, NOP, logout,
discovery, session reinstatement."""
import os

import pytest
from harness import HOST, connect_to_worker, session

import initiator as I

NAME = "iqn.2026-11.org.ringtgt:protocol"


def test_login_negotiation_answers(shared_ringtgt):
    offered = {"MaxRecvDataSegmentLength": "65536", "MaxBurstLength": "131072", "FirstBurstLength": "32768",
               "ErrorRecoveryLevel": "0", "HeaderDigest": "None", "DataDigest": "None"}
    with I.Initiator.connect(HOST, shared_ringtgt.port) as ini:
        ini.login(shared_ringtgt.iqn, initiator_name=NAME + "-keys", operational=offered,
                  extra_keys=[("X-org.ringtgt.NoSuchKey", "1"), ("NoSuchStandardKey", "Yes")])
        answers = dict(ini.target_keys)
        said = f"target answered {ini.target_keys}"
        keys = [k for k, _ in ini.target_keys]
        assert len(keys) == len(set(keys)), said
        assert 512 <= int(answers["MaxRecvDataSegmentLength"]) <= 0xFFFFFF, said
        max_burst = int(answers.get("MaxBurstLength", 262144))
        first_burst = int(answers.get("FirstBurstLength", 65536))
        assert max_burst <= 131072, said
        assert first_burst <= 32768 and first_burst <= max_burst, said
        assert answers["ErrorRecoveryLevel"] == "0", said
        assert answers["HeaderDigest"] == "None" and answers["DataDigest"] == "None", said
        assert answers["X-org.ringtgt.NoSuchKey"] == "NotUnderstood", said
        assert answers["NoSuchStandardKey"] == "NotUnderstood", said
        assert ini.tsih != 0, "the final login response must carry the TSIH the target assigned"
        ini.clear_unit_attentions()
        assert ini.logout().bhs[2] == 0


def test_login_digest_offer_answered_with_an_offered_value(shared_ringtgt):
    with I.Initiator.connect(HOST, shared_ringtgt.port) as ini:
        ini.login(shared_ringtgt.iqn, initiator_name=NAME + "-digest",
                  operational={"HeaderDigest": "None,CRC32C", "DataDigest": "None"})
        assert dict(ini.target_keys)["HeaderDigest"] in ("None", "CRC32C"), ini.target_keys


def test_discovery_send_targets(shared_ringtgt):
    with I.Initiator.connect(HOST, shared_ringtgt.port) as ini:
        ini.login(None, initiator_name=NAME + "-disc", session_type="Discovery")
        answers = ini.send_targets()
        assert ("TargetName", shared_ringtgt.iqn) in answers, answers
        addresses = [v for k, v in answers if k == "TargetAddress"]
        assert any(a.startswith(shared_ringtgt.portal + ",") for a in addresses), answers
        assert ini.logout().bhs[2] == 0


def write_then_read(ini, data: bytes, lba: int = 2048) -> I.ScsiResult:
    written = ini.write(lba, data, block_size=512)
    assert written.status == I.GOOD, written
    back = ini.read(lba, len(data) // 512, block_size=512)
    assert back.status == I.GOOD and back.data == data
    return written


def test_write_unsolicited_data_out(ringtgt):
    # ringtgt answers ImmediateData=No on purpose (see target/iscsi/negotiation.py): the first burst travels
    # in unsolicited Data-Out PDUs, whose DataSN the target checks; `initial_r2t = false` allows them at all.
    with session(ringtgt(server_extra="initial_r2t = false"), NAME + "-unsolicited",
                 operational={"InitialR2T": "No", "ImmediateData": "Yes", "FirstBurstLength": "65536"}) as ini:
        assert ini.params["InitialR2T"] == "No" and ini.params["ImmediateData"] == "No", \
            f"unexpected answer: {ini.target_keys}"
        first_burst = int(ini.params["FirstBurstLength"])
        data = os.urandom(256 * 1024)
        written = write_then_read(ini, data)
        # Only what the first burst did not carry is solicited, from where the burst ended.
        assert written.r2ts and written.r2ts[0][0] == first_burst, written.r2ts
        assert sum(length for _, length in written.r2ts) == len(data) - first_burst, written.r2ts
        small = os.urandom(4096)  # fits the first burst: no R2T at all
        assert write_then_read(ini, small, lba=4096).r2ts == []


def test_write_immediate_data_when_configured(ringtgt):
    # `immediate_data = true`: the first burst rides in the command PDU itself; the rest is solicited.
    with session(ringtgt(server_extra="immediate_data = true"), NAME + "-immediate",
                 operational={"InitialR2T": "Yes", "ImmediateData": "Yes", "FirstBurstLength": "65536"}) as ini:
        assert ini.params["ImmediateData"] == "Yes", f"unexpected answer: {ini.target_keys}"
        assert write_then_read(ini, os.urandom(4096)).r2ts == []
        data = os.urandom(256 * 1024)
        written = write_then_read(ini, data, lba=4096)
        first_burst = int(ini.params["FirstBurstLength"])
        assert written.r2ts and written.r2ts[0][0] == first_burst, written.r2ts
        assert sum(length for _, length in written.r2ts) == len(data) - first_burst, written.r2ts


def test_write_solicited_by_r2t_only(shared_ringtgt):
    with session(shared_ringtgt, NAME + "-r2t",
                 operational={"InitialR2T": "Yes", "ImmediateData": "No", "MaxBurstLength": "65536"}) as ini:
        assert ini.params["InitialR2T"] == "Yes" and ini.params["ImmediateData"] == "No", f"{ini.target_keys}"
        max_burst = int(ini.params["MaxBurstLength"])
        data = os.urandom(256 * 1024)
        written = write_then_read(ini, data)
        offsets = [offset for offset, _ in written.r2ts]
        assert offsets[0] == 0 and len(written.r2ts) >= len(data) // max_burst, written.r2ts
        assert all(length <= max_burst for _, length in written.r2ts), written.r2ts
        covered = sorted(written.r2ts)
        assert all(a + la == b for (a, la), (b, _) in zip(covered, covered[1:])), covered
        assert covered[-1][0] + covered[-1][1] == len(data), covered


@pytest.mark.parametrize("our_mrdsl", [4096, 8192])
def test_read_spans_many_data_in_pdus(shared_ringtgt, our_mrdsl):
    with session(shared_ringtgt, NAME + f"-datain{our_mrdsl}",
                 operational={"MaxRecvDataSegmentLength": str(our_mrdsl)}) as ini:
        data = os.urandom(128 * 1024)
        write_then_read(ini, data, lba=8192)
        back = ini.read(8192, len(data) // 512, block_size=512)
        # The initiator checks every PDU's DataSN, offset and size <= our MaxRecvDataSegmentLength.
        assert back.data == data and back.data_in_pdus >= len(data) // our_mrdsl, back.data_in_pdus


def test_nop_out_ping_gets_nop_in(shared_ringtgt):
    with session(shared_ringtgt, NAME + "-nop") as ini:
        payload = os.urandom(100)
        for _ in range(3):
            answer = ini.nop_ping(payload)
            assert answer.opcode == I.NOP_IN and answer.final, answer
            assert answer.ttt == I.RESERVED_TAG, answer
            assert answer.data == payload, "NOP-In must echo the ping data"
        assert ini.nop_ping().data == b""


def test_logout_response_then_close(shared_ringtgt):
    with session(shared_ringtgt, NAME + "-logout") as ini:
        answer = ini.logout()
        assert answer.opcode == I.LOGOUT_RESPONSE and answer.bhs[2] == 0, answer
        assert answer.final
        assert ini.wait_closed() == b"", "nothing may follow the Logout Response"


@pytest.mark.parametrize("placement", ["same-worker", "other-worker"])
def test_session_reinstatement_closes_the_old_connection(shared_ringtgt, placement):
    """Same ISID + InitiatorName, TSIH 0, while the first session is logged in: the target reinstates —
    the old connection is closed, the new session works — also when the new login lands on another worker
    (the coordinator's session registry ends the old session there before the new login completes)."""
    name = f"{NAME}-reinstate-{placement}"
    first_worker, first = connect_to_worker(shared_ringtgt, lambda pid: True)
    with first:
        first.login(shared_ringtgt.iqn, initiator_name=name)
        first.clear_unit_attentions()
        same = placement == "same-worker"
        _, second = connect_to_worker(shared_ringtgt, lambda pid: (pid == first_worker) == same)
        with second:
            second.isid = first.isid
            second.login(shared_ringtgt.iqn, initiator_name=name)
            assert second.tsih != 0
            try:
                first.wait_closed()  # anything (e.g. an Async Message) may come first, then the close
            except TimeoutError:
                pytest.fail(f"the reinstated session's old connection ({placement}) is still open 30 s later")
            second.clear_unit_attentions()
            write_then_read(second, os.urandom(8192), lba=16384)
            assert second.logout().bhs[2] == 0
