"""What a client can make a worker hold for SCSI commands, measured on a real `ringtgt serve` with one worker
(the hostile client and the victim share it), with RSS read from /proc:

- WRITEs of one block claiming an Expected Data Transfer Length of 256 MiB: the worker solicits and holds the
  one block, not the claim, and answers GOOD with the underflow residual;
- a WRITE whose EDTL is less than its one block: CHECK CONDITION, INVALID FIELD IN COMMAND INFORMATION UNIT, and
  nothing written;
- a client that sends 128 KiB READs with consecutive CmdSNs and never reads its socket: the worker stops reading
  it (the commands it takes stop growing), its RSS stays bounded, and a verified fio job on the same worker
  finishes with err=0;
- a client with a full window of 8 MiB WRITEs that answers every R2T with all but the last byte of its burst:
  the worker solicits no more than its R2T budget (CONNECTION_WRITE_BUDGET), its RSS stays bounded, a verified
  fio job on the same worker finishes with err=0, and once the client sends the missing bytes every WRITE gets
  its R2Ts in turn and completes.

The figures (RSS before and after, commands sent and answered) are printed: run pytest with -s to see them."""
import json
import select
import struct
import threading
import time

import procfs
from harness import FioRun, Lun, poll, session, worker_of, write_fio_job

import initiator as I
from target.iscsi.write_budget import CONNECTION_WRITE_BUDGET

BS = 512
MiB = 1 << 20
HUGE_EDTL = 256 * MiB
READ_BLOCKS = 256                   # 128 KiB READs
RSS_ALLOWANCE = 128 * MiB           # bounded: the output bound, a window of reads, a fio session
RSS_GUARD = 1024 * MiB              # the flooder stops here (it would go on to the OOM killer otherwise)
FIO_SIZE = 16 * MiB
WRITE_SIZE = 8 * MiB                # the stingy writer's WRITE(16)s: a full window of them, 1 GiB in all
STINGY_WRITES = 128
R2T_QUIET = 3.0                     # seconds without an R2T after which the stingy writer takes stock


def one_block_write(ini: I.Initiator, lba: int, edtl: int) -> int:
    """Send a WRITE(10) of one block with `edtl` as its Expected Data Transfer Length; its ITT."""
    itt = ini.next_itt()
    ini.send_pdu(ini.command_pdu(I.cdb_write10(lba, 1), write_length=edtl, itt=itt))
    return itt


def test_huge_edtl_writes_hold_what_the_cdb_asks_for(ringtgt):
    tgt = ringtgt(workers=1)
    with session(tgt, "iqn.2026-11.org.ringtgt:huge-edtl") as ini:
        worker = worker_of(tgt, ini.sock)
        before = procfs.rss_bytes(worker)
        itts = [one_block_write(ini, lba, HUGE_EDTL) for lba in range(8)]     # 2 GiB claimed in all
        r2ts = {}
        for itt in itts:
            r2t = ini.recv_answer(itt)
            assert r2t.opcode == I.R2T, r2t
            r2ts[itt] = (r2t.ttt, *struct.unpack_from(">II", r2t.bhs, 40))
        held = procfs.rss_bytes(worker)
        assert {(offset, length) for _, offset, length in r2ts.values()} == {(0, BS)}, r2ts   # a block each
        for lba, itt in enumerate(itts):
            ini.send_pdu(ini.data_out_pdu(itt, r2ts[itt][0], bytes([lba + 1]) * BS, offset=0, data_sn=0,
                                          final=True))
            response = ini.recv_answer(itt)
            assert response.opcode == I.SCSI_RESPONSE and response.bhs[3] == 0, response
            assert response.flags & 0x02 and response.u32(44) == HUGE_EDTL - BS     # underflow residual
        after = procfs.rss_bytes(worker)
        print(f"8 one-block WRITEs with EDTL {HUGE_EDTL >> 20} MiB: worker RSS {before / MiB:.1f} MiB before, "
              f"{held / MiB:.1f} MiB with all of them waiting for data, {after / MiB:.1f} MiB after")
        assert held - before < 16 * MiB and after - before < 16 * MiB
        data = ini.read(0, 8, block_size=BS).data
        assert data == b"".join(bytes([lba + 1]) * BS for lba in range(8))


def test_a_write_with_less_data_than_its_block_is_refused_and_writes_nothing(ringtgt):
    tgt = ringtgt(workers=1)
    with session(tgt, "iqn.2026-11.org.ringtgt:short-edtl") as ini:
        assert ini.write(40, b"a" * BS, block_size=BS).status == 0
        itt = one_block_write(ini, 40, 200)
        result = ini._collect(itt, 0, b"b" * 200, 0)
        print(f"one-block WRITE with EDTL 200: status {result.status:#04x}, sense "
              f"{result.sense and (result.sense.key, result.sense.asc, result.sense.ascq)}, "
              f"overflow residual {result.residual_overflow}")
        assert result.status == 0x02 and result.sense is not None
        assert (result.sense.key, result.sense.asc, result.sense.ascq) == (I.ILLEGAL_REQUEST, 0x0E, 0x03)
        assert result.residual_overflow == BS - 200
        assert ini.read(40, 1, block_size=BS).data == b"a" * BS                 # nothing written


def victim_fio(tgt, tmp_path, lun: int, name: str) -> tuple[int, list, list, str]:
    """A verified fio job (random 4k/64k writes, crc32c) on `lun`: (exit status, jobs, errors, output)."""
    job = write_fio_job(tmp_path / f"{name}.fio", tgt.url(lun), rw="randwrite", bssplit="4k/50:64k/50",
                        iodepth=8, size=FIO_SIZE, verify="crc32c", verify_fatal=1,
                        initiator=f"iqn.2026-11.org.ringtgt:{name}")
    report = tmp_path / f"{name}.json"
    with FioRun(job, tmp_path / f"{name}.out", "--output-format=json", f"--output={report}") as fio:
        status = fio.wait(timeout=600)
    text = report.read_text() if report.exists() else fio.text()
    jobs = json.loads(text[text.index("{"):])["jobs"]
    return status, jobs, [j["error"] for j in jobs], fio.text()


class ReadFlooder(threading.Thread):
    """A logged-in session that sends 128 KiB READs with consecutive CmdSNs as fast as the socket takes them
    and never reads; stops at `stop`, or when the worker's RSS passes the guard."""

    def __init__(self, ini: I.Initiator, worker: int, guard: int):
        super().__init__(daemon=True)
        self.ini, self.worker, self.guard = ini, worker, guard
        self.sent = 0                   # bytes the kernel took
        self.guard_hit = False
        self.stop = threading.Event()

    def _commands(self, count: int) -> bytes:
        ini = self.ini
        return b"".join(ini.command_pdu(I.cdb_read10(0, READ_BLOCKS), read_length=READ_BLOCKS * BS).encode()
                        for _ in range(count))

    def run(self) -> None:
        sock = self.ini.sock
        sock.setblocking(False)
        pending = memoryview(b"")
        while not self.stop.is_set():
            if procfs.rss_bytes(self.worker) > self.guard:
                self.guard_hit = True
                return
            if not pending:
                pending = memoryview(self._commands(512))
            try:
                n = sock.send(pending)
            except BlockingIOError:
                select.select([], [sock], [], 0.2)
                continue
            self.sent += n
            pending = pending[n:]

    @property
    def commands_sent(self) -> int:
        return self.sent // 48


def stalled(flooder: ReadFlooder, quiet: float = 2.0):
    """A poll predicate: true once the flooder's sent count has not moved for `quiet` seconds."""
    last = [-1, time.monotonic()]

    def check() -> bool:
        assert not flooder.guard_hit, f"worker RSS passed {flooder.guard >> 20} MiB"
        if flooder.sent != last[0]:
            last[:] = [flooder.sent, time.monotonic()]
        return time.monotonic() - last[1] >= quiet
    return check


def answers(ini: I.Initiator, quiet: float = 5.0) -> int:
    """Read the flooder's socket until it stays silent for `quiet` seconds: the READs answered."""
    sock = ini.sock
    sock.setblocking(True)
    sock.settimeout(quiet)
    count = 0
    try:
        while True:
            pdu = ini.recv_pdu()
            count += pdu.opcode == I.DATA_IN and bool(pdu.flags & 0x01) or pdu.opcode == I.SCSI_RESPONSE
    except TimeoutError:
        return count


def test_a_client_that_never_reads_is_not_read_and_holds_bounded_memory(ringtgt, tmp_path):
    tgt = ringtgt(workers=1, luns=[Lun(0), Lun(1)])
    worker = tgt.workers[0]
    baseline = procfs.rss_bytes(worker)
    with session(tgt, "iqn.2026-11.org.ringtgt:flooder") as ini:
        assert worker_of(tgt, ini.sock) == worker
        flooder = ReadFlooder(ini, worker, baseline + RSS_GUARD)
        flooder.start()
        try:
            poll(stalled(flooder), timeout=120, what="the worker to stop reading the flooder")
            stalled_at, rss_stalled = flooder.commands_sent, procfs.rss_bytes(worker)
            status, jobs, errors, output = victim_fio(tgt, tmp_path, 1, "victim")
            rss_after_fio = procfs.rss_bytes(worker)
            assert not flooder.guard_hit
            sent_after_fio = flooder.commands_sent
        finally:
            flooder.stop.set()
            flooder.join()
        answered = answers(ini)
    print(f"READ flooder: {stalled_at} commands taken by the kernel when the worker stopped reading, "
          f"{sent_after_fio} after the fio job, {answered} answered once it read; worker RSS "
          f"{baseline / MiB:.1f} MiB before, {rss_stalled / MiB:.1f} MiB stalled, {rss_after_fio / MiB:.1f} MiB "
          f"after fio; fio exit {status}, err={errors}, wrote {sum(j['write']['io_bytes'] for j in jobs)} bytes, "
          f"verified {sum(j['read']['io_bytes'] for j in jobs)}")
    assert status == 0 and errors == [0], output
    assert jobs[0]["write"]["io_bytes"] == FIO_SIZE and jobs[0]["read"]["io_bytes"] == FIO_SIZE
    assert sent_after_fio == stalled_at, "the worker read the flooder again while its output was not sent"
    assert 0 < answered < 1024, "the flooder's commands were not bounded by its frozen window"
    assert rss_stalled - baseline < RSS_ALLOWANCE and rss_after_fio - baseline < RSS_ALLOWANCE


class StingyWriter:
    """A session with a full window of WRITE(16)s of WRITE_SIZE that answers each R2T with all but the last byte
    of its burst: every byte the target solicits is held by it, none of its WRITEs can complete."""

    def __init__(self, ini: I.Initiator, worker: int, guard: int):
        self.ini, self.worker, self.guard = ini, worker, guard
        self.data = bytes(range(256)) * (WRITE_SIZE // 256)
        self.open: dict[int, tuple[int, int, int, int]] = {}   # ITT -> (TTT, offset, length, next DataSN)
        self.withheld = 0                                       # bytes sent into bursts left open

    def send_writes(self) -> None:
        ini = self.ini
        ini.nop_ping()                  # MaxCmdSN as of now: the window is all free
        assert (ini.max_cmd_sn - ini.cmd_sn + 1) & 0xFFFFFFFF >= STINGY_WRITES, "the window is smaller"
        blocks = WRITE_SIZE // BS
        ini.send_raw(b"".join(ini.command_pdu(I.cdb_write16(i % 8 * blocks, blocks), write_length=WRITE_SIZE)
                              .encode() for i in range(STINGY_WRITES)))

    def _send(self, itt: int, ttt: int, offset: int, end: int, data_sn: int, final: bool) -> int:
        """Data-Out PDUs of the target's MaxRecvDataSegmentLength for [offset, end); the next DataSN."""
        ini, step = self.ini, self.ini.target_mrdsl
        for start in range(offset, end, step):
            stop = min(start + step, end)
            ini.send_pdu(ini.data_out_pdu(itt, ttt, self.data[start:stop], offset=start, data_sn=data_sn,
                                          final=final and stop == end))
            data_sn += 1
        return data_sn

    def withhold(self) -> None:
        """Answer R2Ts with all but the last byte of their bursts until none came for R2T_QUIET seconds (after
        the first, which may take longer)."""
        sock = self.ini.sock
        sock.settimeout(60)
        while not self.open or select.select([sock], [], [], R2T_QUIET)[0]:
            r2t = self.ini.recv_pdu()
            assert r2t.opcode == I.R2T, r2t
            offset, length = struct.unpack_from(">II", r2t.bhs, 40)
            rss = procfs.rss_bytes(self.worker)
            assert rss < self.guard, f"worker RSS {rss / MiB:.0f} MiB after {self.withheld / MiB:.0f} MiB withheld"
            self.open[r2t.itt] = (r2t.ttt, offset, length, self._send(r2t.itt, r2t.ttt, offset,
                                                                        offset + length - 1, 0, False))
            self.withheld += length - 1

    def complete(self) -> list[int]:
        """Send the missing bytes, then answer every R2T in full: the status of every WRITE."""
        ini = self.ini
        for itt, (ttt, offset, length, data_sn) in self.open.items():
            self._send(itt, ttt, offset + length - 1, offset + length, data_sn, True)
        statuses = []
        while len(statuses) < STINGY_WRITES:
            pdu = ini.recv_pdu()
            if pdu.opcode == I.R2T:
                offset, length = struct.unpack_from(">II", pdu.bhs, 40)
                self._send(pdu.itt, pdu.ttt, offset, offset + length, 0, True)
            else:
                assert pdu.opcode == I.SCSI_RESPONSE, pdu
                statuses.append(pdu.bhs[3])
        return statuses


def test_writes_that_never_finish_their_bursts_hold_no_more_than_the_r2t_budget(ringtgt, tmp_path):
    tgt = ringtgt(workers=1, luns=[Lun(0), Lun(1)], server_extra="nop_interval = 0")
    worker = tgt.workers[0]
    baseline = procfs.rss_bytes(worker)
    with session(tgt, "iqn.2026-11.org.ringtgt:stingy-writer",
                 operational={"MaxBurstLength": "16776192", "InitialR2T": "Yes", "ImmediateData": "No"}) as ini:
        assert worker_of(tgt, ini.sock) == worker
        writer = StingyWriter(ini, worker, baseline + RSS_GUARD)
        writer.send_writes()
        writer.withhold()
        rss_held = procfs.rss_bytes(worker)
        status, jobs, errors, output = victim_fio(tgt, tmp_path, 1, "write-victim")
        rss_after_fio = procfs.rss_bytes(worker)
        statuses = writer.complete()
        data = ini.read(0, 2, block_size=BS).data + ini.read(WRITE_SIZE // BS * 8 - 2, 2, block_size=BS).data
    print(f"stingy writer: {STINGY_WRITES} WRITE(16)s of {WRITE_SIZE >> 20} MiB, {len(writer.open)} solicited, "
          f"{writer.withheld / MiB:.1f} MiB withheld; worker RSS {baseline / MiB:.1f} MiB before, "
          f"{rss_held / MiB:.1f} MiB held, {rss_after_fio / MiB:.1f} MiB after fio; fio exit {status}, "
          f"err={errors}, wrote {sum(j['write']['io_bytes'] for j in jobs)} bytes, verified "
          f"{sum(j['read']['io_bytes'] for j in jobs)}; then {statuses.count(0)} of {len(statuses)} WRITEs GOOD")
    assert status == 0 and errors == [0], output
    assert jobs[0]["write"]["io_bytes"] == FIO_SIZE and jobs[0]["read"]["io_bytes"] == FIO_SIZE
    assert 0 < len(writer.open) * WRITE_SIZE <= CONNECTION_WRITE_BUDGET, "solicited beyond the R2T budget"
    assert rss_held - baseline < RSS_ALLOWANCE and rss_after_fio - baseline < RSS_ALLOWANCE
    assert statuses == [0] * STINGY_WRITES
    assert data == writer.data[:2 * BS] + writer.data[-2 * BS:]
