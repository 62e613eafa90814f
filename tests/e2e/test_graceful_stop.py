"""SIGTERM while fio is driving I/O: the server and all its workers exit, status 0, within a few seconds."""
from harness import STOP_TIMEOUT, ConnectionWatcher, FioRun, poll, write_fio_job

JOBS = 4


def test_sigterm_during_fio(ringtgt, tmp_path):
    tgt = ringtgt()
    job = write_fio_job(tmp_path / "busy.fio", tgt.url(0), rw="randrw", bs="4k", numjobs=JOBS,
                        time_based=1, runtime=300, initiator="iqn.2026-11.org.ringtgt:fio-stop")
    with FioRun(job, tmp_path / "fio.out") as fio:  # leaving the block stops fio (libiscsi would reconnect)
        with ConnectionWatcher(tgt) as watcher:
            poll(lambda: fio.proc.poll() is not None or watcher.total() >= JOBS, timeout=60,
                 what=f"{JOBS} fio sessions to connect")
        assert fio.proc.poll() is None, f"fio exited {fio.proc.returncode} early:\n{fio.text()}"
        tgt.stop(timeout=STOP_TIMEOUT)  # SIGTERM; asserts exit 0 and every worker gone within the bound
        print(f"supervisor exited {tgt.stop_seconds:.2f} s after SIGTERM with {watcher.total()} fio sessions")
