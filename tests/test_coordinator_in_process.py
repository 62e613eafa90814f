"""The in-process coordinator (coordinator/in_process.py) with the real unit state handlers: two workers' SCSI
targets on one authority, as production runs them on two worker processes, and the one failure path."""
from coordinator.in_process import InProcessCoordinator
from coordinator.unit_service import UnitAuthority, register_unit_handlers
from coordinator.unit_state import reservations as R
from target.scsi import sense as S
from target.scsi.target import ScsiTarget
from target.scsi.task import GOOD, RESERVATION_CONFLICT, ScsiTask
from target.unit_sync import UnitSync
from tests.scsi_harness import IQN, READ10, TUR, A, B, assert_sense, make_unit, params, prout
from tests.unit_coordinator import IdleSession


def workers(count=2, units=((IQN, 0),)):
    """`count` workers' targets of one LUN on one in-process coordinator, each with its push handlers."""
    hub = InProcessCoordinator()
    register_unit_handlers(hub, UnitAuthority(list(units)))
    targets = []
    for index in range(count):
        client = hub.client(f"w{index}.{100 + index}")
        target = ScsiTarget({0: make_unit()}, coordinator=client)
        UnitSync(client, {IQN: target})
        targets.append(target)
    return targets


def run(target, cdb, nexus, data_out=None):
    done = []
    task = ScsiTask(0, cdb.ljust(16, b"\0"), nexus, "iqn.init", len(data_out) if data_out else 4096,
                    data_out is None, data_out is not None, memoryview(data_out) if data_out else None, done.append)
    target.execute(task)
    target.luns[0].backstore.drain()
    assert done == [task]
    return task


def test_a_reservation_made_through_one_worker_conflicts_on_the_other():
    first, second = workers()
    first.attach(A, IdleSession())
    second.attach(B, IdleSession())
    for target, nexus in ((first, A), (second, B)):
        assert_sense(run(target, TUR, nexus), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert run(first, prout(R.REGISTER), A, params(0, 1)).status == GOOD
    assert run(first, prout(R.RESERVE, R.EXCLUSIVE_ACCESS), A, params(1)).status == GOOD
    assert run(second, READ10, B).status == RESERVATION_CONFLICT        # the push reached the other worker
    assert run(first, READ10, A).status == GOOD


def test_a_reset_the_coordinator_fails_is_rejected_and_applied_nowhere():
    target, = workers(1, units=())                         # an authority that knows no unit: every request fails
    session = IdleSession()
    target.attach(A, session)
    answers = []
    target.reset_lun(0, A, lambda rejected=False: answers.append(rejected))
    target.clear_task_set(0, A, lambda rejected=False: answers.append(rejected))
    assert answers == [True, True]
    assert target.luns[0].attentions.take(A) is None     # no BUS DEVICE RESET established here alone


def test_a_reservation_command_the_coordinator_fails_ends_in_hardware_error():
    target, = workers(1, units=())
    target.attach(A, IdleSession())
    assert_sense(run(target, prout(R.REGISTER), A, params(0, 1)), S.HARDWARE_ERROR, S.INTERNAL_TARGET_FAILURE)


def test_a_worker_is_ready_to_serve_only_once_the_unit_states_are_applied():
    """UnitSync's gate (the worker accepts connections from `on_ready` on): a FetchUnitStates that fails leaves it
    shut and is asked again later; the answer opens it, once, with the reservation made meanwhile in force."""
    hub = InProcessCoordinator()
    ready, timers = [], []
    target = ScsiTarget({0: make_unit()}, coordinator=hub.client())
    sync = UnitSync(target.coordinator, {IQN: target}, lambda: ready.append(True), lambda s, fn: timers.append(fn))
    assert not sync.ready and ready == [] and len(timers) == 2      # the start's deadline, the retry
    register_unit_handlers(hub, UnitAuthority([(IQN, 0)]))
    other = ScsiTarget({0: make_unit()}, coordinator=hub.client("w1.2"))
    UnitSync(other.coordinator, {IQN: other})
    other.attach(A, IdleSession())
    assert_sense(run(other, TUR, A), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert run(other, prout(R.REGISTER), A, params(0, 1)).status == GOOD
    assert run(other, prout(R.RESERVE, R.EXCLUSIVE_ACCESS), A, params(1)).status == GOOD
    for timer in timers:
        timer()
    assert sync.ready and ready == [True]
    target.attach(B, IdleSession())
    assert_sense(run(target, TUR, B), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert run(target, READ10, B).status == RESERVATION_CONFLICT
    sync._refresh()                         # a later (re)connection: states again, the gate opens no second time
    assert ready == [True]
