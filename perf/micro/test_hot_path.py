"""pytest-benchmark micro-benchmarks of the per-I/O pieces: PDU decode and encode, CDB dispatch, the ring.

Not part of `make test` (tests/ only). Run: `make bench-micro`, or
`.venv/bin/python -m pytest perf/micro --benchmark-only` (add `--benchmark-autosave` / `--benchmark-compare`
to track them between commits). Each benchmark also asserts the result, so a broken piece fails loudly.
"""
from __future__ import annotations

import struct

import pytest

from ioring import Ring
from target.backstore.null import NullBackstore
from target.iscsi import pdu as P
from target.iscsi import responses as R
from target.iscsi.framing import FrameDecoder
from target.reactor import Reactor
from target.scsi.lun import LogicalUnit
from target.scsi.task import GOOD, ScsiTask
from tests.unit_coordinator import attached, coordinated_target

BATCH = 32
READ10 = struct.Struct(">BBIBHB")


def read_command(itt: int, lba: int, blocks: int = 8) -> bytes:
    cdb = READ10.pack(0x28, 0, lba, 0, blocks, 0).ljust(16, b"\0")
    return P.BHS.pack(P.SCSI_COMMAND, 0xC1, 0, 0, 0, 0, itt, blocks * 512, itt, 0, 0, 0, 0, 0)[:32] + cdb


@pytest.fixture
def reactor():
    ring = Ring(256)
    yield Reactor(ring)
    ring.close()


def test_decode_32_read_commands(benchmark):
    stream = b"".join(read_command(i, i * 8) for i in range(BATCH))
    decoder = FrameDecoder()
    pdus = benchmark(decoder.feed, stream)
    assert len(pdus) == BATCH and pdus[-1].opcode == P.SCSI_COMMAND and decoder.buffered == 0


def test_encode_data_in_4k(benchmark):
    data = memoryview(bytearray(4096))

    def encode():
        out = []
        R.data_in(out, data, 0, 7, (1, 2, 33), 262144, 262144, GOOD, (0, 0))
        return out
    out = benchmark(encode)
    assert P.decode_bhs(bytes(out[0])).flags & 0x81 == 0x81


def test_dispatch_32_reads_null_backstore(benchmark, reactor):
    store = NullBackstore(reactor, path=None, size=1 << 30, block_size=512)
    unit = LogicalUnit(0, store, serial="BENCH", naa="6001405" + "0" * 25, target_iqn="iqn.2026-11.x:y",
                       portal_group_tag=1, relative_port=1)
    target = coordinated_target({0: unit})
    attached(target, "n")
    cdbs = [read_command(i, i * 8)[32:] for i in range(BATCH)]
    done = []
    target.execute(ScsiTask(0, cdbs[0], "n", "i", 4096, True, False, None, done.append))   # the power-on UA
    reactor.run_once(0)

    def dispatch():
        done.clear()
        for cdb in cdbs:
            target.execute(ScsiTask(0, cdb, "n", "i", 4096, True, False, None, done.append))
        while len(done) < BATCH:
            reactor.run_once(1)
        return done
    finished = benchmark(dispatch)
    assert all(task.status == GOOD and len(task.data_in) == 4096 for task in finished)


def test_ring_32_nops_submit_and_reap(benchmark, reactor):
    ring = reactor.ring

    def batch():
        for token in range(1, BATCH + 1):
            ring.prep_nop(token)
        ring.submit_and_wait(BATCH)
        return ring.reap()
    completions = benchmark(batch)
    assert len(completions) == BATCH
