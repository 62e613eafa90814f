"""perf/qd1_timeline.py: a QD1 cycle found in `perf script`'s lines and split at ringtgt's ring tracepoints."""
import importlib.util
import sys
from pathlib import Path

PERF = Path(__file__).parents[1] / "perf"
sys.path.insert(0, str(PERF))          # qd1_timeline.py imports its siblings bench.py and servers.py
spec = importlib.util.spec_from_file_location("qd1_timeline", PERF / "qd1_timeline.py")
timeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timeline)

RING = "ring 0xffff8881048ad800, req 0xffff88812b173400"
WORKER, FIO = 20085, 20095


def event(pid: int, at: int, name: str, trace: str) -> str:
    """One line as `perf script -F pid,cpu,time,event,trace --ns` prints it, `at` µs into the window (the worker on
    CPU 0, fio on CPU 1)."""
    return f"{pid} [{0 if pid == WORKER else 1:03d}]  1659.{905000 + at:06d}000: {name}: {trace}\n"


def cycle(at: int, user_data: int, to_worker: int, receive: int, python: int, send: int) -> str:
    """A QD1 cycle whose command leaves at `at` µs, through its stages (µs each), then the send's completion and the
    next receive's submission."""
    queued, received = at + to_worker, at + to_worker + receive
    submitted, response = received + python, received + python + send
    ring = f"{RING}, user_data {user_data:#x}"
    return "".join((
        event(FIO, at, "net:net_dev_xmit", "dev=lo skbaddr=0xffff88810b8f32e0 len=114 rc=0"),
        event(FIO, queued, "io_uring:io_uring_task_add", f"{ring}, opcode RECV, mask c3"),
        event(WORKER, received, "io_uring:io_uring_complete", f"{ring}, result 48, cflags 0x0"),
        event(WORKER, submitted, "io_uring:io_uring_submit_req", f"{ring}1, opcode SEND, flags 0x400000"),
        event(WORKER, response, "net:net_dev_xmit", "dev=lo skbaddr=0xffff888176b3fee0 len=4210 rc=0"),
        event(WORKER, response + 5, "io_uring:io_uring_complete", f"{ring}1, result 4144, cflags 0x0"),
        event(FIO, response + 8, "net:net_dev_xmit", "dev=lo skbaddr=0xffff88810b8f32e0 len=66 rc=0"),  # an ACK
        event(WORKER, response + 10, "io_uring:io_uring_submit_req", f"{ring}2, opcode RECV, flags 0x400000"),
    ))


# Two cycles: answers of 17 µs each, the second command 33 µs after the first response
SCRIPT = cycle(670, 0x12158, 3, 2, 10, 2) + cycle(720, 0x12160, 2, 4, 8, 3)


def test_a_cycle_is_split_at_the_workers_ring_tracepoints():
    found = timeline.cycles(SCRIPT, {20085})
    assert len(found) == 2
    stages = timeline.medians(found)
    assert stages["answer"] == 17.0                 # (17 and 17 µs: command packet to response packet)
    assert stages["turnaround"] == 33.0             # the first response to the second command
    assert stages["to the worker"] == 2.5 and stages["receive"] == 3.0
    assert stages["worker (Python)"] == 9.0 and stages["send"] == 2.5


def test_another_servers_cycles_have_only_the_answer_and_the_turnaround():
    found = timeline.cycles(SCRIPT, set())          # no ringtgt worker: its ring's events are not its cycles'
    stages = timeline.medians(found)
    assert stages["answer"] == 17.0 and stages["turnaround"] == 33.0
    assert set(stages) == {"answer", "turnaround"}
