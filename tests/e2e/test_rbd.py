"""The RBD backstore against a one-node Ceph cluster (tests/ceph_cluster.py, one per session): fio's verified
random writes through both workers of a `ringtgt serve`, libiscsi's conformance suite, `rbd resize` announced to
every session, and the start-up checks (a missing image, an image created from `size`, exclusive-lock refused)."""

from harness import FioRun, Lun, write_fio_job
from test_fio import fio_json


BS = 512
JOBS = 4
PER_JOB = 16 << 20


def rbd_lun(cluster, name: str, size: int | None = None, lun: int = 0, block_size: int = BS, extra: str = "") -> Lun:
    """A LUN on image `name` (created first with `size`, as an operator would, unless size is None)."""
    if size is not None:
        cluster.create_image(name, size)
    return Lun(lun, f"{size or 0}", block_size, extra=extra, store=cluster.lun_keys(name))


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
