"""Reservation commands through ScsiTarget.execute and the in-process coordinator (tests/unit_coordinator.py): PR
IN/OUT, RESERVE/RELEASE 6/10, the conflict check before dispatch, resets, nexus loss, PREEMPT AND ABORT, task-set
clearing."""
import struct

from coordinator.unit_state import reservations as R
from target.scsi import sense as S
from target.scsi.task import RESERVATION_CONFLICT
from tests.scsi_harness import READ10, TUR, A, B, Harness, assert_good, assert_sense, params, prout, rw_cdb

RESERVE6, RELEASE6, RESERVE10, RELEASE10 = 0x16, 0x17, 0x56, 0x57
WRITE10 = rw_cdb(0x2A, 0, 1)


class Session:
    """What a connection offers the target: its tasks can be aborted per LUN, it can be closed."""

    def __init__(self, tasks=()):
        self.tasks = list(tasks)
        self.closed = False

    def abort_lun(self, lun, done):
        aborted, self.tasks = self.tasks, []
        done()
        return bool(aborted)

    def close(self):
        self.closed = True


def ready(h, *nexuses):
    for nexus in nexuses:
        h.ready(nexus)


def test_prout_register_reserve_and_conflicting_write():
    h = Harness()
    ready(h, A, B)
    assert_good(h.run(prout(R.REGISTER), nexus=A, data_out=params(0, 0xAA)))
    assert h.run(prout(R.REGISTER), nexus=A, data_out=params(0, 0xAA)).transfer_length == 24
    assert_good(h.run(prout(R.RESERVE, R.WRITE_EXCLUSIVE), nexus=A, data_out=params(0xAA)))
    assert_good(h.run(READ10, nexus=B))
    task = h.run(WRITE10, nexus=B, data_out=bytes(512))
    assert (task.status, task.sense) == (RESERVATION_CONFLICT, None)
    assert_good(h.run(WRITE10, nexus=A, data_out=bytes(512)))
    data = h.run(struct.pack(">BB5xHB", 0x5E, R.READ_RESERVATION, 64, 0), nexus=B).data_in
    assert struct.unpack(">IIQ4xxB", data[:22])[2:] == (0xAA, R.WRITE_EXCLUSIVE)


def test_prout_with_less_data_than_its_parameter_list_length_is_refused():
    h = Harness()
    ready(h, A)
    assert_sense(h.run(prout(R.REGISTER), nexus=A, data_out=params()[:10]), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_COMMAND_IU)


def test_unit_attention_for_preempted_registration():
    h = Harness()
    ready(h, A, B)
    assert_good(h.run(prout(R.REGISTER), nexus=A, data_out=params(0, 1)))
    assert_good(h.run(prout(R.REGISTER), nexus=B, data_out=params(0, 2)))
    assert_good(h.run(prout(R.PREEMPT, R.WRITE_EXCLUSIVE), nexus=A, data_out=params(1, 2)))
    assert_sense(h.run(TUR, nexus=B), S.UNIT_ATTENTION, R.REGISTRATIONS_PREEMPTED)
    assert_good(h.run(TUR, nexus=B))


def test_preempt_and_abort_aborts_the_victims_tasks():
    h = Harness()
    ready(h, A, B)
    victim = Session(["task"])
    h.target.attach(B, victim)
    assert_good(h.run(prout(R.REGISTER), nexus=A, data_out=params(0, 1)))
    assert_good(h.run(prout(R.REGISTER), nexus=B, data_out=params(0, 2)))
    assert_good(h.run(prout(R.RESERVE, R.EXCLUSIVE_ACCESS), nexus=B, data_out=params(2)))
    assert_good(h.run(prout(R.PREEMPT_AND_ABORT, R.EXCLUSIVE_ACCESS), nexus=A, data_out=params(1, 2)))
    assert victim.tasks == []


def test_reserve6_release6_and_reserve10_fields():
    h = Harness()
    ready(h, A, B)
    assert_good(h.run(bytes([RESERVE6, 0, 0, 0, 0, 0]), nexus=A))
    assert h.run(bytes([0x1A, 0, 0x3F, 0, 192, 0]), nexus=B).status == RESERVATION_CONFLICT
    assert h.run(bytes([RESERVE10]) + bytes(9), nexus=B).status == RESERVATION_CONFLICT
    assert_good(h.run(bytes([RELEASE6]) + bytes(5), nexus=B))            # not the holder: no effect
    assert h.run(READ10, nexus=B).status == RESERVATION_CONFLICT
    assert_good(h.run(bytes([RELEASE10]) + bytes(9), nexus=A))
    assert_good(h.run(READ10, nexus=B))
    assert_sense(h.run(bytes([RESERVE6, 0x01, 0, 0, 0, 0]), nexus=A), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 0))
    assert_sense(h.run(bytes([RESERVE10, 0x10]) + bytes(8), nexus=A), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 4))


def test_lun_reset_releases_spc2_reservation_and_sets_unit_attention_everywhere():
    h = Harness()
    ready(h, A, B)
    other = Session(["task"])
    h.target.attach(B, other)
    assert_good(h.run(bytes([RESERVE6]) + bytes(5), nexus=A))
    done = []
    h.target.reset_lun(0, A, lambda: done.append(True))
    assert done == [True]
    assert other.tasks == []
    for nexus in (A, B):
        assert_sense(h.run(TUR, nexus=nexus), S.UNIT_ATTENTION, S.BUS_DEVICE_RESET)
    assert_good(h.run(bytes([RESERVE6]) + bytes(5), nexus=B))


def test_nexus_loss_releases_spc2_reservation():
    h = Harness()
    ready(h, A, B)
    session = Session()
    h.target.attach(A, session)
    assert_good(h.run(bytes([RESERVE6]) + bytes(5), nexus=A))
    h.target.detach(A, session)
    assert_good(h.run(bytes([RESERVE6]) + bytes(5), nexus=B))


def test_clear_task_set_and_cold_reset():
    h = Harness()
    ready(h, A, B)
    other = Session(["task"])
    h.target.attach(B, other)
    h.target.clear_task_set(0, A, lambda: None)
    assert_sense(h.run(TUR, nexus=B), S.UNIT_ATTENTION, S.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)
    h.target.reset_target(A, True, lambda: None)
    assert other.closed
    assert_sense(h.run(TUR, nexus=A), S.UNIT_ATTENTION, S.POWER_ON_OCCURRED)
