"""A read's Data-In sent linked to its disk read (Connection._send_with_read): which reads get it, what the send
carries, and the answers when the read is whole, fails, stops short, or is aborted meanwhile.

Sans-I/O, as tests/test_iscsi_connection.py: the host records the linked send instead of queuing it on a ring, and
the device below holds each read until the test completes it, as the disk would; the test then reports what the
ring would (`linked_send_completed`: the send went, then `output_sent`; or the kernel cancelled it).
tests/test_ioring.py runs the ring's linked read and send, tests/e2e/test_linked_reads.py the worker's.
"""
import struct
import time

from target.buffers import BufferPool
from target.iscsi import pdu as P
from target.iscsi.connection import LINK_PAUSE_NS, SLOW_LINKED_READ_NS
from target.scsi.task import CHECK_CONDITION, GOOD
from tests.iscsi_helpers import nop_out, scsi_command, split, task_management
from tests.iscsi_host import BLOCK, BlockDevice, Host, connect, exchange, read10, sent, write10

MEDIUM_ERROR_SENSE = b"\x70\0\x03\0\0\0\0\x0a\0\0\0\0\x11\0" + bytes(4)     # UNRECOVERED READ ERROR


class SlowDisk(BlockDevice):
    """Reads offered a linked send that take it wait in `reads` (task, buffer, offset) for the test; the others
    are answered at once."""

    def __init__(self):
        super().__init__()
        self.pool = BufferPool(aligned=False)
        self.reads = []

    def execute(self, task):
        if task.cdb[0] != 0x28 or task.send_with_read is None:
            super().execute(task)
            return
        lba, count = struct.unpack(">IxH", bytes(task.cdb[2:9]))
        view = self.pool.get(count * BLOCK)
        if task.send_with_read(task, view) is None:
            view[:] = self.disk[lba * BLOCK:(lba + count) * BLOCK]
            task.finish(GOOD, view)
        else:
            self.reads.append((task, view, lba * BLOCK))

    def read_whole(self):
        task, view, start = self.reads.pop(0)
        view[:] = self.disk[start:start + len(view)]
        task.finish(GOOD, view)


def send_went(conn):
    """What the worker does when the linked send completes whole."""
    conn.linked_send_completed(cancelled=False)
    return conn.output_sent()


class LinkingHost(Host):
    def __init__(self):
        super().__init__()
        self.device = SlowDisk()
        self.linked = []                # what each linked send carries (its header now, the data once read)

    def send_linked(self, conn, out):
        self.linked.append(out)
        return 7, out, 1000 + len(self.linked), 0


def linked_connection():
    conn = connect(LinkingHost())
    conn.host.device.disk[:1024] = bytes(range(256)) * 4
    return conn


def test_a_lone_read_is_answered_by_the_send_linked_to_its_disk_read():
    conn = linked_connection()
    assert exchange(conn, scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1)) == []
    conn.host.device.read_whole()
    assert not conn.out and conn.window.outstanding == 1        # answered by the send in flight, not sent yet
    (pdu, data), = split(bytes(conn.host.linked[0]))
    assert pdu.opcode == P.DATA_IN and pdu.flags & 0x81 == 0x81 and pdu.status == GOOD and pdu.itt == 5
    assert pdu.stat_sn == 101 and data == bytes(range(256)) * 4
    finished = send_went(conn)
    assert [c.itt for c in finished] == [5] and finished[0].sent == 1024
    assert conn.window.outstanding == 0 and not conn.commands and conn.unsent == 0
    (nop_in, _), = exchange(conn, nop_out(b"", itt=9, cmd_sn=2))
    assert nop_in.stat_sn == 102                                # StatSN goes on from the linked answer


def test_reads_that_cannot_leave_as_one_piece_or_alone_go_the_usual_way():
    conn = linked_connection()
    (pdu, _), = exchange(conn, scsi_command(read10(0, 1), edtl=1024, read=True, itt=5, cmd_sn=1))
    assert pdu.residual_count == 512                            # a residual: not one piece
    assert len(exchange(conn, scsi_command(read10(0, 4), edtl=2048, read=True, itt=6, cmd_sn=2))) == 2   # > MRDSL
    exchange(conn, scsi_command(write10(0, 1), edtl=512, write=True, itt=7, cmd_sn=3))   # waits for its data
    (pdu, _), = exchange(conn, scsi_command(read10(0, 1), edtl=512, read=True, itt=8, cmd_sn=4))
    assert pdu.opcode == P.DATA_IN and pdu.itt == 8            # another command outstanding: not linked
    assert conn.host.linked == [] and conn.linked is None


def test_a_failed_read_is_answered_first_with_the_stat_sn_of_its_cancelled_send():
    conn = linked_connection()
    exchange(conn, scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1))
    conn.receive_data(nop_out(b"", itt=9, cmd_sn=2))          # answered meanwhile: StatSN 102, queued
    task, _, _ = conn.host.device.reads.pop()
    task.finish(CHECK_CONDITION, None, MEDIUM_ERROR_SENSE)      # the read fails: the kernel cancels the send
    conn.linked_send_completed(cancelled=True)
    (response, sense), (nop_in, _) = sent(conn)
    assert response.opcode == P.SCSI_RESPONSE and response.status == CHECK_CONDITION and response.stat_sn == 101
    assert sense[2:] == MEDIUM_ERROR_SENSE and nop_in.opcode == P.NOP_IN and nop_in.stat_sn == 102
    assert conn.window.outstanding == 0 and not conn.commands and conn.unsent == 0 and not conn.owes_linked


def test_a_short_read_holds_the_output_until_it_is_answered_first():
    conn = linked_connection()
    exchange(conn, scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1))
    conn.linked_send_completed(cancelled=True)                  # the first op stopped short: more reads follow
    assert conn.owes_linked                                     # the worker sends nothing while this holds
    conn.receive_data(nop_out(b"", itt=9, cmd_sn=2))
    conn.host.device.read_whole()                               # the rest of the read is done
    assert not conn.owes_linked
    (data_in, data), (nop_in, _) = sent(conn)
    assert data_in.opcode == P.DATA_IN and data_in.stat_sn == 101 and data == bytes(range(256)) * 4
    assert nop_in.stat_sn == 102 and conn.window.outstanding == 0 and conn.unsent == 0


def test_a_read_aborted_while_its_send_waits_is_answered_before_the_abort():
    conn = linked_connection()
    exchange(conn, scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1))
    assert exchange(conn, task_management(1, itt=21, referenced_task_tag=5, cmd_sn=2)) == []   # waits for the read
    conn.host.device.read_whole()
    (pdu, _), = split(bytes(conn.host.linked[0]))
    assert pdu.itt == 5 and pdu.stat_sn == 101                  # the answer on its way when the abort came
    assert send_went(conn) == ()                                # not counted: the abort took the command
    (tmf, _), = sent(conn)
    assert tmf.opcode == P.TASK_MGMT_RESPONSE and tmf.itt == 21 and tmf.stat_sn == 102
    assert conn.window.outstanding == 0 and conn.unsent == 0


def test_a_read_completed_before_its_send_is_cancelled_is_answered_first():
    """The first op read nothing (the end of the file) and the rest was done at once, or the cancellation came
    late: the read is done, GOOD, before the kernel's cancellation of its send arrives."""
    conn = linked_connection()
    exchange(conn, scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1))
    conn.host.device.read_whole()
    conn.receive_data(nop_out(b"", itt=9, cmd_sn=2))
    conn.linked_send_completed(cancelled=True)
    (data_in, data), (nop_in, _) = sent(conn)
    assert data_in.opcode == P.DATA_IN and data_in.stat_sn == 101 and data == bytes(range(256)) * 4
    assert nop_in.stat_sn == 102 and conn.window.outstanding == 0 and conn.unsent == 0 and conn.linked is None


def test_no_read_is_linked_while_an_earlier_linked_read_is_unresolved():
    """A short linked read aborted before its rest is read: the next lone read waits its turn (not linked), and
    StatSN stays in order: the aborted read's answer, the TMF's, the next read's."""
    conn = linked_connection()
    device = conn.host.device
    exchange(conn, scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1))
    conn.linked_send_completed(cancelled=True)                  # stopped short
    conn.receive_data(task_management(1, itt=21, referenced_task_tag=5, cmd_sn=2))
    conn.receive_data(scsi_command(read10(2, 2), edtl=1024, read=True, itt=6, cmd_sn=2))
    assert len(conn.host.linked) == 1                           # the second read went the usual way
    device.read_whole()                                         # the aborted read's rest
    answers = sent(conn)
    assert [(p.opcode, p.itt, p.stat_sn) for p, _ in answers] == [
        (P.DATA_IN, 5, 101), (P.DATA_IN, 6, 102), (P.TASK_MGMT_RESPONSE, 21, 103)]
    assert conn.window.outstanding == 0 and conn.unsent == 0


def test_after_a_slow_linked_read_the_connection_links_none_for_a_while():
    """A linked read holds the connection's other output (a NOP-In too) until the disk is done: after one that took
    longer than SLOW_LINKED_READ_NS, reads go the usual way for LINK_PAUSE_NS."""
    conn = linked_connection()
    device = conn.host.device
    now = time.monotonic_ns()
    conn.receive_data(scsi_command(read10(0, 2), edtl=1024, read=True, itt=5, cmd_sn=1), now - SLOW_LINKED_READ_NS)
    device.read_whole()                                         # done more than SLOW_LINKED_READ_NS after it came
    send_went(conn)
    conn.receive_data(scsi_command(read10(0, 2), edtl=1024, read=True, itt=6, cmd_sn=2), time.monotonic_ns())
    (pdu, _), = sent(conn)
    assert pdu.itt == 6 and len(conn.host.linked) == 1           # answered the usual way
    later = time.monotonic_ns() + LINK_PAUSE_NS
    conn.receive_data(scsi_command(read10(0, 2), edtl=1024, read=True, itt=7, cmd_sn=3), later)
    assert len(conn.host.linked) == 2                           # linked again once the pause is over
