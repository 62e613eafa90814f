"""A planned restart (SIGTERM, `serve` again with the same configuration and state_dir) is invisible to
initiators: fio (libiscsi, verified writes, default error handling) runs across it without an error, and the
units' SCSI state — registrations and a reservation taken without APTPL, a MODE SELECT change, a unit attention
pending for another nexus, the initiators already told of the power-on — is there afterwards, as after a
failover. A crash (SIGKILL of the whole process group) is a power loss: the state does not come back, and a
returning initiator hears of the power-on."""
import json
import time

import initiator as I
import pr_commands
from harness import ConnectionWatcher, FioRun, Lun, log_in, poll, write_fio_job
from pr_commands import REGISTER, RESERVATION_CONFLICT, RESERVE, WRITE_EXCLUSIVE

BS = 512
FIO_LUN, STATE_LUN = 0, 1
JOBS = 2
RUNTIME = 25                    # fio's seconds; the restart happens a few seconds in
RESTART_AFTER = 4.0             # seconds of fio traffic before the SIGTERM
A_NAME = "iqn.2026-11.org.ringtgt:restart-a"
B_NAME = "iqn.2026-11.org.ringtgt:restart-b"
POWER_ON = (0x29, 0x00)
MODE_PARAMETERS_CHANGED = (0x2A, 0x01)
CACHING, WCE = 0x08, 0x04


def prout(ini, action, key=0, action_key=0, pr_type=0):
    return pr_commands.prout(ini, action, key, action_key, pr_type, lun=STATE_LUN)     # APTPL=0


def read_keys(ini) -> list[int]:
    return sorted(pr_commands.read_keys(ini, STATE_LUN))


def reservation(ini):
    return pr_commands.reservation(ini, STATE_LUN)


def write_cache(ini) -> bool:
    result = ini.scsi(bytes([0x1A, 0x08, CACHING, 0, 255, 0]), lun=STATE_LUN, read_length=255)    # DBD
    assert result.status == I.GOOD, (result.status, result.sense)
    return bool(result.data[4 + 2] & WCE)


def set_write_cache(ini, on: bool) -> None:
    page = bytearray(20)
    page[0], page[1], page[2] = CACHING, 0x12, WCE if on else 0
    parameters = bytes(4) + page
    result = ini.scsi(bytes([0x15, 0x10, 0, 0, len(parameters), 0]), lun=STATE_LUN, data_out=parameters)
    assert result.status == I.GOOD, (result.status, result.sense)


def first_status(ini) -> tuple[int, tuple[int, int] | None]:
    """What the nexus's first TEST UNIT READY on the state LUN answers: (status, (asc, ascq) of a UA or None)."""
    result = ini.scsi(bytes(6), lun=STATE_LUN)
    if result.status == I.CHECK_CONDITION and result.sense.key == I.UNIT_ATTENTION:
        return result.status, (result.sense.asc, result.sense.ascq)
    return result.status, None


def fio_report(path) -> list[dict]:
    text = path.read_text(errors="replace")
    return json.loads(text[text.index("{"):])["jobs"]


def longest_pause(log_prefix) -> float:
    """The longest time between two consecutive I/O completions of one fio job (its latency logs)."""
    pauses = [0.0]
    for path in log_prefix.parent.glob(f"{log_prefix.name}_lat.*.log"):
        times = sorted(int(line.split(",")[0]) / 1000 for line in path.read_text().splitlines() if line.strip())
        pauses += [b - a for a, b in zip(times, times[1:])]
    return max(pauses)


def test_fio_and_the_unit_state_survive_a_planned_restart(ringtgt, tmp_path):
    tgt = ringtgt(luns=[Lun(FIO_LUN, "64MiB", BS), Lun(STATE_LUN, "16MiB", BS)])
    a, b = log_in(tgt, A_NAME), log_in(tgt, B_NAME)
    with a, b:
        for ini in (a, b):
            ini.clear_unit_attentions(lun=STATE_LUN)
        assert prout(a, REGISTER, 0, 0xA).status == I.GOOD
        assert prout(b, REGISTER, 0, 0xB).status == I.GOOD
        assert prout(a, RESERVE, 0xA, pr_type=WRITE_EXCLUSIVE).status == I.GOOD
        assert write_cache(a)
        set_write_cache(a, False)                                   # B now has MODE PARAMETERS CHANGED pending
        isids = a.isid, b.isid

    job = write_fio_job(tmp_path / "restart.fio", tgt.url(FIO_LUN), rw="randwrite", bs="4k", iodepth=4,
                        numjobs=JOBS, size="16MiB", offset_increment="16MiB", time_based=1, runtime=RUNTIME,
                        verify="crc32c", verify_backlog=256, verify_fatal=1, initiator="iqn.2026-11.org.ringtgt:fio",
                        write_lat_log=tmp_path / "lat", log_unix_epoch=1)
    report = tmp_path / "fio.json"
    with FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report}") as fio:
        with ConnectionWatcher(tgt) as watcher:
            poll(lambda: fio.proc.poll() is not None or watcher.total() >= JOBS, timeout=60,
                 what=f"{JOBS} fio sessions to connect")
        assert fio.proc.poll() is None, f"fio exited {fio.proc.returncode} early:\n{fio.text()}"
        time.sleep(RESTART_AFTER)                                   # some verified I/O first (any amount will do)
        tgt.stop()                                                  # SIGTERM: exit 0, workers gone
        stopped = tgt.stop_seconds
        before = time.monotonic()
        tgt.start()                                                 # same config, state_dir and port
        print(f"serve stopped {stopped:.2f} s after SIGTERM, served again {time.monotonic() - before:.2f} s later")
        status = fio.wait(RUNTIME + 120)
    output = f"fio exit {status}\n{fio.text()}\n{report.read_text() if report.exists() else ''}\n{tgt.stderr()}"
    assert status == 0, output
    jobs = fio_report(report)
    assert len(jobs) == JOBS, output
    print("fio across the restart: " + ", ".join(
        f"job {j['jobname']}.{i} err={j['error']} writes={j['write']['total_ios']} verified={j['read']['total_ios']}"
        for i, j in enumerate(jobs)))
    assert all(j["error"] == 0 and j["write"]["total_ios"] > 0 and j["read"]["total_ios"] > 0 for j in jobs), output
    print(f"longest pause between two completions of a fio job: {longest_pause(tmp_path / 'lat'):.2f} s")

    a, b = log_in(tgt, A_NAME, isids[0]), log_in(tgt, B_NAME, isids[1])    # the same nexuses come back
    with a, b:
        assert first_status(a) == (I.GOOD, None)                    # no POWER ON: nothing was lost
        assert first_status(b) == (I.CHECK_CONDITION, MODE_PARAMETERS_CHANGED)   # pending before, delivered after
        assert first_status(b) == (I.GOOD, None)
        assert read_keys(b) == [0xA, 0xB]
        assert reservation(b) == (0xA, WRITE_EXCLUSIVE)
        assert b.write(0, bytes(BS), block_size=BS, lun=STATE_LUN).status == RESERVATION_CONFLICT
        assert a.write(0, bytes(BS), block_size=BS, lun=STATE_LUN).status == I.GOOD
        assert not write_cache(b)
    new = log_in(tgt, "iqn.2026-11.org.ringtgt:restart-new")
    with new:
        assert first_status(new) == (I.CHECK_CONDITION, POWER_ON)   # an initiator never seen is told, as before


def test_a_stop_of_the_whole_process_group_keeps_the_state_too(ringtgt):
    """`systemctl stop` signals every process of the service at once: the coordinator still waits for the
    draining workers before it saves."""
    tgt = ringtgt(luns=[Lun(FIO_LUN, "16MiB", BS), Lun(STATE_LUN, "16MiB", BS)])
    with log_in(tgt, A_NAME) as a:
        a.clear_unit_attentions(lun=STATE_LUN)
        assert prout(a, REGISTER, 0, 0xA).status == I.GOOD
        isid = a.isid
        tgt.stop(group=True)
    tgt.start()
    with log_in(tgt, A_NAME, isid) as a:
        assert first_status(a) == (I.GOOD, None)
        assert read_keys(a) == [0xA]


def test_a_crash_is_a_power_on(ringtgt):
    tgt = ringtgt(luns=[Lun(FIO_LUN, "16MiB", BS), Lun(STATE_LUN, "16MiB", BS)])
    with log_in(tgt, A_NAME) as a:
        a.clear_unit_attentions(lun=STATE_LUN)
        assert prout(a, REGISTER, 0, 0xA).status == I.GOOD
        isid = a.isid
    tgt.stop()
    tgt.start()                                                     # a planned restart: the state is kept …
    with log_in(tgt, A_NAME, isid) as a:
        assert first_status(a) == (I.GOOD, None)
        assert read_keys(a) == [0xA]
    tgt.kill()                                                      # … a crash loses it
    tgt.start()
    with log_in(tgt, A_NAME, isid) as a:
        assert first_status(a) == (I.CHECK_CONDITION, POWER_ON)
        assert read_keys(a) == []
