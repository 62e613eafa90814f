"""What the file system under a LUN refuses, as the initiator sees it: a full file system under a thin LUN
(DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT, one log line for many failures), fallocate modes tmpfs and
ramfs do not have (WRITE SAME of zeros still GOOD; UNMAP offered only where it frees space). The file systems
are mounted by the tests (root only)."""
import os
import re
import struct
import time

from harness import HOST
from mounts import mounted

import initiator as I

NAME = "iqn.2026-11.org.ringtgt:backstore-errors"
BS = 512
DATA_PROTECT, MEDIUM_ERROR = 0x07, 0x03


def lun_on(directory, iqn_suffix: str, size: str) -> str:
    """A [[target]] table with one LUN whose image lies in `directory`."""
    return (f'[[target]]\niqn = "iqn.2026-11.org.ringtgt:{iqn_suffix}"\n[[target.lun]]\nid = 0\n'
            f'path = "{directory}/{iqn_suffix}.img"\nsize = "{size}"\n')


def logged_in(tgt, iqn: str) -> I.Initiator:
    ini = I.Initiator.connect(HOST, tgt.port)
    ini.login(iqn, initiator_name=NAME)
    ini.clear_unit_attentions()
    return ini


def sense_of(result: I.ScsiResult) -> tuple[int, int, int] | None:
    return (result.sense.key, result.sense.asc, result.sense.ascq) if result.sense else None


def test_a_full_file_system_under_a_thin_lun(ringtgt, tmp_path):
    """Writes past what a 4 MiB tmpfs holds: DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (07/27/07), and
    the worker logs it once (path, offset, errno) however many writes fail within the rate limit's interval."""
    with mounted(tmp_path / "small", "tmpfs", "4m") as small:
        tgt = ringtgt(workers=1, extra=lun_on(small, "full", "64MiB"))
        with logged_in(tgt, "iqn.2026-11.org.ringtgt:full") as ini:
            chunk, lba = os.urandom(256 * 1024), 0
            while True:
                result = ini.write(lba, chunk, block_size=BS)
                if result.status != I.GOOD:
                    break
                lba += len(chunk) // BS
                assert lba * BS <= 8 << 20, "8 MiB written to a 4 MiB tmpfs"
            first_failure = time.monotonic()
            senses = [sense_of(result)]
            for i in range(1, 50):
                senses.append(sense_of(ini.write(lba + i * 512, chunk[:4096], block_size=BS)))
            elapsed = time.monotonic() - first_failure
        lines = [line for line in tgt.stderr().splitlines() if "No space left on device" in line]
    print(f"filled after {lba * BS} bytes; {len(senses)} failed writes in {elapsed:.2f} s: senses {set(senses)}; "
          f"{len(lines)} log line(s): {lines}")
    assert result.status == I.CHECK_CONDITION and set(senses) == {(DATA_PROTECT, 0x27, 0x07)}
    assert 1 <= len(lines) <= 1 + int(elapsed // 10)
    assert re.search(rf"write {re.escape(str(small))}/full.img at offset \d+: No space left on device "
                     r"\(errno 28\): answered sense 7/27/07", lines[0]), lines[0]


def write_same16(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x93, flags, lba, blocks, 0, 0)


def test_write_same_of_zeros_where_the_file_system_cannot_zero_a_range(ringtgt, tmp_path):
    """WRITE SAME(16) with a block of zeros and UNMAP=0 (what Linux sends for BLKZEROOUT) on tmpfs, which has no
    FALLOC_FL_ZERO_RANGE: GOOD, and the blocks read back as zeros; those around them are untouched."""
    with mounted(tmp_path / "tmpfs", "tmpfs", "64m") as fs:
        tgt = ringtgt(workers=1, extra=lun_on(fs, "zeros", "16MiB"))
        with logged_in(tgt, "iqn.2026-11.org.ringtgt:zeros") as ini:
            pattern = b"\xab" * (64 * BS)
            assert ini.write(0, pattern, block_size=BS).status == I.GOOD
            for _ in range(2):                          # the second time the refusal is already known
                result = ini.scsi(write_same16(8, 32), data_out=bytes(BS))
                print(f"WRITE SAME(16) of zeros on tmpfs: status {result.status:#x} sense {sense_of(result)}")
                assert result.status == I.GOOD, sense_of(result)
            back = ini.read(0, 64, block_size=BS).data
    assert back == pattern[:8 * BS] + bytes(32 * BS) + pattern[40 * BS:]


def provisioning_vpd(ini: I.Initiator) -> tuple[int, int]:
    """(Logical Block Provisioning VPD byte 5: LBPU LBPWS LBPWS10 … LBPRZ, Block Limits' MAXIMUM UNMAP LBA COUNT)"""
    lbp = ini.scsi(bytes([0x12, 1, 0xB2, 0, 64, 0]), read_length=64).data
    limits = ini.scsi(bytes([0x12, 1, 0xB0, 0, 64, 0]), read_length=64).data
    return lbp[5], struct.unpack_from(">I", limits, 20)[0]


def test_unmap_is_offered_only_where_the_file_can_punch_holes(ringtgt, tmp_path):
    """A thin LUN on the test's own file system and one on tmpfs offer UNMAP and WRITE SAME with UNMAP
    (LBPU, LBPWS, LBPWS10, LBPRZ); one on ramfs, which cannot punch holes, offers neither (LBPRZ alone, no
    unmap limits), and WRITE SAME with UNMAP there still makes the blocks read as zeros."""
    with mounted(tmp_path / "ramfs", "ramfs") as ram, mounted(tmp_path / "tmpfs", "tmpfs", "16m") as tmpfs:
        tgt = ringtgt(workers=1, extra=lun_on(ram, "ram", "4MiB") + lun_on(tmpfs, "tmp", "4MiB"))
        found = {}
        for name in (tgt.iqn, "iqn.2026-11.org.ringtgt:tmp", "iqn.2026-11.org.ringtgt:ram"):
            with logged_in(tgt, name) as ini:
                found[name.rsplit(":", 1)[1]] = provisioning_vpd(ini)
                if name.endswith(":ram"):
                    assert ini.write(0, b"\x5a" * (16 * BS), block_size=BS).status == I.GOOD
                    assert ini.scsi(write_same16(4, 8, flags=0x08), data_out=bytes(BS)).status == I.GOOD
                    back = ini.read(0, 16, block_size=BS).data
                    assert back == b"\x5a" * (4 * BS) + bytes(8 * BS) + b"\x5a" * (4 * BS)
    print(f"(LBP VPD byte 5, MAXIMUM UNMAP LBA COUNT) per file system: {found}")
    assert found[tgt.iqn.rsplit(":", 1)[1]][0] == 0xE4 and found["tmp"][0] == 0xE4
    assert found["ram"] == (0x04, 0) and found["tmp"][1] > 0
