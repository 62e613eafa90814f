"""fio's libiscsi engine: eight concurrent sessions of verified random writes, spread over the workers; verified
writes of mixed sizes on an O_DIRECT LUN."""
import os

import pytest

import procfs
from harness import ConnectionWatcher, FioRun, Lun, fio_json, worker_accepting, write_fio_job

JOBS = 8
PER_JOB = 32 << 20  # each job owns its own 8 MiB slice of the LUN (offset_increment): verify stays valid


def test_fio_randwrite_verify_eight_sessions(ringtgt, tmp_path):
    tgt = ringtgt(luns=[Lun(0, f"{JOBS * PER_JOB >> 20}MiB", 512)])
    job = write_fio_job(tmp_path / "randwrite.fio", tgt.url(0), rw="randwrite",
                        bssplit="4k/40:16k/20:64k/20:128k/20", verify="crc32c", verify_fatal=1,
                        numjobs=JOBS, size=PER_JOB, offset_increment=PER_JOB,
                        initiator="iqn.2026-11.org.ringtgt:fio")
    report_path = tmp_path / "fio.json"
    with ConnectionWatcher(tgt) as watcher, \
            FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report_path}") as fio:
        status = fio.wait(timeout=600)
    output = f"fio exit {status}\n{fio.text()}\n{report_path.read_text() if report_path.exists() else ''}"
    assert status == 0, output
    jobs = fio_json(report_path)["jobs"]
    assert len(jobs) == JOBS, output
    for j in jobs:
        assert j["error"] == 0, output
        assert j["write"]["io_bytes"] == PER_JOB, output  # every byte written …
        assert j["read"]["io_bytes"] == PER_JOB, output   # … and read back and checked (verify=crc32c)

    counts = watcher.counts()
    print(f"fio connections per worker: {counts}")
    assert watcher.total() >= JOBS, f"saw only {counts} established connections for {JOBS} fio jobs"
    # SO_REUSEPORT hashes connections over the workers; eight all landing on one worker happens 1 in
    # 128 runs by chance alone, so a worker that got none must prove it accepts with probe connections.
    idle = {pid for pid, n in counts.items() if n == 0}
    for _ in range(64):
        if not idle:
            break
        idle.discard(worker_accepting(tgt))
    assert not idle, f"workers {sorted(idle)} accepted no connection (fio: {counts}, plus 64 probes)"


@pytest.mark.parametrize("lun_keys, iodepth, server", [
    ("direct = true", 8, ""), ("direct = true\natomic_writes = false", 1, ""),
    ("direct = true\nwrite_queue_depth = 2", 16, ""),
    ("direct = true", 16, "immediate_data = true\ninitial_r2t = false")],
    ids=["qd8", "qd1-linked-reads", "qd16-held-writes", "qd16-immediate-data"])
def test_fio_verify_on_an_o_direct_lun(ringtgt, tmp_path, lun_keys, iodepth, server):
    """`direct = true`: reads land in and writes leave from the aligned buffers, whatever sizes come; one at a time
    on a LUN without atomic writes, each read's Data-In leaves linked to its disk read; 64 at a time on a LUN that
    keeps two writes in the kernel, the rest held in the worker and started as those complete; with immediate
    data, each big write's data received straight into its buffer, with its header or after it, whichever size
    came before it (a segment received ahead for a write like the last one, taken as a stream when it is not)."""
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT))
    except OSError as exc:
        pytest.skip(f"the test directory's file system refuses O_DIRECT ({exc.strerror}): {tmp_path}")
    jobs, per_job = 4, 8 << 20
    tgt = ringtgt(luns=[Lun(0, f"{jobs * per_job >> 20}MiB", 512, lun_keys)], workers=1, server_extra=server)
    job = write_fio_job(tmp_path / "direct.fio", tgt.url(0), rw="randwrite", bssplit="512/10:4k/40:60k/20:128k/30",
                        verify="crc32c", verify_fatal=1, iodepth=iodepth,
                        numjobs=jobs, size=per_job,
                        offset_increment=per_job, initiator="iqn.2026-11.org.ringtgt:fio")
    report_path = tmp_path / "fio.json"
    with FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report_path}") as fio:
        status = fio.wait(timeout=600)
    output = f"fio exit {status}\n{fio.text()}\n{report_path.read_text() if report_path.exists() else ''}"
    assert status == 0, output
    for j in fio_json(report_path)["jobs"]:
        assert j["error"] == 0, output
        assert j["write"]["io_bytes"] == j["read"]["io_bytes"] == per_job, output    # all written, read, checked


def test_each_worker_pinned_to_one_cpu(shared_ringtgt):
    cpus = {pid: procfs.cpus_allowed(pid) for pid in shared_ringtgt.workers}
    assert len(cpus) == 2, cpus
    for pid, allowed in cpus.items():
        assert len(procfs.cpu_list(allowed)) == 1, f"worker {pid} Cpus_allowed_list {allowed!r}"
    assert len(set(cpus.values())) == len(cpus), f"workers share a CPU: {cpus}"
