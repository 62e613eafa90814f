"""The coordinator inside `ringtgt serve`: started by the supervisor before the workers, restarted when it
dies, and the workers reconnect to the new one without a restart of their own."""
import os
import signal

from harness import assert_workers_serve, poll


def connected_lines(tgt, coordinator_pid: int) -> list[str]:
    return [line for line in tgt.stderr().splitlines()
            if f"ringtgt.coordinator[{coordinator_pid}]" in line and "connected as" in line]


def test_workers_reconnect_to_a_restarted_coordinator(ringtgt):
    tgt = ringtgt(workers=2)
    first = poll(tgt.coordinator, timeout=10, what="the coordinator process")
    poll(lambda: len(connected_lines(tgt, first)) == 2, timeout=30, what="both workers to say hello")
    assert os.path.exists(tgt.dir / "state" / "coordinator.sock")
    os.kill(first, signal.SIGKILL)
    second = poll(lambda: (pid := tgt.coordinator()) not in (None, first) and pid, timeout=30,
                  what="the supervisor to restart the coordinator")
    poll(lambda: len(connected_lines(tgt, second)) == 2, timeout=30, what="both workers to reconnect")
    assert_workers_serve(tgt, "iqn.2026-11.org.ringtgt:coordinator-restart")
