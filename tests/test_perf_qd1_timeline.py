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
# Two cycles as `perf script -F pid,cpu,time,event,trace --ns` prints them (worker 20085 on CPU 0, fio 20095 on 1),
# with an ACK-sized packet, the previous response's send completion and a receive's submission between them.
SCRIPT = f"""\
20085 [000]  1659.905651512: io_uring:io_uring_submit_req: {RING}, user_data 0x12158, opcode RECV, flags 0x400000
20095 [001]  1659.905670000:             net:net_dev_xmit: dev=lo skbaddr=0xffff88810b8f32e0 len=114 rc=0
20095 [001]  1659.905673000:   io_uring:io_uring_task_add: {RING}, user_data 0x12158, opcode RECV, mask c3
20085 [000]  1659.905675000:   io_uring:io_uring_complete: {RING}, user_data 0x12158, result 48, cflags 0x0
20085 [000]  1659.905685000: io_uring:io_uring_submit_req: {RING}, user_data 0x12159, opcode SEND, flags 0x400000
20085 [000]  1659.905687000:             net:net_dev_xmit: dev=lo skbaddr=0xffff888176b3fee0 len=4210 rc=0
20085 [000]  1659.905692000:   io_uring:io_uring_complete: {RING}, user_data 0x12159, result 4144, cflags 0x0
20095 [001]  1659.905700000:             net:net_dev_xmit: dev=lo skbaddr=0xffff88810b8f32e0 len=66 rc=0
20085 [000]  1659.905705000: io_uring:io_uring_submit_req: {RING}, user_data 0x1215a, opcode RECV, flags 0x400000
20095 [001]  1659.905720000:             net:net_dev_xmit: dev=lo skbaddr=0xffff88810b8f38e0 len=114 rc=0
20095 [001]  1659.905722000:   io_uring:io_uring_task_add: {RING}, user_data 0x1215a, opcode RECV, mask c3
20085 [000]  1659.905726000:   io_uring:io_uring_complete: {RING}, user_data 0x1215a, result 48, cflags 0x0
20085 [000]  1659.905734000: io_uring:io_uring_submit_req: {RING}, user_data 0x1215b, opcode SEND, flags 0x400000
20085 [000]  1659.905737000:             net:net_dev_xmit: dev=lo skbaddr=0xffff888176b3ece0 len=4210 rc=0
"""


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
