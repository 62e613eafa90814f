"""SPC commands of target/scsi/spc.py: REPORT LUNS, START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL on fixed
and removable units."""
from __future__ import annotations

import struct

import pytest

from target.scsi import sense as S
from target.scsi.task import ScsiTask
from tests.scsi_harness import BS, TUR, Harness, assert_good, assert_sense, make_unit, rw_cdb
from tests.unit_coordinator import coordinated_target


def test_report_luns():
    units = {lun: make_unit(lun) for lun in (300, 0, 5)}
    target = coordinated_target(units)
    done = []
    cdb = bytes([0xA0]) + bytes(5) + (1024).to_bytes(4, "big") + bytes(6)
    task = ScsiTask(9, cdb, "i", "iqn.i", 1024, True, False, None, done.append)
    target.execute(task)
    assert_good(task)
    assert task.data_in == struct.pack(">I4x", 24) + bytes.fromhex("0000000000000000" "0005000000000000"
                                                                    "412c000000000000")
    task = ScsiTask(0, cdb[:2] + b"\x01" + cdb[3:], "i", "iqn.i", 1024, True, False, None, done.append)
    target.execute(task)
    assert task.data_in == bytes(8)


def start_stop(loej, start, pc=0):
    return bytes([0x1B, 0, 0, 0, pc << 4 | loej << 1 | start, 0])


def prevent_allow(prevent):
    return bytes([0x1E, 0, 0, 0, prevent, 0])


def test_start_stop_and_prevent_allow_on_a_fixed_unit(h):
    assert h.run(bytes([0x12, 0, 0, 0, 36, 0])).data_in[1] & 0x80 == 0        # RMB clear
    assert_good(h.run(start_stop(0, 1)))
    assert_good(h.run(start_stop(0, 0)))
    assert_sense(h.run(start_stop(1, 0)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(4, 1))
    assert_good(h.run(prevent_allow(0)))
    assert_sense(h.run(prevent_allow(1)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)
    assert_good(h.run(TUR))


@pytest.fixture
def removable():
    harness = Harness(removable=True)
    harness.ready()
    harness.ready(nexus="i2")
    return harness


def test_removable_medium_ejected_and_loaded(removable):
    h = removable
    assert h.run(bytes([0x12, 0, 0, 0, 36, 0])).data_in[1] & 0x80 == 0x80     # RMB set
    assert_good(h.run(start_stop(0, 0)))                                   # STOP moves nothing
    assert_good(h.run(start_stop(1, 0, pc=3)))                             # a power condition neither
    assert_good(h.run(TUR))
    assert_good(h.run(start_stop(1, 0)))
    for cdb in (TUR, rw_cdb(0x28, 0, 1), rw_cdb(0x35, 0, 1), bytes([0x25]) + bytes(9)):
        assert_sense(h.run(cdb), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
    assert_sense(h.run(TUR, nexus="i2"), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
    assert_good(h.run(bytes([0x12, 0, 0, 0, 36, 0])))                       # INQUIRY needs no medium
    assert_good(h.run(start_stop(1, 1), nexus="i2"))
    assert_good(h.run(TUR))
    assert h.store.calls == []


def test_prevent_binds_every_nexus_until_allowed_lost_or_reset(removable):
    h = removable
    assert_good(h.run(prevent_allow(1)))
    for nexus in ("i1", "i2"):
        assert_sense(h.run(start_stop(1, 0), nexus=nexus), S.ILLEGAL_REQUEST, S.MEDIUM_REMOVAL_PREVENTED)
        assert_sense(h.run(start_stop(1, 1), nexus=nexus), S.ILLEGAL_REQUEST, S.MEDIUM_REMOVAL_PREVENTED)
    assert_good(h.run(TUR))
    assert_good(h.run(prevent_allow(0), nexus="i2"))                       # only i1's own ALLOW ends i1's
    assert_sense(h.run(start_stop(1, 0)), S.ILLEGAL_REQUEST, S.MEDIUM_REMOVAL_PREVENTED)
    assert_good(h.run(prevent_allow(0)))
    assert_good(h.run(start_stop(1, 0)))
    assert_good(h.run(start_stop(1, 1)))
    assert_sense(h.run(prevent_allow(2)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(4, 1))

    assert_good(h.run(prevent_allow(1)))
    h.target.attach("i1", object())
    h.target.detach("i1", h.target.nexuses["i1"])                          # I_T nexus loss
    assert_good(h.run(start_stop(1, 0), nexus="i2"))
    assert_good(h.run(start_stop(1, 1), nexus="i2"))

    assert_good(h.run(prevent_allow(1), nexus="i2"))
    h.target.reset_lun(0, "i1", lambda: None)
    h.run(TUR, nexus="i2")                                                 # the reset's unit attention
    assert_good(h.run(start_stop(1, 0), nexus="i2"))


def test_no_medium_comes_before_write_protection():
    h = Harness(removable=True, read_only=True)
    h.ready()
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
    assert_good(h.run(start_stop(1, 0)))
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
