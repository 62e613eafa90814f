"""The SCSI unit-test harness: a ScsiTarget over LogicalUnits on an in-memory backstore double (MemoryStore), with
the in-process coordinator of tests/unit_coordinator.py; CDB builders and sense assertions the SCSI tests share."""
from __future__ import annotations

import struct

from target.scsi import sense as S
from target.scsi.lun import LogicalUnit
from target.scsi.task import CHECK_CONDITION, GOOD, ScsiTask
from tests.unit_coordinator import attached, coordinated_target

BS = 512
BLOCKS = 1024
NAA = "6001405aabbccddeeff0011223344556"
IQN = "iqn.2024-01.test:disk"


class MemoryStore:
    """Backstore test double: completions are queued and run by `drain()`, never synchronously."""

    max_atomic_bytes = 0
    sends_with_read = False

    def __init__(self, blocks=BLOCKS, block_size=BS, write_cache=True, size=None):
        self.block_size = block_size
        self.size = size if size is not None else blocks * block_size
        self.data = bytearray(blocks * block_size if size is None else 0)
        self.write_cache = write_cache
        self.pending = []
        self.calls = []
        self.error = None

    def read(self, offset, length, callback):
        self.calls.append(("read", offset, length))
        self.pending.append(lambda: callback(self.error or memoryview(bytes(self.data[offset:offset + length]))))

    def write(self, offset, data, fua, callback):
        self.calls.append(("write", offset, len(data), fua))

        def complete():
            if self.error is None:
                self.data[offset:offset + len(data)] = data
            callback(self.error)
        self.pending.append(complete)

    def flush(self, callback):
        self.calls.append(("flush",))
        self.pending.append(lambda: callback(self.error))

    def unmap(self, offset, length, callback):
        raise AssertionError("unmap not offered")

    def try_lock(self, offset, length):
        self.calls.append(("lock", offset, length))
        return True

    def unlock(self, offset, length):
        self.calls.append(("unlock", offset, length))

    def close(self):
        pass

    def drain(self):
        while self.pending:
            self.pending.pop(0)()


def make_unit(lun=0, store=None, read_only=False, removable=False, thin=False, physical_block_size=None):
    store = store or MemoryStore()
    return LogicalUnit(lun, store, serial="0123456789ABCDEF", naa=NAA, target_iqn=IQN, portal_group_tag=1,
                       relative_port=1, read_only=read_only, removable=removable, thin=thin,
                       physical_block_size=physical_block_size)


class Harness:
    def __init__(self, **kw):
        self.unit = make_unit(**kw)
        self.store = self.unit.backstore
        self.target = coordinated_target({0: self.unit})

    def run(self, cdb: bytes, *, lun=0, nexus="i1", data_out=None, edtl=None, drain=True) -> ScsiTask:
        done = []
        write = data_out is not None
        if edtl is None:
            edtl = len(data_out) if write else 4096
        task = ScsiTask(lun, cdb.ljust(16, b"\0"), nexus, "iqn.init", edtl, not write, write,
                        memoryview(data_out) if write else None, done.append)
        attached(self.target, nexus)
        self.target.execute(task)
        if drain:
            self.store.drain()
            assert done == [task], "finish() must be called exactly once"
        return task

    def ready(self, nexus="i1"):
        """Consume the power-on unit attention."""
        task = self.run(TUR, nexus=nexus)
        assert_sense(task, S.UNIT_ATTENTION, S.POWER_ON_RESET)


def assert_good(task):
    assert (task.status, task.sense) == (GOOD, None), task.sense and task.sense.hex()


def assert_sense(task, key, asc_ascq, field=None):
    assert task.status == CHECK_CONDITION
    assert task.sense[2] == key and task.sense[12] << 8 | task.sense[13] == asc_ascq, task.sense.hex()
    if field is not None:
        assert task.sense == S.build_sense(key, asc_ascq, field)


TUR = bytes(6)


def rw_cdb(opcode, lba, count, flags=0):
    if opcode in (0x08, 0x0A):
        return struct.pack(">BBHBB", opcode, lba >> 16, lba & 0xFFFF, count & 0xFF, 0)
    if opcode in (0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35):
        return struct.pack(">BBIBHB", opcode, flags, lba, 0, count, 0)
    if opcode in (0xA8, 0xAA, 0xAE, 0xAF):
        return struct.pack(">BBIIBB", opcode, flags, lba, count, 0, 0)
    return struct.pack(">BBQIBB", opcode, flags, lba, count, 0, 0)


def vpd(h, page, alloc=1024):
    task = h.run(bytes([0x12, 1, page]) + alloc.to_bytes(2, "big") + b"\0")
    assert_good(task)
    data = task.data_in
    assert data[1] == page and int.from_bytes(data[2:4], "big") == len(data) - 4
    return data


# -- reservations: two I_T nexuses, PERSISTENT RESERVE OUT CDB and parameter list ----------------------------------
A, B = "ia,i,0x1,t,t,0x1", "ib,i,0x2,t,t,0x1"
READ10 = rw_cdb(0x28, 0, 1)


def prout(action, pr_type=0, length=24):
    return struct.pack(">BBB2xIB", 0x5F, action, pr_type, length, 0)


def params(key=0, action_key=0, flags=0):
    return struct.pack(">QQ4xB3x", key, action_key, flags)
