"""SANITIZE on a running `workers = 2` ringtgt: while a paced OVERWRITE runs, sessions on the other worker are
answered NOT READY, SANITIZE IN PROGRESS; when the worker running it is killed (SIGKILL) the unit is in sanitize
failure mode on every worker, MEDIUM ERROR, SANITIZE COMMAND FAILED, which EXIT FAILURE MODE cannot end for a
sanitize started without AUSE and a sanitize that completes does; the supervisor's new worker serves."""
import os
import signal

import initiator as I
from harness import Lun, assert_workers_serve, connect_to_worker, poll

BS = 512
OVERWRITE, BLOCK_ERASE, EXIT_FAILURE_MODE = 0x01, 0x02, 0x1F
NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST = 0x02, 0x03, 0x05
SANITIZE_IN_PROGRESS, SANITIZE_COMMAND_FAILED, INVALID_FIELD_IN_CDB = (0x04, 0x1B), (0x31, 0x03), (0x24, 0x00)
TEST_UNIT_READY = bytes(6)


def sanitize_cdb(action: int, length: int = 0, immed: bool = False) -> bytes:
    return bytes([0x48, action | (0x80 if immed else 0), 0, 0, 0, 0, 0, length >> 8, length & 0xFF, 0])


def sense_of(result) -> tuple[int, tuple[int, int]] | None:
    return None if result.sense is None else (result.sense.key, (result.sense.asc, result.sense.ascq))


def logged_in(ini: I.Initiator, tgt, name: str) -> I.Initiator:
    ini.login(tgt.iqn, initiator_name=name)
    ini.clear_unit_attentions()
    return ini


def test_the_death_of_the_worker_running_a_sanitize_leaves_the_unit_in_failure_mode(ringtgt):
    tgt = ringtgt(workers=2, luns=[Lun(0, extra='sanitize_rate = "2MiB"')])     # 64 MiB: 32 s at least
    victim, runner = connect_to_worker(tgt, lambda pid: True)
    survivor, watcher = connect_to_worker(tgt, lambda pid: pid != victim)
    with runner, watcher:
        logged_in(runner, tgt, "iqn.2026-11.org.ringtgt:sanitizer")
        logged_in(watcher, tgt, "iqn.2026-11.org.ringtgt:watcher")
        parameters = bytes([1, 0, BS >> 8, BS & 0xFF]) + b"\xaa" * BS
        started = runner.scsi(sanitize_cdb(OVERWRITE, len(parameters), immed=True), data_out=parameters)
        assert (started.status, started.sense) == (I.GOOD, None)
        assert sense_of(watcher.scsi(TEST_UNIT_READY)) == (NOT_READY, SANITIZE_IN_PROGRESS)

        os.kill(victim, signal.SIGKILL)
        poll(lambda: sense_of(watcher.scsi(TEST_UNIT_READY)) == (MEDIUM_ERROR, SANITIZE_COMMAND_FAILED),
             timeout=30, what="sanitize failure mode after the sanitizing worker died")
        assert sense_of(watcher.read(0, 1, block_size=BS)) == (MEDIUM_ERROR, SANITIZE_COMMAND_FAILED)
        assert sense_of(watcher.scsi(sanitize_cdb(EXIT_FAILURE_MODE))) == (ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)

        erased = watcher.scsi(sanitize_cdb(BLOCK_ERASE))                     # one that completes ends it
        assert (erased.status, erased.sense) == (I.GOOD, None)
        assert watcher.scsi(TEST_UNIT_READY).status == I.GOOD
        assert watcher.read(0, 8, block_size=BS).data == bytes(8 * BS)
    poll(lambda: len(tgt.listening_children()) == 2 and victim not in tgt.listening_children(), timeout=30,
         what="the supervisor's new worker")
    tgt.workers = sorted(tgt.listening_children())
    assert survivor in tgt.workers
    assert_workers_serve(tgt, "iqn.2026-11.org.ringtgt:after-sanitize")
