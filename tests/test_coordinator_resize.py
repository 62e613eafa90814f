"""Online resize (`ringtgt resize`): the coordinator's handler (coordinator/unit_service.py `resize`) and the
workers' half (target/unit_sync.py, target/scsi/shared_units.py `apply_resize`), two workers on one in-process
coordinator as in production."""
import struct

from coordinator.in_process import InProcessCoordinator
from coordinator.messages import FetchUnitStates, ResizeAnswer, ResizeLun, UnitStates
from coordinator.unit_service import UnitAuthority, register_unit_handlers
from target.scsi import sense as S
from target.scsi.target import ScsiTarget
from target.scsi.task import GOOD
from target.unit_sync import UnitSync
from tests.scsi_harness import BLOCKS, BS, IQN, TUR, A, B, assert_sense, make_unit
from tests.test_coordinator_in_process import run
from tests.unit_coordinator import IdleSession

READ_CAPACITY16 = struct.pack(">BB8xIxx", 0x9E, 0x10, 32)
OLD = BLOCKS * BS


def node():
    """Two workers' targets of LUN 0, each with a nexus attached and its POWER ON consumed, and a control client."""
    hub = InProcessCoordinator()
    authority = UnitAuthority([(IQN, 0)])
    register_unit_handlers(hub, authority)
    targets = []
    for index, nexus in enumerate((A, B)):
        client = hub.client(f"w{index}.{100 + index}")
        target = ScsiTarget({0: make_unit()}, coordinator=client)
        UnitSync(client, {IQN: target})
        target.attach(nexus, IdleSession())
        assert_sense(run(target, TUR, nexus), S.UNIT_ATTENTION, S.POWER_ON_RESET)
        targets.append(target)
    return authority, targets, hub.client("control")


def resize(control, size, configured=OLD) -> ResizeAnswer:
    answers = []
    control.request(ResizeLun(IQN, 0, size, configured), answers.append, lambda failure: answers.append(failure))
    assert len(answers) == 1
    return answers[0]


def capacity(target, nexus):
    task = run(target, READ_CAPACITY16, nexus)
    assert task.status == GOOD, task.sense
    last_lba, block_size = struct.unpack_from(">QI", bytes(task.data_in))
    return (last_lba + 1) * block_size


def test_a_grown_unit_tells_every_nexus_on_every_worker_and_serves_the_new_size():
    authority, targets, control = node()
    assert resize(control, 2 * OLD) == ResizeAnswer(OLD, 2 * OLD, None)
    for target, nexus in zip(targets, (A, B)):
        assert target.luns[0].blocks == 2 * BLOCKS and target.luns[0].backstore.size == 2 * OLD
        assert_sense(run(target, TUR, nexus), S.UNIT_ATTENTION, S.CAPACITY_DATA_HAS_CHANGED)
        assert capacity(target, nexus) == 2 * OLD
    assert all(not queue for queue in authority.unit(IQN, 0).pending.values())     # reported: consumed


def test_shrinking_is_refused_and_the_same_size_changes_nothing():
    authority, targets, control = node()
    assert resize(control, 3 * OLD) == ResizeAnswer(OLD, 3 * OLD, None)
    answer = resize(control, 2 * OLD)                 # above the configured size, below the grown one
    assert (answer.previous, answer.size) == (3 * OLD, 3 * OLD) and "shrinking" in answer.refused
    for target, nexus in zip(targets, (A, B)):
        assert_sense(run(target, TUR, nexus), S.UNIT_ATTENTION, S.CAPACITY_DATA_HAS_CHANGED)   # the grow's only
        assert run(target, TUR, nexus).status == GOOD
    assert resize(control, 3 * OLD) == ResizeAnswer(3 * OLD, 3 * OLD, None)
    assert all(run(target, TUR, nexus).status == GOOD for target, nexus in zip(targets, (A, B)))
    assert targets[0].luns[0].blocks == 3 * BLOCKS


def test_a_restarted_worker_and_a_restarted_coordinator_keep_the_size_but_a_new_serve_does_not(tmp_path):
    authority, targets, control = node()
    resize(control, 2 * OLD)
    states = []
    control.request(FetchUnitStates(), states.append, states.append)
    assert isinstance(states[0], UnitStates) and states[0].sizes == [[IQN, 0, 2 * OLD]]
    fresh = ScsiTarget({0: make_unit()}, coordinator=control)       # a worker (re)started at the configured size
    UnitSync(control, {IQN: fresh})
    assert fresh.luns[0].blocks == 2 * BLOCKS
    resumed = UnitAuthority([(IQN, 0)])
    resumed.restore(authority.snapshot())                           # the live file, same supervisor
    assert resumed.unit(IQN, 0).size == 2 * OLD
    after_stop = UnitAuthority([(IQN, 0)])
    after_stop._resume(authority.snapshot())                        # stopped.json, a new serve
    assert after_stop.unit(IQN, 0).size is None
