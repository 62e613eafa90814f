"""Full feature phase of one connection: command window, reads, writes with R2T, residuals, NOP, TMF, logout.

The SCSI side is the small block device of tests/iscsi_host.py, which answers at once: the real SCSI layer has its own
tests; here only the transport's state transitions are under test.
"""
import gc

import pytest

from target.iscsi import pdu as P
from target.iscsi.access import AccessPolicy, TargetAccess
from target.iscsi import connection
from target.iscsi.connection import Connection
from target.iscsi.negotiation import parse_text
from target.iscsi.write_budget import WritePool
from target.scsi.task import GOOD
from tests.iscsi_helpers import (build, data_out, login_request, logout_request, nop_out, scsi_command,
                                 task_management, text_request)
from tests.iscsi_host import BLOCK, INI, IQN, Host, connect, exchange, read10, sent, write10


def test_read_is_split_by_mrdsl_with_status_in_last_pdu():
    conn = connect()
    conn.host.device.disk[:4096] = bytes(range(256)) * 16
    pdus = exchange(conn, scsi_command(read10(0, 8), edtl=4096, read=True, cmd_sn=1))
    assert [p.opcode for p, _ in pdus] == [P.DATA_IN] * 4
    assert b"".join(d for _, d in pdus) == conn.host.device.disk[:4096]
    assert [p.data_sn for p, _ in pdus] == [0, 1, 2, 3] and [p.buffer_offset for p, _ in pdus] == [0, 1024, 2048, 3072]
    last = pdus[-1][0]
    assert last.flags & 0x81 == 0x81 and last.status == GOOD and last.stat_sn == 101
    assert pdus[1][0].flags & 0x80        # end of a 2048-byte burst


def test_read_residual_overflow_and_underflow():
    conn = connect()
    (pdu, data), = exchange(conn, scsi_command(read10(0, 2), edtl=512, read=True, cmd_sn=1))
    assert len(data) == 512 and pdu.flags & 0x04 and pdu.residual_count == 512
    pdus = exchange(conn, scsi_command(read10(0, 1), edtl=1024, read=True, cmd_sn=2))
    assert pdus[-1][0].flags & 0x02 and pdus[-1][0].residual_count == 512


def test_finished_commands_leave_no_reference_cycles():
    """Refcounting frees what a command used once it is answered: the worker's collector runs rarely (gctune.py)."""
    conn = connect(InitialR2T="No", ImmediateData="Yes")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(4):
            (read, _), = exchange(conn, scsi_command(read10(0, 1), itt=2 * i, edtl=512, read=True, cmd_sn=2 * i + 1))
            assert exchange(conn, scsi_command(write10(0, 1), itt=2 * i + 1, edtl=512, write=True, final=False,
                                               cmd_sn=2 * i + 2)) == []
            (write, _), = exchange(conn, data_out(b"x" * 512, itt=2 * i + 1))      # unsolicited (InitialR2T=No)
            assert read.status == write.status == GOOD
        gc.collect()
        cyclic = sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == [], f"left to the cyclic collector: {cyclic}"


def test_write_with_r2t():
    conn = connect()
    (r2t, _), = exchange(conn, scsi_command(write10(1, 4), edtl=2048, write=True, cmd_sn=1))
    assert r2t.opcode == P.R2T and (r2t.buffer_offset, r2t.desired_length) == (0, 2048)
    ttt = r2t.ttt
    payload = bytes(range(256)) * 8
    assert exchange(conn, data_out(payload[:1024], ttt=ttt, final=False)) == []
    (resp, _), = exchange(conn, data_out(payload[1024:], ttt=ttt, data_sn=1, offset=1024))
    assert resp.opcode == P.SCSI_RESPONSE and resp.status == GOOD and resp.exp_data_sn == 1
    assert conn.host.device.disk[512:2560] == payload


def test_unsolicited_data_then_r2t():
    conn = connect(InitialR2T="No", ImmediateData="Yes")
    payload = b"\xab" * 3072
    assert exchange(conn, scsi_command(write10(0, 6), edtl=3072, write=True, final=False)) == []
    assert exchange(conn, data_out(payload[:512], final=False)) == []
    (r2t, _), = exchange(conn, data_out(payload[512:1024], data_sn=1, offset=512))
    assert (r2t.buffer_offset, r2t.desired_length) == (1024, 2048)
    (resp, _), = exchange(conn, data_out(payload[1024:], ttt=r2t.ttt, offset=1024))
    assert resp.status == GOOD and conn.host.device.disk[:3072] == payload


def test_a_huge_edtl_solicits_and_holds_only_what_the_cdb_asks_for():
    conn = connect()
    (r2t, _), = exchange(conn, scsi_command(write10(0, 1), edtl=64 << 20, write=True, cmd_sn=1))
    assert r2t.opcode == P.R2T and (r2t.buffer_offset, r2t.desired_length) == (0, 512)  # one block, not 64 MiB
    command, = conn.commands.values()
    assert len(command.buffer) == 0 and command.wanted == 512         # nothing held before data arrives
    (resp, _), = exchange(conn, data_out(b"\xcd" * 512, ttt=r2t.ttt))
    assert resp.status == GOOD and resp.flags & 0x02 and resp.residual_count == (64 << 20) - 512  # underflow residual
    assert conn.host.device.disk[:512] == b"\xcd" * 512


def test_unsolicited_data_beyond_the_cdb_is_counted_not_kept():
    conn = connect(InitialR2T="No", ImmediateData="Yes")
    assert exchange(conn, scsi_command(write10(0, 1), edtl=1024, write=True, final=False)) == []
    (resp, _), = exchange(conn, data_out(b"\x11" * 1024))
    assert resp.status == GOOD and resp.flags & 0x02 and resp.residual_count == 512
    assert conn.host.device.disk[:1024] == b"\x11" * 512 + bytes(512)


def test_immediate_data_is_refused():
    conn = connect(ImmediateData="Yes")
    assert not conn.params.immediate_data
    exchange(conn, scsi_command(write10(0, 1), edtl=512, write=True, data=b"x" * 512))
    assert conn.closing


def test_write_residuals_follow_the_cdb():
    conn = connect()
    (resp, _), = exchange(conn, scsi_command(write10(0, 1), edtl=0, write=True, cmd_sn=1))
    assert resp.flags & 0x04 and resp.residual_count == 512                       # overflow: CDB wants more than EDTL
    (resp, _), = exchange(conn, scsi_command(read10(0, 1), edtl=0, read=True, cmd_sn=2))
    assert resp.opcode == P.SCSI_RESPONSE and resp.flags & 0x04 and resp.residual_count == 512


def test_bad_data_sn_closes_the_connection():
    conn = connect()
    (r2t, _), = exchange(conn, scsi_command(write10(0, 2), edtl=1024, write=True))
    exchange(conn, data_out(b"x" * 512, ttt=r2t.ttt, data_sn=27, final=False))
    assert conn.closing


def test_cmd_sn_window():
    conn = connect()
    tur = bytes(6)
    assert exchange(conn, scsi_command(tur, cmd_sn=0)) == []                   # stale: dropped
    assert exchange(conn, scsi_command(tur, cmd_sn=500, itt=2)) == []         # beyond MaxCmdSN: dropped
    assert exchange(conn, scsi_command(tur, cmd_sn=2, itt=3)) == []           # early: held
    pdus = exchange(conn, scsi_command(tur, cmd_sn=1, itt=4))
    assert [p.itt for p, _ in pdus] == [4, 3]
    assert pdus[-1][0].exp_cmd_sn == 3                                               # ExpCmdSN advanced past both
    (imm, _), = exchange(conn, scsi_command(tur, cmd_sn=3, itt=5, immediate=True))
    assert imm.exp_cmd_sn == 3                                                      # immediate: no advance


def test_a_command_is_outstanding_until_its_response_is_sent():
    conn = connect()
    conn.receive_data(scsi_command(read10(0, 8), edtl=4096, read=True, cmd_sn=1))
    assert conn.out and conn.window.outstanding == 1                          # answered, not sent
    batch = conn.take_output()
    assert batch and conn.window.outstanding == 1                             # taken, not sent
    conn.output_sent()
    assert conn.window.outstanding == 0


def test_unsent_output_over_the_bound_freezes_the_window_until_it_drains(monkeypatch):
    monkeypatch.setattr(connection, "OUTPUT_BOUND", 8192 + 2 * 48)
    conn = connect()

    def read(sn):
        return scsi_command(read10(0, 8), itt=sn, edtl=4096, read=True, cmd_sn=sn)
    for sn in (1, 2):
        conn.receive_data(read(sn))
    assert not conn.over_output_bound
    conn.receive_data(read(3))                                                # 12 KiB unsent
    assert conn.over_output_bound
    frozen = conn.window.max_cmd_sn
    for sn in range(4, frozen + 3):                                           # the window lets `frozen` in
        conn.receive_data(read(sn))
    assert conn.window.exp_cmd_sn == frozen + 1 and len(conn.commands) == 0
    assert conn.window.outstanding == frozen and conn.window.max_cmd_sn == frozen     # no further
    pdus = sent(conn)
    assert sum(p.opcode == P.DATA_IN and p.flags & 0x01 for p, _ in pdus) == frozen
    assert not conn.over_output_bound and conn.window.outstanding == 0
    (nop, _), = sent(conn)                                                    # the window reopened: said so
    assert nop.opcode == P.NOP_IN and nop.itt == nop.ttt == P.RESERVED_TAG
    assert (nop.exp_cmd_sn, nop.max_cmd_sn) == (frozen + 1, frozen + 128)
    conn.receive_data(read(frozen + 1))
    assert len(sent(conn)) == 4 and conn.window.exp_cmd_sn == frozen + 2


def test_nop_out_ping_and_logout():
    conn = connect()
    (nop, data), = exchange(conn, nop_out(b"ping", itt=9, cmd_sn=1))
    assert nop.opcode == P.NOP_IN and nop.itt == 9 and data == b"ping"
    (resp, _), = exchange(conn, logout_request(itt=10, cmd_sn=2))
    assert resp.opcode == P.LOGOUT_RESPONSE and resp.response == 0 and conn.closing


def test_target_ping_answered():
    conn = connect()
    conn.ping()
    (nop, _), = exchange(conn)
    assert nop.itt == P.RESERVED_TAG and nop.ttt == conn.ping_ttt
    exchange(conn, nop_out(immediate=True, itt=P.RESERVED_TAG, ttt=nop.ttt, cmd_sn=1))
    assert conn.ping_ttt is None


def test_task_management_abort_and_lun_reset():
    conn = connect()
    (r2t, _), = exchange(conn, scsi_command(write10(0, 1), edtl=512, write=True, itt=20))   # waits for data
    # RFC 5048 §4.1.3: the answer waits for the Data-Out the R2T solicited; the aborted write never answers
    assert exchange(conn, task_management(1, itt=21, referenced_task_tag=20, cmd_sn=2)) == []
    assert not conn.commands
    (tmf, _), = exchange(conn, data_out(bytes(512), itt=20, ttt=r2t.ttt))
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.response == 0 and tmf.itt == 21 and not conn.draining
    assert exchange(conn, data_out(bytes(512), itt=20, ttt=r2t.ttt)) == []           # late data: dropped
    (tmf, _), = exchange(conn, task_management(1, itt=22, referenced_task_tag=99, cmd_sn=2, ref_cmd_sn=5))
    assert tmf.response == 1                                                              # no such task
    (tmf, _), = exchange(conn, task_management(5, itt=23, cmd_sn=2))
    assert tmf.response == 0 and conn.host.device.resets == [0]


def test_abort_of_a_task_already_answered_is_task_does_not_exist():
    """libiscsi's iSCSITMF.AbortTaskSimpleAsync: a command answered GOOD, then ABORT TASK for it: the initiator has
    seen the response, so Function complete would claim an abort that never happened (RFC 7143 §11.5.1 c)."""
    conn = connect()
    (response, _), = exchange(conn, scsi_command(read10(0, 1), edtl=512, read=True, itt=20, cmd_sn=1))
    assert response.opcode == P.DATA_IN and response.status == 0
    (tmf, _), = exchange(conn, task_management(1, itt=21, referenced_task_tag=20, cmd_sn=2, ref_cmd_sn=1))
    assert tmf.response == 1                                                              # task does not exist
    # §11.5.1 b): a task in the window, before the TMF, that never arrived counts as received
    (tmf, _), = exchange(conn, task_management(1, itt=22, referenced_task_tag=30, cmd_sn=4, ref_cmd_sn=2))
    assert tmf.response == 0


def test_lun_reset_answer_waits_for_the_target():
    conn = connect()
    conn.host.device.hold_resets = True
    assert exchange(conn, task_management(5, itt=23, cmd_sn=2)) == []
    conn.host.device.held.pop()()
    (tmf, _), = exchange(conn)
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.response == 0 and tmf.itt == 23


def test_abort_task_answers_once_the_backstore_is_done_and_the_read_never_answers():
    conn = connect()
    conn.host.device.reads_in_flight = []
    assert exchange(conn, scsi_command(read10(0, 1), edtl=512, read=True, itt=30)) == []
    assert exchange(conn, task_management(1, itt=31, referenced_task_tag=30, cmd_sn=2)) == []
    conn.host.device.reads_in_flight.pop()()                   # the disk completes after the abort
    (tmf, _), = exchange(conn)
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.itt == 31 and tmf.response == 0
    assert not conn.aborted_in_flight and not conn.commands


def test_abort_task_does_not_wait_for_a_task_parked_at_the_coordinator():
    conn = connect()
    conn.host.device.reads_in_flight = []
    conn.host.device.reads_remote = True
    exchange(conn, scsi_command(read10(0, 1), edtl=512, read=True, itt=30))
    (tmf, _), = exchange(conn, task_management(1, itt=31, referenced_task_tag=30, cmd_sn=2))
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.response == 0
    conn.host.device.reads_in_flight.pop()()
    assert exchange(conn) == []                                 # the late answer is dropped


SANITIZE_8 = bytes([0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0])


def test_commands_after_a_sanitize_waiting_for_its_data_wait_for_it():
    conn = connect()
    (r2t, _), = exchange(conn, scsi_command(SANITIZE_8, edtl=8, write=True, itt=40, cmd_sn=1))
    assert exchange(conn, scsi_command(bytes(6), itt=41, cmd_sn=2)) == []          # a TUR, held behind it
    responses = exchange(conn, data_out(bytes(8), itt=40, ttt=r2t.ttt))
    assert [pdu.itt for pdu, _ in responses] == [40, 41] and conn.host.device.executed == [0x48, 0x00]
    assert not conn.unit_wide


def test_aborting_a_sanitize_that_waits_for_its_data_releases_the_commands_after_it():
    conn = connect()
    (r2t, _), = exchange(conn, scsi_command(SANITIZE_8, edtl=8, write=True, itt=40, cmd_sn=1))
    assert exchange(conn, scsi_command(bytes(6), itt=41, cmd_sn=2)) == []
    (tur, _), = exchange(conn, task_management(1, itt=42, referenced_task_tag=40, cmd_sn=3))
    assert tur.opcode == P.SCSI_RESPONSE and tur.itt == 41 and conn.host.device.executed == [0x00]
    (tmf, _), = exchange(conn, data_out(bytes(8), itt=40, ttt=r2t.ttt))           # the data it still owed
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.itt == 42 and conn.host.device.executed == [0x00]


def test_cold_reset_answers_then_closes():
    conn = connect()
    (tmf, _), = exchange(conn, task_management(7, itt=24, cmd_sn=2))
    assert tmf.response == 0 and conn.closing and conn.host.device.resets == ["cold"]


def test_unknown_opcode_is_rejected_and_connection_survives():
    conn = connect()
    (rej, data), = exchange(conn, build(0x1C, itt=5))
    assert rej.opcode == P.REJECT and rej.reason == P.REJECT_COMMAND_NOT_SUPPORTED and data[0] == 0x1C
    assert not conn.closing


@pytest.mark.parametrize("opcode", [P.SCSI_COMMAND, P.NOP_OUT, P.TEXT_REQUEST])
def test_commands_before_login_close(opcode):
    conn = Connection(Host(), ("127.0.0.1", 3260), ("127.0.0.1", 5000))
    conn.receive_data(build(opcode))
    assert conn.closing


def test_send_targets_in_discovery_session():
    conn = connect(SessionType="Discovery")
    (resp, data), = exchange(conn, text_request(b"SendTargets=All\0", itt=3, cmd_sn=1))
    assert parse_text(data) == [("TargetName", IQN), ("TargetAddress", "127.0.0.1:3260,1")]
    (rej, _), = exchange(conn, scsi_command(bytes(6), cmd_sn=2))
    assert rej.opcode == P.REJECT


class ManyTargetsHost(Host):
    access = AccessPolicy(1, {f"iqn.2026-11.org.ringtgt:target-{i:03d}": TargetAccess() for i in range(256)})


def discovery_connection(host=None, mrdsl="8192"):
    conn = Connection(host or Host(), ("127.0.0.1", 3260), ("127.0.0.1", 5000))
    conn.receive_data(login_request([("InitiatorName", INI), ("SessionType", "Discovery"),
                                     ("MaxRecvDataSegmentLength", mrdsl)]))
    (pdu, _), = exchange(conn)
    assert pdu.login_status == 0
    return conn


def test_send_targets_answer_is_split_to_the_initiators_segment_length():
    """SendTargets=All over 256 targets (about 20 KB) to an initiator that takes 8192 bytes per PDU: continued
    Text Responses (C bit, a TTT), the next part for each empty Text Request carrying that TTT (RFC 7143 §11.11)."""
    conn = discovery_connection(ManyTargetsHost())
    (resp, data), = exchange(conn, text_request(b"SendTargets=All\0"))
    collected, parts, cmd_sn = data, 1, 2
    while not resp.flags & P.FINAL:
        assert resp.flags == 0x40 and resp.ttt != P.RESERVED_TAG and len(data) == 8192
        (resp, data), = exchange(conn, text_request(ttt=resp.ttt, cmd_sn=cmd_sn))
        collected, parts, cmd_sn = collected + data, parts + 1, cmd_sn + 1
    assert resp.flags == P.FINAL and resp.ttt == P.RESERVED_TAG and len(data) <= 8192
    names = [v for k, v in parse_text(collected) if k == "TargetName"]
    assert parts == 3 and len(names) == 256 and names[0].endswith("target-000") and names[-1].endswith("target-255")


def test_continued_text_request_is_answered_empty_then_as_a_whole():
    """A Text Request with the C bit gets an empty Text Response with a TTT (F=0, C=0); the text is answered
    once the request that ends it arrives (RFC 7143 §6.2, §11.10.4)."""
    conn = discovery_connection()
    (resp, data), = exchange(conn, text_request(b"SendTar", cont=True))
    assert resp.opcode == P.TEXT_RESPONSE and resp.flags == 0 and data == b"" and resp.ttt != P.RESERVED_TAG
    (resp, data), = exchange(conn, text_request(b"gets=All\0", ttt=resp.ttt, cmd_sn=2))
    assert resp.flags == P.FINAL and parse_text(data) == [("TargetName", IQN), ("TargetAddress", "127.0.0.1:3260,1")]


def test_text_request_beyond_the_cap_is_rejected():
    conn = discovery_connection()
    ttt, cmd_sn, answers = P.RESERVED_TAG, 1, []
    for _ in range(9):                                  # 9 × 8000 bytes: past 64 KiB
        (resp, _), = exchange(conn, text_request(b"X-Pad=" + b"a" * 7994, ttt=ttt, cmd_sn=cmd_sn, cont=True))
        answers.append(resp.opcode)
        ttt, cmd_sn = resp.ttt, cmd_sn + 1
        if resp.opcode == P.REJECT:
            break
    assert answers == [P.TEXT_RESPONSE] * 8 + [P.REJECT] and resp.reason == P.REJECT_OUT_OF_RESOURCES
    assert not conn.closing
    (resp, data), = exchange(conn, text_request(b"SendTargets=All\0", cmd_sn=cmd_sn))
    assert resp.flags == P.FINAL and parse_text(data)[0] == ("TargetName", IQN)


@pytest.mark.parametrize("value", [b"Alle", b"iqn.bogus", b"All "])
def test_send_targets_with_an_invalid_value_is_rejected(value):
    conn = discovery_connection()
    (rej, data), = exchange(conn, text_request(b"SendTargets=" + value + b"\0"))
    assert rej.opcode == P.REJECT and rej.reason == P.REJECT_PROTOCOL_ERROR and data[0] == P.TEXT_REQUEST
    assert not conn.closing


def test_send_targets_for_an_unknown_iscsi_name_is_an_empty_answer():
    """A well-formed name the initiator may not see gets the answer a missing one gets: nothing."""
    conn = discovery_connection()
    (resp, data), = exchange(conn, text_request(b"SendTargets=iqn.2026-11.org.ringtgt:hidden\0"))
    assert resp.opcode == P.TEXT_RESPONSE and resp.flags == P.FINAL and data == b""
    (resp, data), = exchange(conn, text_request(IQN.upper().encode().join([b"SendTargets=", b"\0"]), cmd_sn=2))
    assert parse_text(data)[0] == ("TargetName", IQN)


def test_misspelt_text_key_is_not_understood():
    conn = discovery_connection()
    (resp, data), = exchange(conn, text_request(b"SendTarget=All\0"))
    assert resp.flags == P.FINAL and parse_text(data) == [("SendTarget", "NotUnderstood")]


def test_key_twice_in_one_text_request_is_rejected():
    conn = discovery_connection()
    (rej, _), = exchange(conn, text_request(b"SendTargets=All\0SendTargets=All\0"))
    assert rej.opcode == P.REJECT and rej.reason == P.REJECT_PROTOCOL_ERROR


def test_text_continuation_with_a_foreign_ttt_is_rejected():
    conn = discovery_connection()
    (rej, _), = exchange(conn, text_request(b"", ttt=0x1234))
    assert rej.opcode == P.REJECT and rej.reason == P.REJECT_INVALID_PDU_FIELD


def test_text_request_with_too_many_unknown_keys_is_rejected():
    """What a text answer holds is bounded: 64 KiB of NotUnderstood at most (here 5000 keys would need 105 KB)."""
    conn = discovery_connection()
    keys = [b"X-%04d=1\0" % i for i in range(5000)]
    ttt, cmd_sn = P.RESERVED_TAG, 1
    for start in range(0, 5000, 800):
        chunk = b"".join(keys[start:start + 800])
        (resp, _), = exchange(conn, text_request(chunk, ttt=ttt, cmd_sn=cmd_sn, cont=start + 800 < 5000))
        ttt, cmd_sn = resp.ttt, cmd_sn + 1
    assert resp.opcode == P.REJECT and resp.reason == P.REJECT_OUT_OF_RESOURCES


# The R2T budget (write_budget.py) -----------------------------------------------------------------------------
def write(lba, blocks, itt, **kwargs):
    return scsi_command(write10(lba, blocks), edtl=blocks * BLOCK, write=True, itt=itt, cmd_sn=itt, **kwargs)


def r2ts(pdus):
    """{ITT: (TTT, offset, length)} of the R2Ts among `pdus`."""
    return {pdu.itt: (pdu.ttt, pdu.buffer_offset, pdu.desired_length) for pdu, _ in pdus if pdu.opcode == P.R2T}


def answered(pdus):
    return [pdu.itt for pdu, _ in pdus if pdu.opcode == P.SCSI_RESPONSE]


def test_r2ts_stop_at_the_connection_budget_and_resume_in_order_as_writes_complete(monkeypatch):
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 2048)
    conn = connect()
    pdus = exchange(conn, write(0, 2, 1) + write(2, 2, 2) + write(4, 2, 3) + write(8, 4, 4) + write(12, 1, 5))
    solicited = r2ts(pdus)
    assert list(solicited) == [1, 2] and conn.write_held == 2048 == conn.write_pool.held    # 3, 4, 5 wait
    pdus = exchange(conn, data_out(b"\x02" * 1024, itt=2, ttt=solicited[2][0]))
    assert answered(pdus) == [2] and list(r2ts(pdus)) == [3]          # 4 (2048 bytes) would not fit: 5 waits too
    solicited.update(r2ts(pdus))
    pdus = exchange(conn, data_out(b"\x01" * 1024, itt=1, ttt=solicited[1][0]))
    assert answered(pdus) == [1] and r2ts(pdus) == {}                 # 3 holds 1024: 4 still does not fit
    pdus = exchange(conn, data_out(b"\x03" * 1024, itt=3, ttt=solicited[3][0]))
    assert answered(pdus) == [3] and list(r2ts(pdus)) == [4]
    (ttt, offset, length), = r2ts(pdus).values()
    assert (offset, length) == (0, 2048) and conn.write_held == 2048
    pdus = exchange(conn, data_out(b"\x04" * 2048, itt=4, ttt=ttt))
    assert answered(pdus) == [4] and list(r2ts(pdus)) == [5]
    pdus = exchange(conn, data_out(b"\x05" * 512, itt=5, ttt=r2ts(pdus)[5][0]))
    assert answered(pdus) == [5] and conn.write_held == 0 == conn.write_pool.held and not conn.write_waiting
    assert conn.host.device.disk[:13 * BLOCK] == b"\x01" * 1024 + b"\x02" * 1024 + b"\x03" * 1024 + bytes(1024) \
        + b"\x04" * 2048 + b"\x05" * 512


def test_writes_waiting_for_budget_hold_only_the_data_they_sent(monkeypatch):
    """A write's whole buffer comes from its unit's pool once the write holds budget, not with its immediate data:
    writes queued behind the budget hold what they sent (at most FirstBurstLength), not their whole transfer."""
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 2048)
    host = Host()
    host.offers = {**Host.offers, "ImmediateData": True}
    conn = connect(host, ImmediateData="Yes")
    assert conn.params.immediate_data
    pdus = exchange(conn, b"".join(scsi_command(write10(4 * i, 4), itt=i, cmd_sn=i, edtl=2048, write=True,
                                                data=bytes([i]) * 512) for i in (1, 2, 3)))
    solicited = r2ts(pdus)
    assert list(solicited) == [1] and conn.write_held == 2048          # 2 and 3 wait for budget
    assert [len(conn.commands[itt].buffer) for itt in (2, 3)] == [512, 512]
    ttt, offset, length = solicited[1]
    pdus = exchange(conn, data_out(b"\x01" * length, itt=1, ttt=ttt, offset=offset))
    assert answered(pdus) == [1] and list(r2ts(pdus)) == [2]
    assert len(conn.commands[2].buffer) == 512 and len(conn.commands[3].buffer) == 512


def test_a_write_bigger_than_the_budget_proceeds_when_the_connection_holds_nothing(monkeypatch):
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 1024)
    conn = connect()
    (r2t, _), = exchange(conn, write(0, 8, 1))                         # 4096 bytes: two 2048-byte bursts
    assert (r2t.buffer_offset, r2t.desired_length) == (0, 2048) and conn.write_held == 4096
    assert exchange(conn, write(8, 1, 2)) == []                        # waits behind it
    (r2t, _), = exchange(conn, data_out(b"a" * 2048, itt=1, ttt=r2t.ttt))
    assert r2t.itt == 1 and (r2t.buffer_offset, r2t.desired_length) == (2048, 2048)
    pdus = exchange(conn, data_out(b"b" * 2048, itt=1, ttt=r2t.ttt, offset=2048))
    assert answered(pdus) == [1] and r2ts(pdus)[2][1:] == (0, 512)


def test_a_unit_wide_command_gets_its_r2t_although_writes_held_behind_it_fill_the_budget(monkeypatch):
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 1024)
    conn = connect(InitialR2T="No", ImmediateData="Yes")
    assert exchange(conn, scsi_command(SANITIZE_8, edtl=8, write=True, itt=40, cmd_sn=1, final=False)) == []
    (r2t, _), = exchange(conn, write(0, 2, 2))                        # no unsolicited data: solicited at once
    assert exchange(conn, data_out(b"w" * 1024, itt=2, ttt=r2t.ttt)) == []      # held behind the SANITIZE
    (r2t, _), = exchange(conn, data_out(bytes(4), itt=40))            # short unsolicited burst: the rest by R2T
    assert r2t.itt == 40 and (r2t.buffer_offset, r2t.desired_length) == (4, 4)
    pdus = exchange(conn, data_out(bytes(4), itt=40, ttt=r2t.ttt, offset=4))
    assert answered(pdus) == [40, 2] and conn.write_held == 0


def test_the_worker_pool_guarantees_each_connection_one_write_and_wakes_waiting_connections():
    pool = WritePool(2048)
    a, b = connect(Host(pool)), connect(Host(pool))
    (a1, _), = exchange(a, write(0, 4, 1))                             # all of the pool
    assert exchange(a, write(4, 1, 2)) == [] and list(pool.waiting) == [a]
    (b1, _), = exchange(b, write(8, 1, 1))                             # a connection's first write always goes
    assert b1.opcode == P.R2T and pool.held == 2560
    assert exchange(b, write(9, 1, 2)) == [] and list(pool.waiting) == [a, b]
    ready = b.host.ready
    pdus = exchange(a, data_out(b"a" * 2048, itt=1, ttt=a1.ttt))
    assert answered(pdus) == [1] and list(r2ts(pdus)) == [2]
    (b2, _), = exchange(b)                                             # woken by a's release, without input
    assert b2.opcode == P.R2T and b2.itt == 2 and b.host.ready > ready and not pool.waiting
    assert pool.held == 512 * 3


def test_aborting_writes_releases_their_budget_and_skips_those_waiting(monkeypatch):
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 1024)
    conn = connect()
    (r2t, _), = exchange(conn, write(0, 2, 1))
    assert exchange(conn, write(2, 1, 2) + write(3, 1, 3) + write(4, 1, 4)) == []
    (tmf, _), = exchange(conn, task_management(1, itt=50, referenced_task_tag=2, cmd_sn=5))
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.response == 0 and list(conn.write_waiting) == [conn.commands[3],
                                                                                               conn.commands[4]]
    assert exchange(conn, task_management(1, itt=51, referenced_task_tag=1, cmd_sn=5)) == []
    assert conn.write_held == 1024                                    # its solicited Data-Out is still due
    pdus = exchange(conn, data_out(bytes(1024), itt=1, ttt=r2t.ttt))  # drained: the TMF answers, 3 and 4 go
    assert [pdu.opcode for pdu, _ in pdus] == [P.R2T, P.R2T, P.TASK_MGMT_RESPONSE]
    solicited = r2ts(pdus)
    assert list(solicited) == [3, 4] and conn.write_held == 1024 == conn.write_pool.held
    assert exchange(conn, task_management(5, itt=52, cmd_sn=5)) == []   # LUN RESET
    assert not conn.commands and conn.write_held == 1024               # 3 and 4 still owe their Data-Out
    assert exchange(conn, data_out(b"3" * 512, itt=3, ttt=solicited[3][0])) == [] and conn.write_held == 512
    (resp, _), = exchange(conn, data_out(b"4" * 512, itt=4, ttt=solicited[4][0]))
    assert resp.opcode == P.TASK_MGMT_RESPONSE and resp.itt == 52
    assert conn.write_held == 0 == conn.write_pool.held and conn.host.device.disk == bytes(len(conn.host.device.disk))


def test_a_write_the_disk_still_runs_holds_its_budget_until_it_completes_also_when_aborted(monkeypatch):
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 1024)
    conn = connect()
    conn.host.device.writes_in_flight = []
    (r2t, _), = exchange(conn, write(0, 2, 1))
    assert exchange(conn, write(2, 1, 2)) == []
    assert exchange(conn, data_out(bytes(1024), itt=1, ttt=r2t.ttt)) == []        # at the disk
    assert exchange(conn, task_management(1, itt=50, referenced_task_tag=1, cmd_sn=3)) == []
    assert conn.write_held == 1024 and list(conn.write_waiting) == [conn.commands[2]]
    conn.host.device.writes_in_flight.pop()()
    pdus = exchange(conn)
    assert [pdu.opcode for pdu, _ in pdus] == [P.TASK_MGMT_RESPONSE, P.R2T] and pdus[1][0].itt == 2
    assert conn.write_held == 512


def test_closing_releases_the_budget_and_wakes_connections_waiting_for_the_pool():
    pool = WritePool(2048)
    a, b = connect(Host(pool)), connect(Host(pool))
    a.host.device.writes_in_flight = []
    (a1, _), = exchange(a, write(0, 2, 1))
    (a2, _), = exchange(a, write(2, 2, 2))
    exchange(a, data_out(bytes(1024), itt=2, ttt=a2.ttt))              # at the disk
    assert exchange(a, write(4, 1, 3)) == [] and list(pool.waiting) == [a]
    (b1, _), = exchange(b, write(8, 2, 1))
    assert exchange(b, write(10, 1, 2)) == [] and list(pool.waiting) == [a, b]
    a.close()                                                          # 1 freed at once, 2 once the disk is done
    assert pool.held == 1024 + 1024 and a.write_held == 1024 and not a.write_waiting
    assert r2ts(exchange(b)) == {} and list(pool.waiting) == [b]
    a.host.device.writes_in_flight.pop()()
    assert pool.held == 1024 + 512 and a.write_held == 0
    assert list(r2ts(exchange(b))) == [2] and not pool.waiting


def test_a_write_waiting_on_the_coordinator_frees_its_budget_when_aborted_or_its_connection_closes():
    """Neither waits for the coordinator's answer, which a closed connection never gets (its requests are
    withdrawn): the budget is free at once, and a late answer changes nothing."""
    conn = connect()
    conn.host.device.writes_in_flight, conn.host.device.writes_remote = [], True
    for itt in (1, 2):
        (r2t, _), = exchange(conn, write(itt * 2, 2, itt))
        assert exchange(conn, data_out(bytes(1024), itt=itt, ttt=r2t.ttt)) == []
    assert conn.write_held == 2048 == conn.write_pool.held
    (tmf, _), = exchange(conn, task_management(1, itt=50, referenced_task_tag=1, cmd_sn=3))
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and conn.write_held == 1024 == conn.write_pool.held
    conn.close()
    assert conn.write_held == 0 == conn.write_pool.held
    for late in conn.host.device.writes_in_flight:
        late()
    assert conn.write_held == 0 == conn.write_pool.held


def test_a_write_another_nexus_aborted_at_the_disk_tells_the_host_of_the_r2t_its_budget_frees(monkeypatch):
    """The host is told of output whenever `out` stops being empty, also when an aborted write's completion
    solicits a write that waited for its budget (later completions rely on it: they tell only an empty `out`)."""
    monkeypatch.setattr(connection, "CONNECTION_WRITE_BUDGET", 1024)
    conn = connect()
    device = conn.host.device
    monkeypatch.setattr(device, "has_lun", lambda lun: lun in (0, 1))
    device.writes_in_flight = []
    (r2t, _), = exchange(conn, write(0, 2, 1))
    assert exchange(conn, write(2, 1, 2, lun=1)) == []                    # waits for the connection's budget
    assert exchange(conn, data_out(bytes(1024), itt=1, ttt=r2t.ttt)) == []    # write 1 at the disk
    conn.abort_lun(0, lambda: None)                 # another nexus's LUN RESET, say: no response here
    exchange(conn)
    told = conn.host.ready
    device.writes_in_flight.pop()()                 # the aborted write's disk op completes
    assert conn.host.ready == told + 1
    (solicited, _), = exchange(conn)
    assert solicited.opcode == P.R2T and solicited.itt == 2


def test_commands_that_came_early_are_not_run_once_a_logout_closed_the_connection():
    conn = connect()
    tur = bytes(6)
    assert exchange(conn, scsi_command(tur, cmd_sn=2, itt=3)) == []           # early: held
    pdus = exchange(conn, logout_request(itt=4, cmd_sn=1))
    assert [p.opcode for p, _ in pdus] == [P.LOGOUT_RESPONSE] and conn.closing
    assert conn.host.device.executed == [] and not conn.commands
