"""Every command through ScsiTarget.execute, against an in-memory backstore double."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from target.scsi import sense as S
from target.scsi.lun import MAX_TRANSFER_BYTES, LogicalUnit
from target.scsi.task import CHECK_CONDITION, GOOD, ScsiTask
from tests.unit_coordinator import attached, coordinated_target

BS = 512
BLOCKS = 1024
NAA = "6001405aabbccddeeff0011223344556"
IQN = "iqn.2024-01.test:disk"


class MemoryStore:
    """Backstore test double: completions are queued and run by `drain()`, never synchronously."""

    max_atomic_bytes = 0

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


@pytest.fixture
def h():
    harness = Harness()
    harness.ready()
    return harness


# -- unit attention --------------------------------------------------------------------------------------
def test_power_on_ua_once_per_nexus():
    h = Harness()
    assert_sense(h.run(TUR), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(TUR))
    assert_sense(h.run(TUR, nexus="i2"), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(TUR, nexus="i2"))


def test_inquiry_and_report_luns_do_not_consume_ua():
    h = Harness()
    assert_good(h.run(bytes([0x12, 0, 0, 0, 36, 0])))
    assert_good(h.run(bytes([0xA0]) + bytes(5) + (64).to_bytes(4, "big") + bytes(2)))
    assert_sense(h.run(rw_cdb(0x28, 0, 1)), S.UNIT_ATTENTION, S.POWER_ON_RESET)


def test_request_sense_reports_and_clears_ua():
    h = Harness()
    task = h.run(bytes([0x03, 0, 0, 0, 18, 0]))
    assert_good(task)
    assert bytes(task.data_in) == S.build_sense(S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_good(h.run(TUR))
    task = h.run(bytes([0x03, 0, 0, 0, 252, 0]))
    assert bytes(task.data_in) == S.build_sense(S.NO_SENSE, S.NO_ADDITIONAL_SENSE)
    assert len(h.run(bytes([0x03, 0, 0, 0, 8, 0])).data_in) == 8
    assert_sense(h.run(bytes([0x03, 1, 0, 0, 18, 0])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(1, 0))


def test_ua_reported_before_invalid_opcode():
    h = Harness()
    assert_sense(h.run(bytes([0xC7]) + bytes(15)), S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert_sense(h.run(bytes([0xC7]) + bytes(15)), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)


def test_establish_ua_skips_the_originator():
    h = Harness()
    h.ready("a")
    h.ready("b")
    h.unit.establish_ua(S.MODE_PARAMETERS_CHANGED, except_nexus="a")
    assert_good(h.run(TUR, nexus="a"))
    assert_sense(h.run(TUR, nexus="b"), S.UNIT_ATTENTION, S.MODE_PARAMETERS_CHANGED)
    assert_good(h.run(TUR, nexus="b"))


# -- unknown LUN, REPORT LUNS ------------------------------------------------------------------------------
def test_unknown_lun(h):
    inq = h.run(bytes([0x12, 0, 0, 0, 96, 0]), lun=7)
    assert_good(inq)
    assert inq.data_in[0] == 0x7F
    assert_sense(h.run(TUR, lun=7), S.ILLEGAL_REQUEST, S.LOGICAL_UNIT_NOT_SUPPORTED)
    assert_sense(h.run(bytes([0x12, 1, 0x80, 0, 96, 0]), lun=7), S.ILLEGAL_REQUEST, S.LOGICAL_UNIT_NOT_SUPPORTED)
    sense = h.run(bytes([0x03, 0, 0, 0, 18, 0]), lun=7)
    assert_good(sense)
    assert bytes(sense.data_in) == S.build_sense(S.ILLEGAL_REQUEST, S.LOGICAL_UNIT_NOT_SUPPORTED)
    assert_good(h.run(bytes([0xA0]) + bytes(5) + (64).to_bytes(4, "big") + bytes(2), lun=7))


def test_report_luns():
    units = {lun: make_unit(lun) for lun in (300, 0, 5)}
    target = coordinated_target(units)
    done = []
    cdb = bytes([0xA0]) + bytes(5) + (1024).to_bytes(4, "big") + bytes(6)
    task = ScsiTask(9, cdb, "i", "iqn.i", 1024, True, False, None, done.append)
    target.execute(task)
    assert_good(task)
    assert task.data_in == struct.pack(">I4x", 24) + bytes.fromhex("0000000000000000" "0005000000000000"
                                                                    "412c000000000000")
    task = ScsiTask(0, cdb[:2] + b"\x01" + cdb[3:], "i", "iqn.i", 1024, True, False, None, done.append)
    target.execute(task)
    assert task.data_in == bytes(8)


# -- INQUIRY ---------------------------------------------------------------------------------------------------
def test_standard_inquiry(h):
    data = h.run(bytes([0x12, 0, 0, 0, 255, 0])).data_in
    assert data[0] == 0x00 and data[2] == 0x06 and data[3] == 0x12 and data[7] & 0x02
    assert data[4] == len(data) - 5
    assert data[8:16] == b"RINGTGT " and data[16:32] == b"ringtgt disk    " and data[32:36] == b"0001"
    assert h.run(bytes([0x12, 0, 0, 0, 5, 0])).data_in == data[:5]
    assert_sense(h.run(bytes([0x12, 0, 0x83, 0, 255, 0])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(2))


def vpd(h, page, alloc=1024):
    task = h.run(bytes([0x12, 1, page]) + alloc.to_bytes(2, "big") + b"\0")
    assert_good(task)
    data = task.data_in
    assert data[1] == page and int.from_bytes(data[2:4], "big") == len(data) - 4
    return data


def test_vpd_supported_and_serial(h):
    assert vpd(h, 0x00)[4:] == bytes([0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2])
    assert vpd(h, 0x80)[4:] == b"0123456789ABCDEF"
    assert_sense(h.run(bytes([0x12, 1, 0x99, 0, 255, 0])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)


def designators(page: bytes):
    out, offset = [], 4
    while offset < len(page):
        length = page[offset + 3]
        out.append((page[offset], page[offset + 1], page[offset + 4:offset + 4 + length]))
        offset += 4 + length
    assert offset == len(page)
    return out


def test_vpd_device_identification(h):
    found = designators(vpd(h, 0x83))
    assert found[0] == (0x01, 0x03, bytes.fromhex(NAA))
    assert found[1] == (0x02, 0x01, b"RINGTGT 0123456789ABCDEF")
    code_set, kind, name = found[2]
    assert (code_set, kind) == (0x53, 0x98)
    assert len(name) % 4 == 0 and name.rstrip(b"\0") == f"{IQN},t,0x0001".encode() and name.endswith(b"\0")
    assert found[3] == (0x51, 0x94, b"\0\0\0\x01")
    assert found[4] == (0x51, 0x95, b"\0\0\0\x01")


def test_vpd_8_byte_naa():
    unit = LogicalUnit(0, MemoryStore(), serial="S", naa="6001405aabbccdde", target_iqn=IQN, portal_group_tag=2,
                       relative_port=3)
    h = Harness()
    h.target = coordinated_target({0: unit})
    found = designators(vpd(h, 0x83))
    assert found[0][2] == bytes.fromhex("6001405aabbccdde") and found[4][2] == b"\0\0\0\x02"


def test_vpd_block_pages(h):
    limits = vpd(h, 0xB0)
    assert len(limits) == 64
    max_transfer, optimal = struct.unpack_from(">II", limits, 8)
    assert max_transfer * BS == 16 << 20 and optimal * BS == 1 << 20
    assert struct.unpack_from(">II", limits, 20) == (0, 0)           # no UNMAP
    characteristics = vpd(h, 0xB1)
    assert len(characteristics) == 64 and characteristics[4:6] == b"\0\x01"
    assert vpd(h, 0xB2) == bytes([0, 0xB2, 0, 4, 0, 0, 0, 0])


# -- READ CAPACITY -------------------------------------------------------------------------------------------
def test_read_capacity(h):
    assert h.run(bytes(10).replace(b"\0", b"\x25", 1)).data_in == struct.pack(">II", BLOCKS - 1, BS)
    data = h.run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)).data_in
    assert data == struct.pack(">QI", BLOCKS - 1, BS) + bytes(20)
    assert len(h.run(bytes([0x9E, 0x10]) + bytes(8) + (12).to_bytes(4, "big") + bytes(2)).data_in) == 12
    assert_sense(h.run(bytes([0x9E, 0x11]) + bytes(14)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)


def test_a_physical_block_of_several_logical_ones_is_reported():
    h = Harness(physical_block_size=8 * BS)
    h.ready()
    data = h.run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)).data_in
    assert data[13] & 0x0F == 3                                         # 2^3 logical blocks per physical
    assert struct.unpack_from(">H", vpd(h, 0xB0), 6) == (8,)            # OPTIMAL TRANSFER LENGTH GRANULARITY


def test_read_capacity10_saturates():
    h = Harness(store=MemoryStore(size=(2**32 + 10) * 4096, block_size=4096))
    h.ready()
    assert h.run(b"\x25" + bytes(9)).data_in == struct.pack(">II", 0xFFFFFFFF, 4096)
    data = h.run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)).data_in
    assert struct.unpack_from(">Q", data) == (2**32 + 9,)


# -- READ / WRITE --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("read_op, write_op", [(0x08, 0x0A), (0x28, 0x2A), (0xA8, 0xAA), (0x88, 0x8A)])
def test_round_trip(h, read_op, write_op):
    payload = bytes(range(256)) * (3 * BS // 256)
    assert_good(h.run(rw_cdb(write_op, 5, 3), data_out=payload))
    task = h.run(rw_cdb(read_op, 5, 3))
    assert_good(task)
    assert isinstance(task.data_in, memoryview) and task.data_in == payload
    assert h.store.calls[-1] == ("read", 5 * BS, 3 * BS)


def test_read6_zero_means_256_blocks(h):
    task = h.run(rw_cdb(0x08, 0, 0))
    assert len(task.data_in) == 256 * BS


@pytest.mark.parametrize("opcode", [0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A])
def test_zero_length_transfers_touch_nothing(h, opcode):
    task = h.run(rw_cdb(opcode, BLOCKS, 0), data_out=b"" if opcode & 2 else None)
    assert_good(task)
    assert task.data_in is None and h.store.calls == [] and task.transfer_length in (None, 0)


@pytest.mark.parametrize("opcode", [0x08, 0x28, 0xA8, 0x88, 0x0A, 0x2A, 0xAA, 0x8A])
@pytest.mark.parametrize("lba, count", [(BLOCKS - 1, 2), (BLOCKS, 1), (BLOCKS + 1, 1)])
def test_out_of_range(h, opcode, lba, count):
    data = bytes(count * BS) if opcode & 2 else None
    assert_sense(h.run(rw_cdb(opcode, lba, count), data_out=data), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert h.store.calls == []


def test_out_of_range_with_zero_blocks(h):
    assert_sense(h.run(rw_cdb(0x28, BLOCKS + 1, 0)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(h.run(rw_cdb(0x88, 2**64 - 1, 1)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)


def test_transfer_longer_than_block_limits():
    h = Harness(store=MemoryStore(blocks=40000))
    h.ready()
    assert_sense(h.run(rw_cdb(0x28, 0, 32769)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(7))


@pytest.mark.parametrize("opcode", [0x28, 0xA8, 0x88, 0x2A, 0xAA, 0x8A])
def test_protect_fields_refused(h, opcode):
    data = bytes(BS) if opcode & 2 else None
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x20), data_out=data), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 7))


def test_fua(h):
    h.run(rw_cdb(0x2A, 0, 1, flags=0x08), data_out=bytes(BS))
    h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS))
    assert [call[3] for call in h.store.calls] == [True, False]
    assert_good(h.run(rw_cdb(0x28, 0, 1, flags=0x08)))


def test_write_with_short_data_writes_only_whole_blocks_received(h):
    h.run(rw_cdb(0x2A, 0, 2), data_out=b"a" * 2 * BS)
    task = h.run(rw_cdb(0x2A, 0, 2), data_out=b"b" * BS)            # EDTL one block, CDB two
    assert_good(task)
    assert task.transfer_length == 2 * BS
    assert h.store.data[:2 * BS] == b"b" * BS + b"a" * BS
    task = h.run(rw_cdb(0x2A, 0, 1), data_out=b"c" * 200)           # EDTL 200: never GOOD for a part of a block
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert task.transfer_length == BS and h.store.data[:BS] == b"b" * BS
    task = h.run(rw_cdb(0x2A, 0, 2), data_out=b"c" * (BS + 1))      # a block and a byte: not even the block
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert h.store.data[:2 * BS] == b"b" * BS + b"a" * BS
    task = h.run(rw_cdb(0x2A, 0, 1), data_out=b"")                  # EDTL 0
    assert_good(task)
    assert task.transfer_length == BS and task.data_in is None


def test_write_with_long_data_writes_the_cdb_length(h):
    h.run(rw_cdb(0x2A, 0, 2), data_out=b"a" * 2 * BS)
    task = h.run(rw_cdb(0x2A, 0, 1), data_out=b"b" * 2 * BS)        # EDTL two blocks, CDB one
    assert_good(task)
    assert task.transfer_length == BS
    assert h.store.data[:2 * BS] == b"b" * BS + b"a" * BS


def test_read_only_lun():
    h = Harness(read_only=True)
    h.ready()
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
    assert_sense(h.run(rw_cdb(0x0A, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
    assert_good(h.run(rw_cdb(0x28, 0, 1)))
    header = h.run(bytes([0x1A, 0, 0x3F, 0, 255, 0])).data_in
    assert header[2] == 0x80 | 0x10


def test_backstore_errors_become_medium_errors(h):
    h.store.error = OSError(5, "EIO")
    assert_sense(h.run(rw_cdb(0x28, 0, 1)), S.MEDIUM_ERROR, S.UNRECOVERED_READ_ERROR)
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.MEDIUM_ERROR, S.WRITE_ERROR)
    assert_sense(h.run(rw_cdb(0x35, 0, 0)), S.MEDIUM_ERROR, S.WRITE_ERROR)


def test_completion_is_asynchronous(h):
    task = h.run(rw_cdb(0x28, 0, 1), drain=False)
    assert task.data_in is None and len(h.store.pending) == 1
    h.store.drain()
    assert len(task.data_in) == BS


def test_unexpected_exception_is_answered(h, caplog):
    def broken(*args):
        raise RuntimeError("boom")
    h.store.read = broken
    assert_sense(h.run(rw_cdb(0x28, 0, 1)), S.HARDWARE_ERROR, S.INTERNAL_TARGET_FAILURE)
    assert "boom" in caplog.text


# -- SYNCHRONIZE CACHE, VERIFY, START STOP, PREVENT ALLOW ------------------------------------------------------
@pytest.mark.parametrize("opcode", [0x35, 0x91])
def test_synchronize_cache(h, opcode):
    assert_good(h.run(rw_cdb(opcode, 0, 0)))
    assert h.store.calls == [("flush",)]
    assert_sense(h.run(rw_cdb(opcode, BLOCKS - 1, 2)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    task = h.run(rw_cdb(opcode, 0, 1, flags=0x02), drain=False)      # IMMED: status before the flush
    assert_good(task)
    assert len(h.store.pending) == 1
    h.store.error = OSError(5, "EIO")
    h.store.drain()


@pytest.mark.parametrize("opcode", [0x2F, 0xAF, 0x8F])
def test_verify_without_byte_check_only_checks_the_range(h, opcode):
    assert_good(h.run(rw_cdb(opcode, 0, 10)))
    assert_sense(h.run(rw_cdb(opcode, BLOCKS, 1)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x04)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 2))                                  # BYTCHK 10b is reserved
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x20)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 7))                                  # VRPROTECT: no protection information
    assert h.store.calls == []


@pytest.mark.parametrize("opcode", [0x2F, 0xAF, 0x8F])
def test_verify_compares_blocks_with_the_data_out(h, opcode):
    h.store.data[BS:3 * BS] = bytes(range(256)) * (2 * BS // 256)
    same = bytes(h.store.data[BS:3 * BS])
    task = h.run(rw_cdb(opcode, 1, 2, flags=0x02), data_out=same)
    assert_good(task)
    assert task.transfer_length == 2 * BS
    changed = bytearray(same)
    changed[BS + 7] ^= 0xFF
    task = h.run(rw_cdb(opcode, 1, 2, flags=0x02), data_out=bytes(changed))
    assert_sense(task, S.MISCOMPARE, S.MISCOMPARE_DURING_VERIFY)
    assert task.sense[0] & 0x80 and int.from_bytes(task.sense[3:7], "big") == BS + 7   # VALID, INFORMATION
    assert_sense(h.run(rw_cdb(opcode, 1, 2, flags=0x02), data_out=same[:BS]), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_COMMAND_IU)


@pytest.mark.parametrize("opcode", [0x2F, 0xAF, 0x8F])
def test_verify_one_block_against_every_block(h, opcode):
    h.store.data[0:3 * BS] = b"\xAB" * (3 * BS)
    task = h.run(rw_cdb(opcode, 0, 3, flags=0x06), data_out=b"\xAB" * BS)
    assert_good(task)
    assert task.transfer_length == BS
    h.store.data[2 * BS + 1] = 0
    task = h.run(rw_cdb(opcode, 0, 3, flags=0x06), data_out=b"\xAB" * BS)
    assert_sense(task, S.MISCOMPARE, S.MISCOMPARE_DURING_VERIFY)
    assert int.from_bytes(task.sense[3:7], "big") == 2 * BS + 1


def start_stop(loej, start, pc=0):
    return bytes([0x1B, 0, 0, 0, pc << 4 | loej << 1 | start, 0])


def prevent_allow(prevent):
    return bytes([0x1E, 0, 0, 0, prevent, 0])


def test_start_stop_and_prevent_allow_on_a_fixed_unit(h):
    assert h.run(bytes([0x12, 0, 0, 0, 36, 0])).data_in[1] & 0x80 == 0        # RMB clear
    assert_good(h.run(start_stop(0, 1)))
    assert_good(h.run(start_stop(0, 0)))
    assert_sense(h.run(start_stop(1, 0)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(4, 1))
    assert_good(h.run(prevent_allow(0)))
    assert_sense(h.run(prevent_allow(1)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)
    assert_good(h.run(TUR))


@pytest.fixture
def removable():
    harness = Harness(removable=True)
    harness.ready()
    harness.ready(nexus="i2")
    return harness


def test_removable_medium_ejected_and_loaded(removable):
    h = removable
    assert h.run(bytes([0x12, 0, 0, 0, 36, 0])).data_in[1] & 0x80 == 0x80     # RMB set
    assert_good(h.run(start_stop(0, 0)))                                   # STOP moves nothing
    assert_good(h.run(start_stop(1, 0, pc=3)))                             # a power condition neither
    assert_good(h.run(TUR))
    assert_good(h.run(start_stop(1, 0)))
    for cdb in (TUR, rw_cdb(0x28, 0, 1), rw_cdb(0x35, 0, 1), bytes([0x25]) + bytes(9)):
        assert_sense(h.run(cdb), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
    assert_sense(h.run(TUR, nexus="i2"), S.NOT_READY, S.MEDIUM_NOT_PRESENT)
    assert_good(h.run(bytes([0x12, 0, 0, 0, 36, 0])))                       # INQUIRY needs no medium
    assert_good(h.run(start_stop(1, 1), nexus="i2"))
    assert_good(h.run(TUR))
    assert h.store.calls == []


def test_prevent_binds_every_nexus_until_allowed_lost_or_reset(removable):
    h = removable
    assert_good(h.run(prevent_allow(1)))
    for nexus in ("i1", "i2"):
        assert_sense(h.run(start_stop(1, 0), nexus=nexus), S.ILLEGAL_REQUEST, S.MEDIUM_REMOVAL_PREVENTED)
        assert_sense(h.run(start_stop(1, 1), nexus=nexus), S.ILLEGAL_REQUEST, S.MEDIUM_REMOVAL_PREVENTED)
    assert_good(h.run(TUR))
    assert_good(h.run(prevent_allow(0), nexus="i2"))                       # only i1's own ALLOW ends i1's
    assert_sense(h.run(start_stop(1, 0)), S.ILLEGAL_REQUEST, S.MEDIUM_REMOVAL_PREVENTED)
    assert_good(h.run(prevent_allow(0)))
    assert_good(h.run(start_stop(1, 0)))
    assert_good(h.run(start_stop(1, 1)))
    assert_sense(h.run(prevent_allow(2)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(4, 1))

    assert_good(h.run(prevent_allow(1)))
    h.target.attach("i1", object())
    h.target.detach("i1", h.target.nexuses["i1"])                          # I_T nexus loss
    assert_good(h.run(start_stop(1, 0), nexus="i2"))
    assert_good(h.run(start_stop(1, 1), nexus="i2"))

    assert_good(h.run(prevent_allow(1), nexus="i2"))
    h.target.reset_lun(0, "i1", lambda: None)
    h.run(TUR, nexus="i2")                                                 # the reset's unit attention
    assert_good(h.run(start_stop(1, 0), nexus="i2"))


def test_no_medium_comes_before_write_protection():
    h = Harness(removable=True, read_only=True)
    h.ready()
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)
    assert_good(h.run(start_stop(1, 0)))
    assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)), S.NOT_READY, S.MEDIUM_NOT_PRESENT)


# -- common checks -----------------------------------------------------------------------------------------
def test_invalid_opcode(h):
    assert_sense(h.run(bytes([0x42]) + bytes(9)), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)
    assert_sense(raw(h, b""), S.ILLEGAL_REQUEST, S.INVALID_COMMAND_OPERATION_CODE)


def raw(h, cdb: bytes) -> ScsiTask:
    """A CDB exactly as given, not padded to 16 bytes."""
    done = []
    task = ScsiTask(0, cdb, "i1", "iqn.i", 0, False, False, None, done.append)
    h.target.execute(task)
    h.store.drain()
    assert done == [task]
    return task


def test_control_byte(h):
    assert_sense(h.run(bytes([0, 0, 0, 0, 0, 0x04])), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(5, 2))
    assert_sense(h.run(rw_cdb(0x28, 0, 1)[:9] + b"\x01"), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(9, 0))
    assert_good(h.run(bytes([0, 0, 0, 0, 0, 0xC0])))                  # vendor-specific bits are fine


def test_cdb_shorter_than_its_opcode_needs(h):
    assert_sense(raw(h, bytes([0x88]) + bytes(9)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)


def test_data_out_for_a_command_that_takes_none_is_ignored(h):
    # libiscsi's iSCSIResiduals.Read10Invalid: a READ flagged as a write on the iSCSI layer must succeed.
    assert_good(h.run(TUR, data_out=b"xxxx"))
    assert_good(h.run(TUR, data_out=b""))


# -- MODE SENSE / MODE SELECT ------------------------------------------------------------------------------
def mode_sense6(h, page=0x3F, pc=0, dbd=False, subpage=0, alloc=255, nexus="i1"):
    return h.run(bytes([0x1A, 0x08 if dbd else 0, pc << 6 | page, subpage, alloc, 0]), nexus=nexus)


def test_mode_sense6_all_pages(h):
    data = mode_sense6(h).data_in
    assert data[0] == len(data) - 1 and data[1] == 0 and data[2] == 0x10 and data[3] == 8
    assert data[4:12] == struct.pack(">I", BLOCKS) + b"\0" + BS.to_bytes(3, "big")
    pages = data[12:]
    assert [pages[0], pages[20], pages[32]] == [0x08, 0x0A, 0x1C]
    assert pages[1] == 0x12 and pages[2] & 0x04                        # WCE reflects write_cache=True
    assert len(pages) == 20 + 12 + 12


def test_mode_sense6_variants(h):
    caching = mode_sense6(h, page=0x08, dbd=True).data_in
    assert caching[3] == 0 and caching[4] == 0x08 and len(caching) == 4 + 20
    changeable = mode_sense6(h, page=0x08, pc=1, dbd=True).data_in
    assert changeable[4 + 2] == 0x04 and not any(changeable[4 + 3:])
    assert mode_sense6(h, subpage=0xFF).data_in == mode_sense6(h).data_in
    assert len(mode_sense6(h, alloc=4).data_in) == 4
    assert_sense(mode_sense6(h, pc=3), S.ILLEGAL_REQUEST, S.SAVING_PARAMETERS_NOT_SUPPORTED)
    assert_sense(mode_sense6(h, page=0x19), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 5))
    assert_sense(mode_sense6(h, subpage=1), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(3))
    h.store.write_cache = False
    assert not mode_sense6(h, page=0x08, dbd=True).data_in[6] & 0x04
    assert mode_sense6(h, page=0x08, pc=2, dbd=True).data_in[6] & 0x04  # default: as configured


def test_mode_sense10_long_lba(h):
    data = h.run(bytes([0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0])).data_in
    assert struct.unpack_from(">HBBBxH", data) == (len(data) - 2, 0, 0x10, 1, 16)
    assert data[8:24] == struct.pack(">Q4xI", BLOCKS, BS)
    assert data[24] == 0x08
    short = h.run(bytes([0x5A, 0x00, 0x08, 0, 0, 0, 0, 1, 0, 0])).data_in
    assert struct.unpack_from(">HBBBxH", short)[3:] == (0, 8)
    assert len(short) == 8 + 8 + 20


def caching_page(wce: bool, **changes) -> bytearray:
    page = bytearray(20)
    page[0], page[1], page[2] = 0x08, 0x12, 0x04 if wce else 0
    for offset, value in changes.items():
        page[int(offset[1:])] = value
    return page


def mode_select6(h, parameters: bytes, nexus="i1", length=None, flags=0x10):
    length = len(parameters) if length is None else length
    return h.run(bytes([0x15, flags, 0, 0, length, 0]), data_out=parameters, nexus=nexus)


def test_mode_select_toggles_wce_and_raises_ua_for_others(h):
    h.ready("i2")
    task = mode_select6(h, bytes(4) + caching_page(False))
    assert_good(task)
    assert task.transfer_length == 24
    assert h.store.write_cache is False
    assert not mode_sense6(h, page=0x08, dbd=True).data_in[6] & 0x04
    assert_sense(h.run(TUR, nexus="i2"), S.UNIT_ATTENTION, S.MODE_PARAMETERS_CHANGED)
    assert_good(h.run(TUR))
    assert_good(mode_select6(h, bytes(4) + caching_page(False)))       # no change: no new UA
    assert_good(h.run(TUR, nexus="i2"))


def test_mode_select10_with_block_descriptor(h):
    header = struct.pack(">HBBBxH", 0, 0, 0, 0, 8)
    descriptor = struct.pack(">IxBH", BLOCKS, 0, BS)
    parameters = header + descriptor + caching_page(False)
    task = h.run(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, len(parameters), 0]), data_out=parameters)
    assert_good(task)
    assert h.store.write_cache is False
    bad = header + struct.pack(">IxBH", BLOCKS, 0, 4096) + caching_page(True)
    task = h.run(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, len(bad), 0]), data_out=bad)
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_PARAMETER_LIST, S.Field(13, None, False))


def test_mode_select_rejects(h):
    def refused(parameters, asc_ascq, field=None, **kw):
        assert_sense(mode_select6(h, parameters, **kw), S.ILLEGAL_REQUEST, asc_ascq, field)
    invalid = S.INVALID_FIELD_IN_PARAMETER_LIST
    refused(bytes(4) + caching_page(False, b3=1), invalid, S.Field(7, None, False))
    refused(bytes(4) + caching_page(False, b1=0x11), invalid, S.Field(5, None, False))
    refused(bytes(4) + bytes([0x19, 2, 0, 0]), invalid, S.Field(4, 5, False))
    refused(bytes(4) + bytes([0x48, 2, 0, 0]), invalid, S.Field(4, 6, False))
    refused(bytes([0, 0, 0, 4]) + bytes(4), invalid, S.Field(3, None, False))
    refused(bytes(4) + caching_page(False)[:10], S.PARAMETER_LIST_LENGTH_ERROR)
    refused(bytes(3), S.PARAMETER_LIST_LENGTH_ERROR)
    refused(bytes(4) + caching_page(False), S.INVALID_FIELD_IN_COMMAND_IU, length=40)     # EDTL below it
    refused(bytes(4) + caching_page(False), S.INVALID_FIELD_IN_CDB, S.Field(1, 4), flags=0x00)
    refused(bytes(4) + caching_page(False), S.INVALID_FIELD_IN_CDB, S.Field(1, 0), flags=0x11)
    assert h.store.write_cache is True


def test_software_write_protect_refuses_writes_until_cleared(h):
    h.ready("i2")
    assert mode_sense6(h, page=0x0A, pc=1, dbd=True).data_in[4 + 4] == 0x08      # SWP is changeable
    control = bytearray(mode_sense6(h, page=0x0A, dbd=True).data_in[4:])
    control[4] |= 0x08
    assert_good(mode_select6(h, bytes(4) + control))
    sense = mode_sense6(h, page=0x0A, dbd=True).data_in
    assert sense[2] & 0x80 and sense[4 + 4] & 0x08                               # WP in the header, SWP set
    assert_sense(h.run(TUR, nexus="i2"), S.UNIT_ATTENTION, S.MODE_PARAMETERS_CHANGED)
    for nexus in ("i1", "i2"):
        assert_sense(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS), nexus=nexus), S.DATA_PROTECT,
                     S.WRITE_PROTECTED)
    assert_good(h.run(rw_cdb(0x28, 0, 1)))
    control[4] &= ~0x08
    assert_good(mode_select6(h, bytes(4) + control))
    assert not mode_sense6(h, page=0x0A, dbd=True).data_in[2] & 0x80
    assert_good(h.run(rw_cdb(0x2A, 0, 1), data_out=bytes(BS)))


def test_mode_select_of_unchanged_control_page_and_empty_list(h):
    control = mode_sense6(h, page=0x0A, dbd=True).data_in[4:]
    assert_good(mode_select6(h, bytes(4) + control))
    assert_good(mode_select6(h, b""))


# -- robustness --------------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=16), st.booleans(), st.binary(max_size=1100))
def test_any_cdb_finishes_once_without_internal_errors(cdb, write, data):
    h = Harness()
    task = h.run(cdb, data_out=data if write else None)
    assert task.status in (GOOD, CHECK_CONDITION)
    if task.status == CHECK_CONDITION:
        assert len(task.sense) == 18 and task.sense[2] != S.HARDWARE_ERROR


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=20))
def test_any_unpadded_cdb_is_answered(cdb):
    h = Harness()
    h.ready()
    task = raw(h, cdb)
    assert task.status in (GOOD, CHECK_CONDITION)
    assert task.sense is None or task.sense[2] != S.HARDWARE_ERROR


@pytest.mark.parametrize("opcode", [0x2E, 0xAE, 0x8E])
def test_write_and_verify_writes_through_and_compares_when_asked(h, opcode):
    data = bytes(range(256)) * (2 * BS // 256)
    assert_good(h.run(rw_cdb(opcode, 4, 2), data_out=data))
    assert h.store.calls == [("write", 4 * BS, 2 * BS, True)]           # through to the medium, no read back
    assert h.store.data[4 * BS:6 * BS] == data
    h.store.calls.clear()
    assert_good(h.run(rw_cdb(opcode, 4, 2, flags=0x02), data_out=data))
    assert h.store.calls == [("write", 4 * BS, 2 * BS, True), ("read", 4 * BS, 2 * BS)]
    assert_sense(h.run(rw_cdb(opcode, 0, 1, flags=0x04), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 2))
    assert_sense(h.run(rw_cdb(opcode, BLOCKS, 1), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    read_only = Harness(read_only=True)
    read_only.ready()
    assert_sense(read_only.run(rw_cdb(opcode, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)


@pytest.mark.parametrize("opcode", [0x34, 0x90])
def test_prefetch_checks_the_range(h, opcode):
    assert_good(h.run(rw_cdb(opcode, 0, BLOCKS)))
    assert_sense(h.run(rw_cdb(opcode, BLOCKS - 1, 2)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert h.store.calls == []


def test_read_defect_data_reports_empty_lists(h):
    data = h.run(bytes([0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 64, 0])).data_in
    assert data == bytes([0, 0x1D, 0, 0])                                # PLISTV, GLISTV, format 5, none
    data = h.run(bytes([0xB7, 0x08 | 0x04, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0])).data_in
    assert data == bytes([0, 0x0C]) + bytes(6)
    assert h.run(bytes([0x37, 0, 0x18, 0, 0, 0, 0, 0, 2, 0])).data_in == bytes([0, 0x18])   # allocation length


def rsoc(h, options=0, opcode=0, action=0, alloc=8192, rctd=False):
    cdb = struct.pack(">BBBBHIBB", 0xA3, 0x0C, options | (0x80 if rctd else 0), opcode, action, alloc, 0, 0)
    return h.run(cdb)


def test_report_supported_opcodes_lists_what_the_table_serves(h):
    data = rsoc(h).data_in
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    descriptors = {(d[0], int.from_bytes(d[2:4], "big")): (d[5], int.from_bytes(d[6:8], "big"))
                   for d in (data[i:i + 8] for i in range(4, len(data), 8))}
    assert descriptors[(0x28, 0)] == (0, 10) and descriptors[(0x8A, 0)] == (0, 16)
    assert descriptors[(0x5F, 7)] == (1, 10) and descriptors[(0x9E, 0x10)] == (1, 16)   # SERVACTV
    assert (0x48, 0) not in descriptors and (0x83, 0) in descriptors       # SANITIZE: not served
    timed = rsoc(h, rctd=True).data_in
    assert len(timed) - 4 == (len(data) - 4) // 8 * 20 and timed[4 + 5] == 0x02         # CTDP + descriptor


def test_report_supported_opcodes_one_command(h):
    read10 = rsoc(h, options=1, opcode=0x28).data_in
    assert read10[1] == 0x03 and int.from_bytes(read10[2:4], "big") == 10
    assert read10[4] == 0x28 and read10[5] & 0x18 == 0x18 and read10[13] == 0           # DPO, FUA; CONTROL
    assert rsoc(h, options=1, opcode=0x4D).data_in == bytes([0, 0x01, 0, 0])            # not supported
    prout = rsoc(h, options=2, opcode=0x5F, action=6).data_in
    assert prout[1] == 0x03 and prout[4:6] == bytes([0x5F, 0x1F])
    assert rsoc(h, options=2, opcode=0x5F, action=8).data_in[1] == 0x01
    assert rsoc(h, options=1, opcode=0x28, rctd=True).data_in[1] == 0x83
    assert_sense(rsoc(h, options=1, opcode=0x5F), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 2))
    assert_sense(rsoc(h, options=2, opcode=0x28), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 2))
    assert_sense(rsoc(h, options=5), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(2, 2))
    assert len(rsoc(h, alloc=6).data_in) == 6


def test_report_supported_task_management_functions(h):
    data = h.run(struct.pack(">BBxxIxB", 0xA3, 0x0D, 4, 0)).data_in
    assert data == bytes([0xDA, 0, 0, 0])
    assert_sense(h.run(struct.pack(">BBxxIxB", 0xA3, 0x1F, 4, 0)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(1, 4))


def caw_cdb(lba, count=1, flags=0):
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, count, 0, 0)


def test_compare_and_write_writes_only_on_a_match_under_the_range_lock(h):
    h.store.data[2 * BS:3 * BS] = b"\x01" * BS
    assert_good(h.run(caw_cdb(2), data_out=b"\x01" * BS + b"\x02" * BS))
    assert h.store.data[2 * BS:3 * BS] == b"\x02" * BS
    assert h.store.calls == [("lock", 2 * BS, BS), ("read", 2 * BS, BS), ("write", 2 * BS, BS, False),
                             ("unlock", 2 * BS, BS)]
    expected = bytearray(b"\x02" * BS)
    expected[100] = 9
    task = h.run(caw_cdb(2), data_out=bytes(expected) + b"\x03" * BS)
    assert_sense(task, S.MISCOMPARE, S.MISCOMPARE_DURING_VERIFY)
    assert int.from_bytes(task.sense[3:7], "big") == 100
    assert h.store.data[2 * BS:3 * BS] == b"\x02" * BS and h.store.calls[-1][0] == "unlock"
    assert_sense(h.run(caw_cdb(0, count=2), data_out=bytes(4 * BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB,
                 S.Field(13))
    assert_sense(h.run(caw_cdb(BLOCKS), data_out=bytes(2 * BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_sense(h.run(caw_cdb(0), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert_sense(h.run(caw_cdb(0), data_out=bytes(4 * BS)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)


def test_compare_and_writes_of_a_unit_run_one_at_a_time(h):
    first = h.run(caw_cdb(0), data_out=bytes(BS) + b"\x01" * BS, drain=False)
    second = h.run(caw_cdb(0), data_out=b"\x01" * BS + b"\x02" * BS, drain=False)
    assert [c[0] for c in h.store.calls] == ["lock", "read"]             # the second waits for the first
    h.store.drain()
    assert first.status == GOOD and second.status == GOOD
    assert h.store.data[:BS] == b"\x02" * BS


def test_orwrite_writes_the_or_of_blocks_and_data_under_the_range_lock(h):
    h.store.data[BS:3 * BS] = b"\xA0" * (2 * BS)
    assert_good(h.run(rw_cdb(0x8B, 1, 2, flags=0x08), data_out=b"\x05" * BS + b"\x0A" * BS))
    assert h.store.data[BS:3 * BS] == b"\xA5" * BS + b"\xAA" * BS
    assert h.store.calls == [("lock", BS, 2 * BS), ("read", BS, 2 * BS), ("write", BS, 2 * BS, True),
                             ("unlock", BS, 2 * BS)]
    assert_sense(h.run(rw_cdb(0x8B, 0, 1, flags=0x20), data_out=bytes(BS)), S.ILLEGAL_REQUEST,
                 S.INVALID_FIELD_IN_CDB, S.Field(1, 7))
    assert_sense(h.run(rw_cdb(0x8B, BLOCKS, 1), data_out=bytes(BS)), S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert_good(h.run(rw_cdb(0x8B, 0, 0), data_out=b""))


def test_orwrite_waits_for_a_compare_and_write_of_the_unit(h):
    first = h.run(caw_cdb(0), data_out=bytes(BS) + b"\x01" * BS, drain=False)
    second = h.run(rw_cdb(0x8B, 0, 1), data_out=b"\x02" * BS, drain=False)
    assert [c[0] for c in h.store.calls] == ["lock", "read"]
    h.store.drain()
    assert first.status == GOOD and second.status == GOOD
    assert h.store.data[:BS] == b"\x03" * BS


def test_orwrite_refused_on_a_read_only_lun():
    harness = Harness(read_only=True)
    harness.ready()
    assert_sense(harness.run(rw_cdb(0x8B, 0, 1), data_out=bytes(BS)), S.DATA_PROTECT, S.WRITE_PROTECTED)


def test_data_out_length_is_what_the_cdb_asks_for_within_the_largest_transfer(h):
    length = h.target.data_out_length
    assert length(0, rw_cdb(0x2A, 0, 3)) == 3 * BS and length(0, rw_cdb(0x0A, 0, 0)) == 256 * BS
    assert length(0, rw_cdb(0x28, 0, 3)) == 0                               # a READ carries none
    assert length(0, struct.pack(">BxIxHx", 0x2A, 0, 0xFFFF)) == min(0xFFFF * BS, MAX_TRANSFER_BYTES)
    assert length(0, struct.pack(">BB3xIx", 0x5F, 0, 0xFFFFFFFF)) == MAX_TRANSFER_BYTES   # PR OUT's 4-byte field
    assert length(0, bytes([0x15, 0x10, 0, 0, 28, 0])) == 28               # MODE SELECT(6)
    assert length(0, rw_cdb(0x2F, 0, 4, flags=0x06)) == BS and length(0, rw_cdb(0x2F, 0, 4)) == 0
    assert length(0, bytes([0x89]) + bytes(12) + bytes([2, 0])) == 4 * BS  # COMPARE AND WRITE: twice the blocks
    assert length(7, rw_cdb(0x2A, 0, 3)) == 0                              # no such LUN: nothing to hold


@pytest.mark.parametrize("cdb", [
    rw_cdb(0x0A, 0, 1), rw_cdb(0x2A, 0, 2), rw_cdb(0xAA, 0, 1), rw_cdb(0x8A, 0, 1),         # WRITE 6/10/12/16
    rw_cdb(0x2E, 0, 1), rw_cdb(0xAE, 0, 1), rw_cdb(0x8E, 0, 1), rw_cdb(0x8B, 0, 1),         # WRITE AND VERIFY, ORWRITE
    struct.pack(">BBIBHB", 0x41, 0, 0, 0, 1, 0),                                            # WRITE SAME(10)
    bytes([0x89, 0]) + bytes(11) + bytes([1, 0, 0]),                                        # COMPARE AND WRITE
    bytes([0x15, 0x10, 0, 0, 28, 0]), bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0]),         # MODE SELECT 6/10
    struct.pack(">BBB2xIB", 0x5F, 0, 0, 24, 0),                                             # PERSISTENT RESERVE OUT
    struct.pack(">BB8xI2x", 0x83, 0, 48),                                                   # EXTENDED COPY
    bytes([0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0]),                                            # SANITIZE OVERWRITE
], ids=lambda cdb: f"{cdb[0]:02x}")
def test_a_data_out_command_given_less_than_its_cdb_asks_for_is_refused_and_writes_nothing(h, cdb):
    wanted = h.target.data_out_length(0, cdb)
    task = h.run(cdb, data_out=bytes(wanted - 1))
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_COMMAND_IU)
    assert task.transfer_length == wanted                  # the transport reports the overflow residual
    assert not [call for call in h.store.calls if call[0] == "write"]
