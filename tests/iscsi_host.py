"""The host a sans-I/O Connection runs against in the iSCSI unit tests: the target's and initiator's names, a small
block device over a bytearray that answers at once (the real SCSI layer has its own tests), `connect` (a logged-in
connection), `exchange`, which feeds the connection bytes and splits what it sent back into PDUs, `sent` and CDBs."""
import struct

from target.iscsi import pdu as P
from target.iscsi.access import AccessPolicy, TargetAccess
from target.iscsi.connection import Connection
from target.iscsi.negotiation import parse_text
from target.iscsi.write_budget import WritePool
from target.scsi.task import CHECK_CONDITION, GOOD
from tests.iscsi_helpers import login_request, split

IQN = "iqn.2026-11.org.ringtgt:t"
INI = "iqn.2026-11.org.example:host"
BLOCK = 512


class BlockDevice:
    def __init__(self):
        self.disk = bytearray(BLOCK * 64)
        self.resets = []
        self.hold_resets = False
        self.held = []
        self.reads_in_flight = None     # a list: reads are kept there (as if the disk were slow), not answered
        self.reads_remote = False       # ... as if they waited on the coordinator instead
        self.writes_in_flight = None    # a list: writes are kept there (as if the disk were slow), not answered
        self.writes_remote = False      # ... as if they waited on the coordinator instead
        self.executed = []              # opcodes, in the order they reached the SCSI layer

    def has_lun(self, lun):
        return lun == 0

    def attach(self, nexus, session):
        pass

    def detach(self, nexus, session):
        pass

    def reset_lun(self, lun, nexus, done):
        self.resets.append(lun)
        if self.hold_resets:
            self.held.append(done)          # as when other workers still have to apply it
        else:
            done()

    def clear_task_set(self, lun, nexus, done):
        self.resets.append(("clear", lun))
        done()

    def reset_target(self, nexus, cold, done):
        self.resets.append("cold" if cold else "target")
        done()

    def data_out_length(self, lun, cdb):
        length = struct.unpack(">H", bytes(cdb[7:9]))[0]       # WRITE(10): blocks; SANITIZE: bytes
        return {0x2A: length * BLOCK, 0x48: length}.get(cdb[0], 0)

    def data_out_buffers(self, lun):
        return lambda length: memoryview(bytearray(length))   # a fixed buffer, as a unit's pool hands out

    def unit_wide(self, cdb):
        return cdb[0] == 0x48                                   # SANITIZE

    def execute(self, task):
        op = task.cdb[0]
        self.executed.append(op)
        if op == 0x00:
            task.finish(GOOD)
        elif op in (0x28, 0x2A):
            lba, count = struct.unpack(">IxH", bytes(task.cdb[2:9]))
            start, length = lba * BLOCK, count * BLOCK
            if op == 0x28 and self.reads_in_flight is not None:
                task.remote = self.reads_remote
                self.reads_in_flight.append(lambda: task.finish(GOOD, memoryview(self.disk)[start:start + length]))
            elif op == 0x28:
                task.finish(GOOD, memoryview(self.disk)[start:start + length])
            elif self.writes_in_flight is not None:
                task.remote = self.writes_remote
                self.writes_in_flight.append(lambda: self._write(task, start, length))
            else:
                self._write(task, start, length)
        else:
            task.finish(CHECK_CONDITION, None, b"\x70\0\x05" + bytes(15))

    def _write(self, task, start, length):
        task.transfer_length = length
        n = min(length, len(task.data_out))
        self.disk[start:start + n] = task.data_out[:n]
        task.finish(GOOD)


class Host:
    portal_group_tag = 1
    access = AccessPolicy(1, {IQN: TargetAccess()})
    offers = {"InitialR2T": False}

    def __init__(self, write_pool=None):
        self.device = BlockDevice()
        self.started = []
        self.write_pool = write_pool or WritePool()
        self.ready = 0

    def allocate_tsih(self):
        return 7

    def scsi_target(self, iqn):
        return self.device

    def session_started(self, conn):
        self.started.append(conn)

    def output_ready(self, conn):
        self.ready += 1

    def send_linked(self, conn, out):
        return None                     # no ring to link a send to a read (tests/test_iscsi_linked_send.py has one)


def exchange(conn, raw=b""):
    if raw:
        conn.receive_data(raw)
    out = b"".join(bytes(b) for b in conn.out)
    conn.out.clear()
    return split(out)


def connect(host=None, **keys):
    """A connection logged in to IQN (MaxRecvDataSegmentLength 1024, MaxBurstLength 2048 unless `keys` say
    otherwise); its next StatSN is 101."""
    conn = Connection(host or Host(), ("127.0.0.1", 3260), ("127.0.0.1", 5000))
    offered = {"InitiatorName": INI, "TargetName": IQN, "MaxRecvDataSegmentLength": "1024",
               "InitialR2T": "Yes", "MaxBurstLength": "2048", "FirstBurstLength": "1024"}
    offered.update(keys)
    conn.receive_data(login_request(list(offered.items()), exp_stat_sn=100))
    (pdu, data), = exchange(conn)
    assert pdu.opcode == P.LOGIN_RESPONSE and pdu.flags & 0x80 and pdu.login_status == 0, parse_text(data)
    return conn


def sent(conn):
    """What the host does: take the output, send it, report it sent."""
    out = split(b"".join(bytes(b) for b in conn.take_output()))
    conn.output_sent()
    return out


def read10(lba, blocks):
    return b"\x28\0" + struct.pack(">IxH", lba, blocks) + b"\0"


def write10(lba, blocks):
    return b"\x2a\0" + struct.pack(">IxH", lba, blocks) + b"\0"
