"""One SCSI command's life on a connection: collecting its Data-Out (immediate, unsolicited, solicited by R2T).

RFC 7143 §4.2.5, §11.7-8: unsolicited data (immediate data plus, if InitialR2T=No, Data-Out PDUs with the
reserved TTT) may cover up to FirstBurstLength; the rest comes in bursts of at most MaxBurstLength, each
solicited by an R2T, at most MaxOutstandingR2T at a time. DataSN restarts at 0 in every sequence.

Whatever the Expected Data Transfer Length claims, a command holds no more than the data-out its CDB asks for
(`wanted`, the SCSI target's answer) and no more than has arrived: R2Ts solicit up to `wanted` only, the buffer
grows as data comes, and unsolicited data beyond `wanted` is counted but dropped. How many commands may be
soliciting at once is the connection's R2T budget (write_budget.py): `charge` is what this one holds of it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..scsi.task import ScsiTask
from .errors import ProtocolError
from .pdu import BHS_LEN, CDB_OFFSET, FINAL, RESERVED_TAG, SCSI_READ, SCSI_WRITE, Buf, DataOut, ScsiCommand


class Burst:
    """One outstanding data sequence (unsolicited, or solicited by an R2T)."""

    __slots__ = ("offset", "length", "received", "next_data_sn", "r2t_sn")

    def __init__(self, offset: int, length: int, r2t_sn: int) -> None:
        self.offset = offset
        self.length = length
        self.received = 0
        self.next_data_sn = 0
        self.r2t_sn = r2t_sn


class Command(ScsiTask):
    """A SCSI command PDU plus the state needed to gather its write data; itself the task the SCSI layer runs (one
    object per command, not a Command and a ScsiTask beside it)."""

    __slots__ = ("itt", "lun_field", "wanted", "buffer", "next_r2t_offset", "bursts", "r2t_sn", "aborted", "running",
                 "corrupt", "charge", "arrived", "sent", "failed_sense", "allocate")
    sent: int       # set once answered (for the counters): its data bytes, data-in sent + data-out taken; -1: failed
    failed_sense: bytes | None      # set with sent = -1 only (read only then): the failed task's sense data

    def __init__(self, pdu: ScsiCommand, lun: int, nexus: str, initiator_name: str,
                 done: Callable[[ScsiTask], None], arrived: int = 0) -> None:
        flags = pdu.flags
        cdb = pdu.header[CDB_OFFSET:BHS_LEN] if not pdu.ahs else pdu.cdb   # (the property only where an AHS extends it)
        ScsiTask.__init__(self, lun, cdb, nexus, initiator_name, pdu.edtl, flags & SCSI_READ != 0,
                          flags & SCSI_WRITE != 0, None, done)
        self.itt = pdu.itt
        self.lun_field = pdu.lun_field
        self.wanted = 0                 # the data-out held and solicited: min(EDTL, what the CDB asks for)
        self.buffer: Buf | None = None  # a bytearray, or a pool's memoryview, while Data-Out may come (start_write)
        self.allocate: Callable[[int], memoryview] | None = None    # the pool's `get`, until the first Data-Out
        self.next_r2t_offset = 0
        self.bursts: dict[int, Burst] = {}     # TTT -> burst
        self.r2t_sn = 0
        self.aborted = False
        self.running = False            # handed to the SCSI layer (`execute`), not done yet
        self.corrupt = False            # some of its Data-Out failed the data digest: never executed
        self.charge = 0                 # bytes of the R2T budget it holds: `wanted`, from its first R2T on
        self.arrived = arrived          # monotonic ns of the received batch it came in (for the counters)

    @property
    def complete(self) -> bool:
        """No data sequence open and nothing left to solicit."""
        return not self.bursts and self.next_r2t_offset >= self.wanted

    def start_write(self, immediate_data: Buf, unsolicited_limit: int, more_unsolicited: bool,
                    cdb_length: int, allocate: Callable[[int], memoryview] | None = None) -> None:
        """Take the command PDU's immediate data (up to the `cdb_length` bytes of data-out the CDB asks for);
        open the unsolicited sequence if more may follow. With `allocate` (a buffer pool's `get`) the data is
        gathered in one buffer of `wanted` bytes from it, taken with the first Data-Out once the write holds its
        budget (`charge`): before, what arrived (immediate and unsolicited data, at most FirstBurstLength) is held
        as it came, so that a client cannot make us allocate whole transfers outside the write budget."""
        edtl = self.expected_length
        if len(immediate_data) > edtl:
            raise ProtocolError(f"immediate data ({len(immediate_data)} bytes) exceeds EDTL {edtl}")
        wanted = self.wanted = min(edtl, cdb_length)
        if len(immediate_data) >= wanted:
            # all of it came with the command: nothing will write into it (a bytearray's slice would be a copy)
            self.buffer = immediate_data if len(immediate_data) == wanted else immediate_data[:wanted]
        else:
            self.buffer = bytearray(immediate_data)
            self.allocate = allocate
        received = self.next_r2t_offset = len(immediate_data)
        if more_unsolicited and received < min(edtl, unsolicited_limit):
            burst = Burst(received, min(edtl, unsolicited_limit) - received, -1)
            self.bursts[RESERVED_TAG] = burst
            self.next_r2t_offset = burst.offset + burst.length

    @property
    def awaiting_unsolicited(self) -> bool:
        return RESERVED_TAG in self.bursts

    def take_data_out(self, pdu: DataOut) -> bool:
        """Store a Data-Out PDU; returns True when its sequence ended (F bit or burst filled)."""
        burst = self.bursts.get(pdu.ttt)
        if burst is None:
            raise ProtocolError(f"Data-Out for ITT 0x{self.itt:08x} with unknown TTT 0x{pdu.ttt:08x}")
        if pdu.data_sn != burst.next_data_sn:
            raise ProtocolError(f"Data-Out DataSN {pdu.data_sn}, expected {burst.next_data_sn}")
        offset = pdu.buffer_offset
        data = pdu.data
        if offset != burst.offset + burst.received or burst.received + len(data) > burst.length:
            raise ProtocolError(f"Data-Out offset {offset}+{len(data)} outside the burst "
                                f"{burst.offset}+{burst.length} (received {burst.received})")
        end = offset + len(data)
        buffer: Any = self.buffer       # a bytearray, then the pool's memoryview (mypyc checks a declared type)
        wanted = self.wanted
        if self.allocate is not None and self.charge:   # the first Data-Out within budget: one pool buffer
            whole = self.allocate(wanted)
            whole[:len(buffer)] = buffer
            self.buffer = buffer = whole    # as long as `wanted`: it never grows
            self.allocate = None
        if len(buffer) < offset < wanted:
            buffer += bytes(offset - len(buffer))      # a later burst before an earlier one: the gap waits for it
        if end <= wanted:
            buffer[offset:end] = data                   # in the usual in-order case, appends
        elif offset < wanted:
            buffer[offset:] = data[:wanted - offset]
        burst.received += len(data)
        burst.next_data_sn += 1
        if pdu.flags & FINAL or burst.received == burst.length:
            del self.bursts[pdu.ttt]
            if burst.received < burst.length and burst.r2t_sn < 0:
                self.next_r2t_offset = burst.offset + burst.received   # short unsolicited burst: solicit the rest
            elif burst.received < burst.length:
                raise ProtocolError("solicited burst ended before its desired length")
            return True
        return False

    def next_r2ts(self, max_outstanding: int, max_burst: int,
                  new_ttt: Callable[[], int]) -> list[tuple[int, int, int, int]]:
        """Open as many new R2T bursts as allowed: [(ttt, r2t_sn, offset, length)]."""
        if self.awaiting_unsolicited:
            return []
        out: list[tuple[int, int, int, int]] = []
        wanted = self.wanted
        while self.next_r2t_offset < wanted and len(self.bursts) < max_outstanding:
            offset = self.next_r2t_offset
            length = min(max_burst, wanted - offset)
            ttt = new_ttt()
            self.bursts[ttt] = Burst(offset, length, self.r2t_sn)
            out.append((ttt, self.r2t_sn, offset, length))
            self.r2t_sn += 1
            self.next_r2t_offset = offset + length
        return out
