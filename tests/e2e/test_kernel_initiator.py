"""The Linux kernel initiator (open-iscsi, iscsi_tcp, dm-multipath) against ringtgt, in one QEMU guest.

tests/e2e/kernel_initiator.sh runs in a guest booted once for this module (tests/guest.py: Debian's kernel over
this machine's root, KVM when usable, else TCG); ringtgt runs in the guest too. The script's sections each print
what they measured ("RESULT <section> key=value ..."); every test here reads one section's figures.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the guest harness

import guest  # noqa: E402

SCRIPT = Path(__file__).with_name("kernel_initiator.sh")
NAA = "6001405aa1b2c3d4e5f60718293a4b5c"
GUEST_TIMEOUT = 1800.0      # boot, two ringtgt starts and 19 sections: ~10 min under TCG on a 2-CPU machine shared
                            # with other work, a few minutes when idle
FIO = "/usr/bin/fio"        # Debian's: built for a generic x86-64, so TCG's CPU model runs it (no SIGILL)


class GuestRun:
    def __init__(self, result: guest.GuestResult):
        self.result = result
        self.status = {m[1]: int(m[2]) for m in re.finditer(r"^SECTION (\S+) status=(\d+)", result.output, re.M)}
        self.figures: dict[str, dict[str, str]] = {}
        for line in re.findall(r"^RESULT (.*)$", result.output, re.M):
            name, *pairs = shlex.split(line)
            self.figures[name] = dict(pair.partition("=")[::2] for pair in pairs)

    def section(self, name: str) -> dict[str, str]:
        """The figures of a section that ran and exited 0, printed; else fail with its part of the output."""
        out = self.result.output
        start = out.find(f"== {name}\n")
        status_line = out.find("\nSECTION ", start)     # none: the guest ended (or was killed) in this section
        end = out.find("\n== ", status_line + 1) if status_line >= 0 else -1      # its diagnostics included, if any
        excerpt = out[start:end if end >= 0 else len(out)][-6000:] if start >= 0 else out[-3000:]
        assert self.status.get(name) == 0, (f"section {name} exited {self.status.get(name)} "
                                            f"(guest status {self.result.status}):\n{excerpt}")
        figures = self.figures.get(name, {})
        print(f"{name}: {' '.join(f'{k}={v}' for k, v in figures.items())}")
        return figures


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> GuestRun:
    ringtgt = Path(sys.executable).parent / "ringtgt"
    header = (f"RINGTGT={shlex.quote(str(ringtgt))}\nRINGTGT_REPO={shlex.quote(str(guest.REPO))}\n"
              f"FIO={FIO}\n")
    log = tmp_path_factory.mktemp("kernel-initiator") / "guest.log"     # to follow a run: tail -f it
    result = guest.run_script(header + SCRIPT.read_text(), timeout=GUEST_TIMEOUT, log=log)
    print(f"guest ({result.accel}) ran {result.seconds:.0f} s, status {result.status}; output in {log}")
    assert result.status is not None, f"the guest did not finish within {GUEST_TIMEOUT:g} s:\n{result.output[-4000:]}"
    return GuestRun(result)


def test_discovery_and_login(run):
    f = run.section("discovery_login")
    assert f["targets"].split(",") == ["iqn.2026-11.org.ringtgt:kernel", "iqn.2026-11.org.ringtgt:kernel-chap"]
    assert f["state"] == "LOGGED_IN"


def test_device_identification_vpd_shows_the_configured_naa(run):
    f = run.section("vpd")
    assert f["naa"] == f"0x{NAA}"
    assert f["vendor"] == "RINGTGT"
    assert f["wwid"] == f"3{NAA}"         # udev's scsi_id: NAA type 3 + the designator, what multipath keys on


def test_o_direct_dd_round_trip(run):
    assert run.section("dd_direct")["identical"] == "yes"


def test_blkdiscard_on_a_thin_lun_punches_holes(run):
    f = run.section("discard")
    assert f["provisioning_mode"] == "unmap"
    assert int(f["discard_max_bytes"]) > 0
    assert int(f["image_kib_after"]) <= int(f["image_kib_before"]) - 8 * 1024
    assert f["reads_zero"] == "yes"


def test_mkfs_ext4_and_fsck(run):
    f = run.section("mkfs_fsck")
    assert f["fsck_rc"] == "0" and f["file_identical"] == "yes"


def test_fio_libaio_verify(run):
    f = run.section("fio_verify")
    assert (f["rc"], f["err"]) == ("0", "0")


def test_4096_byte_block_lun(run):
    f = run.section("block_4096")
    assert f["logical_block_size"] == "4096"
    assert f["size_bytes"] == str(32 << 20)
    assert f["identical"] == "yes"
    assert f["write_512_direct"] == "refused"


def test_read_only_lun_mounts_read_only(run):
    f = run.section("readonly")
    assert f["ro"] == "1"
    assert f["content"] == "read-only_LUN_content"
    assert f["write"] == "refused"


def test_logout_and_login_again(run):
    f = run.section("logout_login")
    assert f["sessions_after_logout"] == "0"
    assert f["fsck_rc"] == "0"


def test_crc32c_header_and_data_digests(run):
    f = run.section("digests")
    assert (f["header"], f["data"], f["identical"]) == ("CRC32C", "CRC32C", "yes")


def test_chap(run):
    f = run.section("chap")
    # iscsiadm's 24: the target refused the login for authentication (not a timeout, nor another error)
    assert f["login_without_rc"] == "24"
    assert f["login_wrong_secret_rc"] == "24"
    assert f["login_with_secret"] == "ok" and f["identical"] == "yes"


def test_two_sessions_see_the_same_wwid(run):
    f = run.section("second_path")
    assert f["sessions"] == "2"
    assert f["wwid_a"] == f["wwid_b"] == f"3{NAA}"


def test_persistent_reservations_from_sg_persist(run):
    f = run.section("reservations")
    assert f["keys"] == "0xa1,0xb2"
    assert f["holder"] == "0xa1"
    assert f["write_other_path"] == "refused"
    assert f["after_clear"] == "0"


def test_dm_multipath_over_two_sessions(run):
    f = run.section("multipath")
    assert f["map"] == f"3{NAA}"
    assert f["paths"] == "2"
    assert f["identical"] == "yes"


def test_worker_sigkill_under_verified_fio(run):
    f = run.section("worker_kill")
    assert (f["rc"], f["err"]) == ("0", "0")


def test_coordinator_kill_under_verified_fio(run):
    f = run.section("coordinator_kill")
    assert (f["rc"], f["err"]) == ("0", "0")
    assert f["restarted"] == "yes"


def test_target_restart_under_verified_fio(run):
    f = run.section("target_restart")
    assert (f["rc"], f["err"]) == ("0", "0")
    assert f["state"] == "LOGGED_IN"


def test_logout_all(run):
    assert run.section("logout_all")["sessions"] == "0"
