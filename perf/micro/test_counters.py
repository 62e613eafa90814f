"""What the counters (target/metrics) cost per I/O: READs through a logged-in Connection from received bytes to
response sent, 32 per received batch (QD32) and one (QD1) (`test_connection_reads`; runs unchanged on a tree
without counters, so the same file measured on two trees gives the difference), and the counting alone
(`test_count_32_reads`).

    PYTHONPATH=TREE .venv/bin/python -m pytest perf/micro/test_counters.py --benchmark-only -p no:cacheprovider

Divide a benchmark's time by its batch for one I/O; compare the minimums (the steadiest figure on a busy machine).
"""
from __future__ import annotations

import struct

import pytest

from target.iscsi import pdu as P
from target.iscsi.connection import Connection
from tests.iscsi_helpers import login_request, scsi_command
from tests.iscsi_host import INI, IQN, Host, exchange

try:
    from target.metrics.counters import WorkerCounters
except ImportError:                     # a tree from before the counters
    WorkerCounters = None

BATCH = 32
ROUNDS = 3000


def logged_in() -> Connection:
    conn = Connection(Host(), ("127.0.0.1", 3260), ("127.0.0.1", 5000))
    conn.receive_data(login_request([("InitiatorName", INI), ("TargetName", IQN), ("MaxRecvDataSegmentLength",
                                                                                    "262144")]))
    (pdu, _), = exchange(conn)
    assert pdu.opcode == P.LOGIN_RESPONSE and pdu.login_status == 0
    return conn


def reads(first_cmd_sn: int, batch: int = BATCH) -> bytes:
    """`batch` 4 KiB READ(10)s, CmdSN on from `first_cmd_sn`."""
    return b"".join(scsi_command(b"\x28\0" + struct.pack(">IxH", i * 8 % 64, 8) + b"\0", itt=i, read=True,
                                 edtl=4096, cmd_sn=first_cmd_sn + i) for i in range(batch))


@pytest.fixture
def counters(tmp_path):
    if WorkerCounters is None:
        yield None
        return
    counters = WorkerCounters(str(tmp_path), 0, "micro", [(IQN, 0)])
    yield counters
    counters.close()


@pytest.mark.parametrize("batch", [BATCH, 1])
def test_connection_reads(benchmark, counters, batch):
    conn = logged_in()
    streams = iter([reads(1 + r * batch, batch) for r in range(ROUNDS + 1)])
    sent = []

    def one_batch(stream):
        conn.receive_data(stream)
        conn.take_output()
        finished = conn.output_sent()
        if counters is not None:
            counters.count(conn, finished, 5000)
        sent.append(len(finished) if finished is not None else None)

    benchmark.pedantic(one_batch, setup=lambda: ((next(streams),), {}), rounds=ROUNDS)
    assert len(sent) == ROUNDS and not conn.commands and not conn.closing
    assert counters is None or sent[-1] == batch


@pytest.mark.skipif(WorkerCounters is None, reason="a tree without counters")
def test_count_32_reads(benchmark, counters):
    conn = logged_in()
    conn.receive_data(reads(1))
    conn.take_output()
    finished = conn.output_sent()
    assert len(finished) == BATCH
    benchmark(counters.count, conn, finished, 5000)
    assert sum(counters.counts) > 0
