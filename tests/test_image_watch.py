"""target/image_watch.py with a real ring: two workers' watches over one LUN whose image is removed, and the
unit's answers once it is offline (scsi/lun.py)."""
import logging
import os
import time

import pytest

from target.backstore import images
from target.backstore.offline import OfflineBackstore
from target.config import load_config
from target.image_watch import CHECK_SECONDS, ImageWatch
from target.scsi import sense as S
from target.scsi.lun import LogicalUnit
from target.scsi.task import GOOD, ScsiTask
from tests.scsi_harness import TUR, assert_good, assert_sense, rw_cdb
from tests.scsi_harness import Harness as Commands
from tests.unit_coordinator import attached, coordinated_target

IQN = "iqn.2026-11.org.test:watch"


@pytest.fixture
def node(tmp_path):
    """(config, the LUN's config): one file LUN, its image made and recorded as the supervisor does."""
    (tmp_path / "ringtgt.toml").write_text(f"[server]\nstate_dir = 'state'\n[[target]]\niqn = '{IQN}'\n"
                                           "[[target.lun]]\nid = 0\npath = 'lun.img'\nsize = '1MiB'\n")
    config = load_config(str(tmp_path / "ringtgt.toml"))
    lun = config.targets[0].luns[0]
    images.prepare(config.server.state_dir, IQN, 0, lun.path, lun.size, lun.block_size, lun.direct)
    return config, lun


def worker_unit(config, lun, reactor):
    """What a worker builds for the LUN: its watch and its unit."""
    watch = ImageWatch(config.server.state_dir, reactor.call_later)
    unit = LogicalUnit(0, watch.open(IQN, lun, reactor), serial="S0", naa="6001405aabbccddeeff0011223344556",
                       target_iqn=IQN, portal_group_tag=1, relative_port=1)
    watch.watch(IQN, lun, unit)
    return unit


def test_a_removed_image_takes_the_lun_offline_in_every_worker_and_a_new_one_finds_it_so(node, reactor, caplog):
    config, lun = node
    caplog.set_level(logging.INFO)
    units = [worker_unit(config, lun, reactor) for _ in range(2)]
    reactor.run_once(0)
    assert not any(unit.offline for unit in units)
    os.unlink(lun.path)
    deadline = time.monotonic() + 10 * CHECK_SECONDS
    while not all(unit.offline for unit in units) and time.monotonic() < deadline:
        reactor.run_once(0.1)
    assert all(unit.offline for unit in units)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"image {lun.path} is missing" in errors[0], errors
    restarted = worker_unit(config, lun, reactor)       # a worker started after: offline at once, nothing made
    assert restarted.offline and isinstance(restarted.backstore, OfflineBackstore)
    assert not os.path.exists(lun.path)
    for unit in units + [restarted]:
        unit.backstore.close()


def test_an_image_in_place_again_at_the_next_start_is_served(node, reactor):
    config, lun = node
    os.rename(lun.path, lun.path + ".moved")
    assert worker_unit(config, lun, reactor).offline
    os.rename(lun.path + ".moved", lun.path)
    images.prepare(config.server.state_dir, IQN, 0, lun.path, lun.size, lun.block_size, lun.direct)
    unit = worker_unit(config, lun, reactor)
    assert not unit.offline
    unit.backstore.close()


@pytest.mark.parametrize("cdb, data_out", [(TUR, None), (rw_cdb(0x28, 0, 1), None), (rw_cdb(0x2A, 0, 1), bytes(512)),
                                           (rw_cdb(0x35, 0, 0), None), (bytes([0x25]) + bytes(9), None),
                                           (bytes([0x48, 0x02]) + bytes(8), None)])     # SANITIZE BLOCK ERASE
def test_an_offline_unit_is_not_ready_manual_intervention_required(cdb, data_out):
    h = Commands()
    h.ready()
    h.unit.take_offline()
    assert_sense(h.run(cdb, data_out=data_out), S.NOT_READY, S.MANUAL_INTERVENTION_REQUIRED)
    assert h.store.calls == []                                  # nothing reached the store


def test_an_offline_unit_still_answers_inquiry_and_request_sense_and_reports_its_unit_attentions():
    h = Commands()
    h.unit.take_offline()
    assert_sense(h.run(TUR), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(bytes([0x12, 0, 0, 0, 36, 0])))
    assert_sense(h.run(TUR), S.NOT_READY, S.MANUAL_INTERVENTION_REQUIRED)
    task = h.run(bytes([0x03, 0, 0, 0, 18, 0]))             # REQUEST SENSE: the state, as parameter data
    assert_good(task)
    assert bytes(task.data_in) == S.build_sense(S.NOT_READY, S.MANUAL_INTERVENTION_REQUIRED)


def test_an_offline_thin_unit_answers_its_provisioning_vpd_pages(node, reactor):
    """The Block Limits and Logical Block Provisioning pages of a thin unit ask its store whether it deallocates:
    the stand-in store of a gone image answers (it lacked the attribute: HARDWARE ERROR, a logged traceback)."""
    config, lun = node
    os.unlink(lun.path)
    watch = ImageWatch(config.server.state_dir, lambda seconds, fn: None)
    unit = LogicalUnit(0, watch.open(IQN, lun, reactor), serial="S0", naa="6001405aabbccddeeff0011223344556",
                       target_iqn=IQN, portal_group_tag=1, relative_port=1, thin=True)
    watch.watch(IQN, lun, unit)
    assert unit.offline
    target = coordinated_target({0: unit})
    attached(target, "i1")
    for page in (0xB0, 0xB2):
        done: list[ScsiTask] = []
        task = ScsiTask(0, bytes([0x12, 1, page, 0, 255, 0]).ljust(16, b"\0"), "i1", "iqn.init", 255, True, False,
                        None, done.append)
        target.execute(task)
        assert done == [task] and (task.status, task.sense) == (GOOD, None), task.sense
