"""What ScsiTarget.execute does before and around every handler (target/scsi/target.py): unit attentions,
unknown LUNs, the control byte, short CDBs, unexpected exceptions, and any CDB answered once."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from target.scsi import sense as S
from target.scsi.task import CHECK_CONDITION, GOOD, ScsiTask
from tests.scsi_harness import TUR, Harness, assert_good, assert_sense, rw_cdb


# -- unit attention --------------------------------------------------------------------------------------
def test_power_on_ua_once_per_nexus():
    h = Harness()
    assert_sense(h.run(TUR), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(TUR))
    assert_sense(h.run(TUR, nexus="i2"), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(TUR, nexus="i2"))


def test_inquiry_and_report_luns_do_not_consume_ua():
    h = Harness()
    assert_good(h.run(bytes([0x12, 0, 0, 0, 36, 0])))
    assert_good(h.run(bytes([0xA0]) + bytes(5) + (64).to_bytes(4, "big") + bytes(2)))
    assert_sense(h.run(rw_cdb(0x28, 0, 1)), S.UNIT_ATTENTION, S.POWER_ON_RESET)


def test_request_sense_reports_and_clears_ua():
    h = Harness()
    task = h.run(bytes([0x03, 0, 0, 0, 18, 0]))
    assert_good(task)
    assert bytes(task.data_in) == S.build_sense(S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(TUR))
    task = h.run(bytes([0x03, 0, 0, 0, 252, 0]))
    assert bytes(task.data_in) == S.build_sense(S.NO_SENSE, S.NO_ADDITIONAL_SENSE)
    assert len(h.run(bytes([0x03, 0, 0, 0, 8, 0])).data_in) == 8
    assert_sense(h.run(bytes([0x03, 1, 0, 0, 18, 0])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(1, 0))


def test_ua_reported_before_invalid_opcode():
    h = Harness()
    assert_sense(h.run(bytes([0xC7]) + bytes(15)), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_sense(h.run(bytes([0xC7]) + bytes(15)), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)


def test_establish_ua_skips_the_originator():
    h = Harness()
    h.ready("a")
    h.ready("b")
    h.unit.establish_ua(S.MODE_PARAMETERS_CHANGED, except_nexus="a")
    assert_good(h.run(TUR, nexus="a"))
    assert_sense(h.run(TUR, nexus="b"), S.UNIT_ATTENTION, S.MODE_PARAMETERS_CHANGED)
    assert_good(h.run(TUR, nexus="b"))


# -- unknown LUN, REPORT LUNS ------------------------------------------------------------------------------
def test_unknown_lun(h):
    inq = h.run(bytes([0x12, 0, 0, 0, 96, 0]), lun=7)
    assert_good(inq)
    assert inq.data_in[0] == 0x7F
    assert_sense(h.run(TUR, lun=7), S.ILLEGAL_REQUEST, S.LOGICAL_UNIT_NOT_SUPPORTED)
    assert_sense(h.run(bytes([0x12, 1, 0x80, 0, 96, 0]), lun=7), S.ILLEGAL_REQUEST, S.LOGICAL_UNIT_NOT_SUPPORTED)
    sense = h.run(bytes([0x03, 0, 0, 0, 18, 0]), lun=7)
    assert_good(sense)
    assert bytes(sense.data_in) == S.build_sense(S.ILLEGAL_REQUEST, S.LOGICAL_UNIT_NOT_SUPPORTED)
    assert_good(h.run(bytes([0xA0]) + bytes(5) + (64).to_bytes(4, "big") + bytes(2), lun=7))


def test_unexpected_exception_is_answered(h, caplog):
    def broken(*args):
        raise RuntimeError("boom")
    h.store.read = broken
    assert_sense(h.run(rw_cdb(0x28, 0, 1)), S.HARDWARE_ERROR, S.INTERNAL_TARGET_FAILURE)
    assert "boom" in caplog.text


# -- common checks -----------------------------------------------------------------------------------------
def test_invalid_opcode(h):
    assert_sense(h.run(bytes([0x42]) + bytes(9)), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)
    assert_sense(raw(h, b""), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)


def raw(h, cdb: bytes) -> ScsiTask:
    """A CDB exactly as given, not padded to 16 bytes."""
    done = []
    task = ScsiTask(0, cdb, "i1", "iqn.i", 0, False, False, None, done.append)
    h.target.execute(task)
    h.store.drain()
    assert done == [task]
    return task


def test_control_byte(h):
    assert_sense(h.run(bytes([0, 0, 0, 0, 0, 0x04])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(5, 2))
    assert_sense(h.run(rw_cdb(0x28, 0, 1)[:9] + b"\x01"), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(9, 0))
    assert_good(h.run(bytes([0, 0, 0, 0, 0, 0xC0])))                  # vendor-specific bits are fine


def test_cdb_shorter_than_its_opcode_needs(h):
    assert_sense(raw(h, bytes([0x88]) + bytes(9)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)


def test_data_out_for_a_command_that_takes_none_is_ignored(h):
    # libiscsi's iSCSIResiduals.Read10Invalid: a READ flagged as a write on the iSCSI layer must succeed.
    assert_good(h.run(TUR, data_out=b"xxxx"))
    assert_good(h.run(TUR, data_out=b""))


# -- robustness --------------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=16), st.booleans(), st.binary(max_size=1100))
def test_any_cdb_finishes_once_without_internal_errors(cdb, write, data):
    h = Harness()
    task = h.run(cdb, data_out=data if write else None)
    assert task.status in (GOOD, CHECK_CONDITION)
    if task.status == CHECK_CONDITION:
        assert len(task.sense) == 18 and task.sense[2] != S.HARDWARE_ERROR


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=20))
def test_any_unpadded_cdb_is_answered(cdb):
    h = Harness()
    h.ready()
    task = raw(h, cdb)
    assert task.status in (GOOD, CHECK_CONDITION)
    assert task.sense is None or task.sense[2] != S.HARDWARE_ERROR
