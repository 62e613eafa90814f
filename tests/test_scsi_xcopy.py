"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS on a unit over an in-memory store: parameter list decoding,
the copy itself (overlapping ranges included), held results, the limits and every refusal."""
import struct

import pytest

from coordinator.unit_state.medium import SANITIZING
from target.scsi import sense as S
from target.scsi import xcopy
from target.scsi.lun import LogicalUnit
from tests.scsi_harness import BLOCKS, BS, IQN, NAA, Harness, MemoryStore, assert_good, assert_sense
from tests.unit_coordinator import coordinated_target

OTHER_NAA = "6001405aabbccddeeff0011223344557"


def target_descriptor(naa=NAA, block_size=BS, kind=0xE4, device=0):
    designator = bytes.fromhex(naa)
    return struct.pack(">BBxxBBxB20sxBH", kind, device, 1, 0x03, len(designator), designator,
                       block_size >> 16, block_size & 0xFFFF)


def segment(blocks, source_lba, destination_lba, source=0, destination=0, kind=0x02):
    return struct.pack(">BBHHH2xHQQ", kind, 0, 0x18, source, destination, blocks, source_lba, destination_lba)


def parameters(targets, segments, list_id=1, usage=0):
    body_t, body_s = b"".join(targets), b"".join(segments)
    return struct.pack(">BBH4xII", list_id, usage << 3, len(body_t), len(body_s), 0) + body_t + body_s


def xcopy_cdb(length, action=0):
    return struct.pack(">BB8xI2x", 0x83, action, length)


def results_cdb(action, list_id=1, alloc=1024):
    return struct.pack(">BBB7xI2x", 0x84, action, list_id, alloc)


@pytest.fixture
def h():
    harness = Harness()
    harness.ready()
    return harness


def copy(h, data, **kw):
    return h.run(xcopy_cdb(len(data)), data_out=data, **kw)


def test_copy_within_the_unit_and_its_held_status(h):
    h.store.data[:8 * BS] = bytes(range(256)) * (8 * BS // 256)
    assert_good(copy(h, parameters([target_descriptor()], [segment(8, 0, BLOCKS - 8), segment(2, 0, 100)])))
    assert h.store.data[-8 * BS:] == h.store.data[:8 * BS] and h.store.data[100 * BS:102 * BS] == h.store.data[:2 * BS]
    status = h.run(results_cdb(xcopy.COPY_STATUS))
    assert_good(status)
    assert struct.unpack(">IBHBI", status.data_in) == (8, 0x00, 2, 0x00, 10 * BS)
    assert_sense(h.run(results_cdb(xcopy.COPY_STATUS, list_id=2)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)
    assert_good(copy(h, parameters([target_descriptor()], [segment(1, 0, 1)], list_id=3, usage=2)))
    assert_sense(h.run(results_cdb(xcopy.COPY_STATUS, list_id=3)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)
    assert_good(h.run(xcopy_cdb(0)))                                   # an empty parameter list: nothing to do


def test_an_overlapping_copy_reads_nothing_it_has_already_overwritten(h, monkeypatch):
    monkeypatch.setattr(xcopy, "COPY_CHUNK", 2 * BS)
    original = bytes((i // BS) % 251 for i in range(16 * BS))
    h.store.data[:16 * BS] = original
    assert_good(copy(h, parameters([target_descriptor()], [segment(16, 0, 4)])))
    assert h.store.data[4 * BS:20 * BS] == original


def test_operating_parameters_and_the_third_party_copy_page(h):
    data = h.run(results_cdb(xcopy.OPERATING_PARAMETERS)).data_in
    snlid, targets, segments, list_length = struct.unpack_from(">B3xHHI", data, 4)
    assert (snlid, targets, segments, list_length) == (1, xcopy.MAX_TARGET_DESCRIPTORS,
                                                       xcopy.MAX_SEGMENT_DESCRIPTORS, xcopy.MAX_DESCRIPTOR_LIST_LENGTH)
    assert data[43] == 2 and data[44:46] == bytes([0x02, 0xE4])
    page = h.run(bytes([0x12, 1, 0x8F, 0, 255, 0])).data_in
    assert page[1] == 0x8F and page[4:6] == b"\x00\x01"               # Supported Commands descriptor
    assert page[9:16] == bytes([0x83, 1, 0x00, 0x84, 2, 0x00, 0x03])
    assert 0x8F in h.run(bytes([0x12, 1, 0, 0, 255, 0])).data_in[4:]


@pytest.mark.parametrize("data, key, asc", [
    (parameters([target_descriptor()], [segment(1, 0, 1)])[:40], S.ILLEGAL_REQUEST, S.PARAMETER_LIST_LENGTH_ERROR),
    (b"\1" * 8, S.ILLEGAL_REQUEST, S.PARAMETER_LIST_LENGTH_ERROR),
    (parameters([target_descriptor()] * 3, [segment(1, 0, 1)]), S.ILLEGAL_REQUEST, S.TOO_MANY_TARGET_DESCRIPTORS),
    (parameters([target_descriptor()], [segment(1, 0, 1)] * 17), S.ILLEGAL_REQUEST, S.TOO_MANY_SEGMENT_DESCRIPTORS),
    (parameters([target_descriptor()] * 2, [segment(1, 0, 1)] * 35), S.ILLEGAL_REQUEST,
     S.PARAMETER_LIST_LENGTH_ERROR),                                   # beyond the maximum descriptor list length
    (parameters([target_descriptor(kind=0xE0)], [segment(1, 0, 1)]), S.ILLEGAL_REQUEST,
     S.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE),
    (parameters([target_descriptor()], [segment(1, 0, 1, kind=0x01)]), S.ILLEGAL_REQUEST,
     S.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE),
    (parameters([target_descriptor(naa="6" + "0" * 31)], [segment(1, 0, 1)]), S.COPY_ABORTED,
     S.COPY_TARGET_DEVICE_NOT_REACHABLE),
    (parameters([target_descriptor()], [segment(1, 0, 1, destination=1)]), S.COPY_ABORTED,
     S.COPY_TARGET_DEVICE_NOT_REACHABLE),
    (parameters([target_descriptor()], [segment(2, 0, BLOCKS - 1)]), S.COPY_ABORTED, S.NO_ADDITIONAL_SENSE),
    (parameters([target_descriptor(block_size=4096)], [segment(1, 0, 1)]), S.ILLEGAL_REQUEST,
     S.INVALID_FIELD_IN_PARAMETER_LIST),
    (parameters([target_descriptor(device=5)], [segment(1, 0, 1)]), S.ILLEGAL_REQUEST,
     S.INVALID_FIELD_IN_PARAMETER_LIST),
])
def test_refusals(h, data, key, asc):
    assert_sense(copy(h, data), key, asc)
    assert not any(call[0] == "write" for call in h.store.calls)


def test_lid4_and_other_actions_are_refused(h):
    assert_sense(h.run(xcopy_cdb(0, action=0x01)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(1, 4))
    assert_sense(h.run(results_cdb(0x01)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(1, 4))


def test_a_read_only_destination_is_refused():
    h = Harness(read_only=True)
    h.ready()
    assert_sense(copy(h, parameters([target_descriptor()], [segment(1, 0, 1)])), S.DATA_PROTECT, S.WRITE_PROTECTED)


def test_a_unit_being_sanitized_is_neither_read_nor_written(h):
    other = LogicalUnit(1, MemoryStore(), serial="OTHER", naa=OTHER_NAA, target_iqn=IQN, portal_group_tag=1,
                        relative_port=1)
    h.target = coordinated_target({0: h.unit, 1: other})
    h.ready()                                           # a new target: its coordinator greets i1 anew
    other.set_medium(True, SANITIZING)                  # as another worker's SANITIZE leaves it
    descriptors = [target_descriptor(), target_descriptor(naa=OTHER_NAA)]
    for source, destination in ((0, 1), (1, 0)):
        task = copy(h, parameters(descriptors, [segment(1, 0, 1, source=source, destination=destination)]))
        assert_sense(task, S.NOT_READY, S.SANITIZE_IN_PROGRESS)
    assert not any(call[0] in ("read", "write") for call in h.store.calls + other.backstore.calls)


@pytest.mark.parametrize("errno_, asc", [(28, S.SPACE_ALLOCATION_FAILED_WRITE_PROTECT), (5, S.UNRECOVERED_READ_ERROR)])
def test_a_backstore_error_aborts_the_copy_with_its_cause_and_is_logged(h, caplog, errno_, asc):
    h.store.error = OSError(errno_, f"read /images/lun0 at offset 0: error {errno_}")
    assert_sense(copy(h, parameters([target_descriptor()], [segment(1, 0, 1)])), S.COPY_ABORTED, asc)
    assert f"(errno {errno_}): answered sense A/{asc >> 8:02X}/{asc & 0xFF:02X}" in caplog.text
