"""Hostile or broken input on live connections.  Each must be answered by a Reject, a CHECK CONDITION, a
login reject or a closed connection — and afterwards the same worker processes still serve fresh sessions."""
import random
import struct

import pytest
from harness import HOST, assert_workers_serve, session

import initiator as I

NAME = "iqn.2026-11.org.ringtgt:bad-input"


def target_answer(ini: I.Initiator) -> I.Pdu | None:
    """The target's next PDU, or None if it closed the connection; silence for 30 s fails the test."""
    try:
        answer = ini.recv_pdu()
    except I.ConnectionClosed:
        print("target closed the connection")
        return None
    except TimeoutError:
        pytest.fail("the target neither answered nor closed the connection within 30 s")
    print(f"target answered {answer!r}")
    return answer


def assert_refused(answer: I.Pdu | None, *, allow_reject: bool = True) -> None:
    """A closed connection, a login reject (status class != 0) or — if allowed — a Reject PDU."""
    if answer is None:
        return
    if answer.opcode == I.LOGIN_RESPONSE:
        assert answer.bhs[36] != 0, f"login response with success status to bad input: {answer!r}"
        return
    assert allow_reject and answer.opcode == I.REJECT, f"unexpected answer to bad input: {answer!r}"


@pytest.fixture
def tgt(shared_ringtgt):
    """The module's server, checked after each test: no worker died and each still serves."""
    yield shared_ringtgt
    assert_workers_serve(shared_ringtgt, NAME + "-after")


HTTP = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ringtgt-e2e\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize("garbage", [HTTP, random.Random(7143).randbytes(4096), b"\xff" * 48, bytes(48)],
                         ids=["http", "random-4k", "all-ones-bhs", "all-zero-bhs"])
def test_garbage_on_fresh_connection(tgt, garbage):
    with I.Initiator.connect(HOST, tgt.port) as ini:
        try:
            ini.send_raw(garbage)
        except I.ConnectionClosed:
            return
        assert_refused(target_answer(ini))


def test_scsi_command_before_login(tgt):
    with I.Initiator.connect(HOST, tgt.port) as ini:
        ini.send_pdu(ini.command_pdu(I.cdb_read10(0, 8), read_length=4096))
        assert_refused(target_answer(ini), allow_reject=False)


def test_data_segment_longer_than_negotiated(tgt):
    with session(tgt, NAME + "-dsl") as ini:
        too_long = ini.target_mrdsl + 512
        rest = struct.pack(">III", I.RESERVED_TAG, ini.cmd_sn, ini.exp_stat_sn)
        ping = I.Pdu(I.build_bhs(I.NOP_OUT, 0x80, immediate=True, data_length=too_long, itt=0x5151,
                                 rest=rest), bytes(too_long))
        try:
            ini.send_pdu(ping)
        except I.ConnectionClosed:
            return
        answer = target_answer(ini)
        assert answer is None or answer.opcode == I.REJECT, \
            f"NOP-Out with {too_long} data bytes > MaxRecvDataSegmentLength {ini.target_mrdsl}: {answer!r}"


def test_unknown_opcode_after_login(tgt):
    with session(tgt, NAME + "-opcode") as ini:
        rest = struct.pack(">III", I.RESERVED_TAG, ini.cmd_sn, ini.exp_stat_sn)
        bogus = I.build_bhs(0x0A, 0x80, immediate=True, itt=0x0A0A, rest=rest)  # 0x0a: reserved opcode
        ini.send_raw(bogus)
        answer = target_answer(ini)
        if answer is None:
            return
        assert answer.opcode == I.REJECT, f"unknown opcode 0x0a answered with {answer!r}"
        assert answer.data[:48] == bogus, "a Reject carries the rejected PDU's header"
        # Reject with the connection kept: it must go on working.
        assert ini.nop_ping(b"still there").data == b"still there"


@pytest.mark.parametrize("cdb", [
    I.cdb_read16(0, 0xFFFFFFFF),
    I.cdb_read10(0xFFFFFFFF, 1),
    I.cdb_read10(0xFFFFFFFF - 0xFFFF, 0xFFFF),
    I.cdb_read16(0xFFFFFFFFFFFFFFFF, 1),
], ids=["read16-4G-blocks", "read10-last-lba", "read10-64k-blocks-high", "read16-max-lba"])
def test_read_out_of_range_is_illegal_request(tgt, cdb):
    with session(tgt, NAME + "-range") as ini:
        result = ini.scsi(cdb, read_length=4096)
        assert result.status == I.CHECK_CONDITION, result
        assert result.sense.key == I.ILLEGAL_REQUEST, result.sense
        assert (result.sense.asc, result.sense.ascq) in ((0x21, 0x00), (0x24, 0x00)), result.sense
        # the session is still fine
        assert ini.read(0, 8, block_size=512).status == I.GOOD


@pytest.mark.parametrize("initial_r2t", ["No", "Yes"], ids=["unsolicited", "solicited"])
def test_data_out_with_wrong_data_sn(ringtgt, initial_r2t):
    """The only Data-Out of a one-block WRITE carries DataSN 27 instead of 0 (ErrorRecoveryLevel 0)."""
    tgt = ringtgt(server_extra="initial_r2t = false")          # so that the initiator's choice stands
    with session(tgt, NAME + "-datasn", operational={"InitialR2T": initial_r2t, "ImmediateData": "No"}) as ini:
        assert ini.params["InitialR2T"] == initial_r2t, f"target answered {ini.target_keys}"
        itt, ttt = ini.next_itt(), I.RESERVED_TAG
        ini.send_pdu(ini.command_pdu(I.cdb_write10(100, 1), write_length=512, itt=itt,
                                     final=initial_r2t == "Yes"))
        if initial_r2t == "Yes":
            r2t = target_answer(ini)
            assert r2t is not None and r2t.opcode == I.R2T, f"expected an R2T, got {r2t!r}"
            ttt = r2t.ttt
        ini.send_pdu(ini.data_out_pdu(itt, ttt, bytes(512), offset=0, data_sn=27, final=True))
        answer = target_answer(ini)
        if answer is not None and answer.opcode == I.SCSI_RESPONSE:
            assert answer.bhs[2] != 0 or answer.bhs[3] != I.GOOD, f"WRITE with DataSN 27 succeeded: {answer!r}"
        else:
            assert answer is None or answer.opcode == I.REJECT, f"unexpected answer: {answer!r}"
    assert_workers_serve(tgt, NAME + "-after")
