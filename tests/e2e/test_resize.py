"""Online resize against a live `ringtgt serve` (two workers): `ringtgt resize` grows a LUN, every session on every
worker gets CAPACITY DATA HAS CHANGED and then READ CAPACITY's new size, the blocks beyond the old end are served;
a shrink is refused and changes nothing; a file grown underneath is picked up."""
import os

from harness import Lun, capacity, ringtgt_binary, run, sessions_on_every_worker, tool

import initiator as I

OLD, NEW, GROWN = 8 << 20, 16 << 20, 24 << 20
BS = 512


def resize(tgt, *args: str):
    return run([ringtgt_binary(), "resize", "--config", str(tgt.config), tgt.iqn, "0", *args], check=False)


def assert_capacity_changed(ini: I.Initiator) -> None:
    result = ini.scsi(I.CDB_TEST_UNIT_READY)
    assert result.status == I.CHECK_CONDITION and result.sense is not None, result
    assert (result.sense.key, result.sense.asc, result.sense.ascq) == (0x6, 0x2A, 0x09), result.sense


def tool_capacity(tgt) -> int:
    return int(run([tool("iscsi-readcapacity16"), "-s", tgt.url(0)]).stdout.split()[0])


def test_a_grown_lun_is_announced_and_served_on_every_worker_and_a_shrink_is_refused(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    held = sessions_on_every_worker(tgt)
    assert len(held) == 2
    try:
        done = resize(tgt, "--size", "16MiB")
        print(f"resize --size 16MiB: exit {done.returncode}: {done.stdout.strip()}")
        assert done.returncode == 0, done.stdout
        assert os.path.getsize(tgt.lun_path(0)) == NEW
        for index, ini in enumerate(held):
            assert_capacity_changed(ini)
            assert capacity(ini) == NEW
            data = os.urandom(8 * BS)
            lba = OLD // BS + 100 + 16 * index              # beyond the old end
            assert ini.write(lba, data, block_size=BS).status == I.GOOD
            result = ini.read(lba, 8, block_size=BS)
            assert result.status == I.GOOD and result.data == data
        assert tool_capacity(tgt) == NEW

        shrink = resize(tgt, "--size", "8MiB")
        print(f"resize --size 8MiB: exit {shrink.returncode}: {shrink.stdout.strip()}")
        assert shrink.returncode == 1 and "shrinking it to 8388608 would drop the data" in shrink.stdout
        odd = resize(tgt, "--size", "16777700")
        print(f"resize --size 16777700: exit {odd.returncode}: {odd.stdout.strip()}")
        assert odd.returncode == 1 and "multiple of the block size 512" in odd.stdout
        assert os.path.getsize(tgt.lun_path(0)) == NEW
        for ini in held:
            assert ini.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD        # nothing announced
            assert capacity(ini) == NEW
    finally:
        for ini in held:
            ini.close()


def test_a_file_grown_underneath_is_picked_up_and_only_a_running_node_is_resized(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    held = sessions_on_every_worker(tgt)
    try:
        os.truncate(tgt.lun_path(0), GROWN)
        done = resize(tgt)
        print(f"resize (no --size) after truncate -s 24MiB: exit {done.returncode}: {done.stdout.strip()}")
        assert done.returncode == 0 and f"{OLD} -> {GROWN} bytes" in done.stdout, done.stdout
        for ini in held:
            assert_capacity_changed(ini)
            assert capacity(ini) == GROWN
        assert tool_capacity(tgt) == GROWN
    finally:
        for ini in held:
            ini.close()
    tgt.stop()
    stopped = resize(tgt, "--size", "32MiB")
    print(f"resize with no serve running: exit {stopped.returncode}: {stopped.stdout.strip()}")
    assert stopped.returncode == 1 and "no `ringtgt serve` runs" in stopped.stdout
    assert os.path.getsize(tgt.lun_path(0)) == GROWN
    tgt.start()                                 # the configured size (8MiB) again, and a warning says so
    assert tool_capacity(tgt) == OLD
    warnings = [line for line in tgt.stderr().splitlines() if f"image {tgt.lun_path(0)} is {GROWN} bytes" in line]
    print(f"restart: served at {tool_capacity(tgt)} bytes; warnings: {warnings}")
    assert len(warnings) == 1 and "raise the LUN's `size` too" in warnings[0]
