"""The RBD backstore against a one-node Ceph cluster (tests/ceph_cluster.py, one per session): fio's verified
random writes through both workers of a `ringtgt serve`, libiscsi's conformance suite, `rbd resize` announced to
every session, and the start-up checks (a missing image, an image created from `size`, exclusive-lock refused)."""

import json
import os
import re
from collections import Counter
from functools import partial

from conformance import ALONE, every_test_but, run_suite
from harness import (FioRun, Lun, RingTgt, capacity, fio_json, poll, ringtgt_binary, run, serve_expecting_exit,
                     sessions_on_every_worker, write_fio_job)

import initiator as I
import procfs


BS = 512
JOBS = 4
PER_JOB = 16 << 20
SANITIZE_PACE = 'sanitize_rate = "8MiB"'    # as test_conformance.py: Sanitize.Reset needs a SANITIZE of seconds


def rbd_lun(cluster, name: str, size: int | None = None, lun: int = 0, block_size: int = BS, extra: str = "") -> Lun:
    """A LUN on image `name` (created first with `size`, as an operator would, unless size is None)."""
    if size is not None:
        cluster.create_image(name, size)
    return Lun(lun, f"{size}" if size else "", block_size, extra=extra, store=cluster.lun_keys(name))


def not_good(ini: I.Initiator):
    """TEST UNIT READY's result when it is not GOOD (None while it is)."""
    result = ini.scsi(I.CDB_TEST_UNIT_READY)
    return result if result.status != I.GOOD else None


def test_fio_verify_on_an_rbd_lun_through_both_workers(ringtgt, ceph_cluster, tmp_path):
    tgt = ringtgt(luns=[rbd_lun(ceph_cluster, "fio", JOBS * PER_JOB)], workers=2)
    job = write_fio_job(tmp_path / "rbd.fio", tgt.url(0), rw="randwrite", bssplit="4k/50:64k/30:128k/20",
                        verify="crc32c", verify_fatal=1, numjobs=JOBS, size=PER_JOB, offset_increment=PER_JOB,
                        iodepth=16, initiator="iqn.2026-11.org.ringtgt:fio-rbd")
    report_path = tmp_path / "fio.json"
    with FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report_path}") as fio:
        status = fio.wait(timeout=600)
    output = f"fio exit {status}\n{fio.text()}\n{report_path.read_text() if report_path.exists() else ''}"
    assert status == 0, output
    jobs = fio_json(report_path)["jobs"]
    for j in jobs:
        assert j["error"] == 0, output
        assert j["write"]["io_bytes"] == j["read"]["io_bytes"] == PER_JOB, output
    print(f"fio on RBD: {sum(j['write']['iops'] for j in jobs):.0f} write IOPS, "
          f"{sum(j['read']['iops'] for j in jobs):.0f} verify-read IOPS over {JOBS} jobs")
    # each worker is a client of its own: one address (its nonce) each, or the cluster drops one for the other
    addresses = re.findall(r"RBD image rbd/fio: \d+ bytes served, as .* at (\S+)", tgt.stderr())
    assert len(addresses) == 2 and len(set(addresses)) == 2, addresses
    # each worker's own thread is pinned to its CPU, librados's threads (they receive and copy the data) are not
    allowed = os.sched_getaffinity(0)
    for pid in tgt.workers:
        threads = procfs.thread_cpus(pid)
        assert len(procfs.cpu_list(procfs.cpus_allowed(pid))) == 1, threads
        assert threads["msgr-worker-0"] == threads["io_context_pool"] == allowed, threads


def test_iscsi_test_cu_all_on_an_rbd_lun(ringtgt, ceph_cluster, tmp_path):
    """libiscsi's whole suite against an RBD LUN served by two workers, as test_conformance.py runs it on a file:
    zero failures (COMPARE AND WRITE through librbd's, UNMAP and WRITE SAME's unmap as discards, GET LBA STATUS
    from the diff iteration)."""
    url = ringtgt(workers=2, luns=[rbd_lun(ceph_cluster, "conformance", 64 << 20, extra=SANITIZE_PACE)]).url(0)
    test_list, total = every_test_but(ALONE, tmp_path / "tests.txt")
    reports = [run_suite(test_list, url), run_suite(ALONE, url)]
    verdicts = Counter(t.verdict for report in reports for t in report.tests)
    print(f"ALL on RBD, in two runs: {sum(verdicts.values())} tests, {verdicts['passed']} passed, "
          f"{verdicts['FAILED']} failed, {verdicts['SKIPPED']} skipped")
    assert sum(verdicts.values()) == total > 200, "the whole suite did not run"


def test_rbd_resize_is_announced_to_every_session_and_served(ringtgt, ceph_cluster):
    """`rbd resize` grows the image: each worker's header watch sees it, the coordinator accepts it once, and every
    session on every worker gets CAPACITY DATA HAS CHANGED, then READ CAPACITY's new size and the new blocks."""
    old, new = 8 << 20, 16 << 20
    ceph_cluster.create_image("grown", old)
    tgt = ringtgt(luns=[Lun(0, "", BS, store=ceph_cluster.lun_keys("grown"))], workers=2)     # the image's size
    held = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:rbd-resize")
    assert len(held) == 2
    try:
        assert all(capacity(ini) == old for ini in held)
        ceph_cluster.rbd("resize", "--size", f"{new}B", "rbd/grown")
        for index, ini in enumerate(held):
            result = poll(partial(not_good, ini), timeout=30, what="CAPACITY DATA HAS CHANGED after `rbd resize`")
            assert result.status == I.CHECK_CONDITION and result.sense is not None, result
            assert (result.sense.key, result.sense.asc, result.sense.ascq) == (0x6, 0x2A, 0x09), result.sense
            assert ini.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD         # told once
            assert capacity(ini) == new
            data = os.urandom(8 * BS)
            lba = old // BS + 100 + 16 * index
            assert ini.write(lba, data, block_size=BS).status == I.GOOD
            result = ini.read(lba, 8, block_size=BS)
            assert result.status == I.GOOD and result.data == data

        # shrunk back under the LUN: refused by the coordinator, and writes past the image's end fail, not dropped
        ceph_cluster.rbd("resize", "--allow-shrink", "--size", f"{old}B", "rbd/grown")
        for ini in held:
            result = poll(partial(write_fails, ini, old // BS + 8), timeout=30, what="a write past the end to fail")
            assert (result.sense.key, result.sense.asc, result.sense.ascq) == (0x3, 0x0C, 0x00), result.sense
            assert ini.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD          # nothing announced
            assert capacity(ini) == new
    finally:
        for ini in held:
            ini.close()


def write_fails(ini: I.Initiator, lba: int):
    """A one-block WRITE's result when it fails (None while it succeeds)."""
    result = ini.write(lba, bytes(BS), block_size=BS)
    return result if result.status == I.CHECK_CONDITION else None


def test_start_up_checks_of_an_rbd_lun(ceph_cluster, tmp_path):
    """`serve` refuses, with one line naming the image, a missing image without a size and an image with
    exclusive-lock (it would move between the workers at every write); a missing image with a size is created,
    sparse and without exclusive-lock."""
    def serve(name: str, lun: Lun) -> tuple[int, list[str]]:
        return serve_expecting_exit(RingTgt(tmp_path / name, luns=[lun]).config)

    status, lines = serve("missing", Lun(0, "", BS, store=ceph_cluster.lun_keys("missing")))
    assert status == 1 and len(lines) == 1 and "RBD image rbd/missing does not exist" in lines[0], lines

    ceph_cluster.rbd("create", "--size", "8M", "--image-feature", "layering,exclusive-lock", "rbd/locked")
    status, lines = serve("locked", Lun(0, "", BS, store=ceph_cluster.lun_keys("locked")))
    assert status == 1 and len(lines) == 1 and "rbd/locked has the exclusive-lock feature" in lines[0], lines

    tgt = RingTgt(tmp_path / "created", luns=[Lun(0, "8MiB", BS, store=ceph_cluster.lun_keys("created"))]).start()
    try:
        info = json.loads(ceph_cluster.rbd("info", "--format", "json", "rbd/created"))
        print(f"created: {info['size']} bytes, features {info['features']}")
        assert info["size"] == 8 << 20 and "exclusive-lock" not in info["features"]
        ini = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:rbd-created")[0]
        try:
            assert capacity(ini) == 8 << 20
        finally:
            ini.close()
    finally:
        tgt.stop()


def test_a_cephx_client_of_its_own(ringtgt, ceph_cluster, tmp_path):
    """A LUN reached as `client.iscsi` with its keyring (cephx, RBD caps on the pool only) serves I/O; a client the
    cluster does not know stops `serve` with one line naming it."""
    keyring = ceph_cluster.client_keyring("client.iscsi")
    keys = ceph_cluster.lun_keys("cephx") + f'\nclient_name = "client.iscsi"\nkeyring = "{keyring}"'
    ceph_cluster.create_image("cephx", 8 << 20)
    tgt = ringtgt(luns=[Lun(0, "", BS, store=keys)], workers=2)
    assert "as client.iscsi of" in tgt.stderr()
    ini = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:rbd-cephx")[0]
    try:
        data = os.urandom(16 * BS)
        assert ini.write(100, data, block_size=BS).status == I.GOOD
        result = ini.read(100, 16, block_size=BS)
        assert result.status == I.GOOD and result.data == data
    finally:
        ini.close()

    stranger = keys.replace('client_name = "client.iscsi"', 'client_name = "client.stranger"')
    status, lines = serve_expecting_exit(RingTgt(tmp_path / "stranger", luns=[Lun(0, "", BS, store=stranger)]).config)
    assert status == 1 and len(lines) == 1, lines
    assert "ceph client client.stranger" in lines[0] and "Permission denied" in lines[0], lines


def test_a_reload_adds_an_rbd_lun_its_image_created(ringtgt, ceph_cluster):
    """`ringtgt reload` with a new RBD LUN and a size: the coordinator's check creates the image (no exclusive-lock)
    and every worker serves it; one naming a missing image without a size is refused, nothing changed."""
    tgt = ringtgt(luns=[rbd_lun(ceph_cluster, "before-reload", 8 << 20)], workers=2)
    base = tgt.config.read_text()
    tgt.config.write_text(base + f'\n[[target.lun]]\nid = 2\n{ceph_cluster.lun_keys("absent")}\n')
    refused = run([ringtgt_binary(), "reload", "--config", str(tgt.config)], check=False)
    print(f"reload with a missing image: exit {refused.returncode}: {refused.stdout.strip()}")
    assert refused.returncode != 0 and "rbd/absent does not exist" in refused.stdout, refused.stdout

    tgt.config.write_text(base + f'\n[[target.lun]]\nid = 1\nsize = "8MiB"\n{ceph_cluster.lun_keys("reloaded")}\n')
    done = run([ringtgt_binary(), "reload", "--config", str(tgt.config)], check=False)
    print(f"reload adding an RBD LUN: exit {done.returncode}: {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout
    info = json.loads(ceph_cluster.rbd("info", "--format", "json", "rbd/reloaded"))
    assert info["size"] == 8 << 20 and "exclusive-lock" not in info["features"]
    held = sessions_on_every_worker(tgt, "iqn.2026-12.org.ringtgt:rbd-reload")
    try:
        for ini in held:
            ini.clear_unit_attentions(lun=1)        # the new unit's power-on
            data = os.urandom(8 * BS)
            assert ini.write(10, data, block_size=BS, lun=1).status == I.GOOD
            result = ini.read(10, 8, block_size=BS, lun=1)
            assert result.status == I.GOOD and result.data == data
    finally:
        for ini in held:
            ini.close()
