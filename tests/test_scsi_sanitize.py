"""SANITIZE on a unit over an in-memory store: OVERWRITE (pattern, passes, INVERT), BLOCK ERASE, what the unit
answers while a sanitize runs and after one failed (EXIT FAILURE MODE, AUSE), and every refusal."""
import struct

import pytest

from coordinator.messages import MediumAnswer
from coordinator.service import Reply
from coordinator.unit_service import StoreBehind, StoreFailed, UnitAuthority, unsaved_sense
from coordinator.unit_state.medium import SANITIZE_STARTS
from target.scsi import sense as S
from tests.scsi_harness import BLOCKS, BS, TUR, Harness, MemoryStore, assert_good, assert_sense
from tests.unit_coordinator import coordinated_target

INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])
REQUEST_SENSE = bytes([0x03, 0, 0, 0, 18, 0])


def sanitize_cdb(action, length=0, immed=False, ause=False):
    return struct.pack(">BB5xHx", 0x48, action | (0x80 if immed else 0) | (0x20 if ause else 0), length)


def overwrite_parameters(pattern, count=1, invert=False):
    return struct.pack(">BxH", count | (0x80 if invert else 0), len(pattern)) + pattern


def overwrite(h, pattern, count=1, invert=False, immed=False, ause=False, drain=True):
    data = overwrite_parameters(pattern, count, invert)
    return h.run(sanitize_cdb(0x01, len(data), immed, ause), data_out=data, drain=drain)


class EncryptedStore(MemoryStore):
    """Stands for backstore.encrypted: a new key leaves every written block unreadable."""

    def rekey(self):
        self.calls.append(("rekey",))
        self.data[:] = bytes(b ^ 0x5A for b in self.data)

    def reload_key(self):
        self.calls.append(("reload_key",))


class ErasableStore(MemoryStore):
    def unmap(self, offset, length, callback):
        self.calls.append(("unmap", offset, length))
        self.write_zeroes(offset, length, callback)

    def write_zeroes(self, offset, length, callback):
        def complete():
            self.data[offset:offset + length] = bytes(length)
            callback(self.error)
        self.pending.append(complete)


@pytest.fixture
def h():
    harness = Harness()
    harness.ready()
    harness.store.data[:] = b"a" * len(harness.store.data)
    return harness


def test_overwrite_tiles_the_pattern_over_every_block_the_last_pass_not_inverted(h):
    assert_good(overwrite(h, b"\x12\x34\x56", count=2, invert=True))
    block = (b"\x12\x34\x56" * BS)[:BS]
    assert h.store.data == block * BLOCKS
    writes = [call for call in h.store.calls if call[0] == "write"]
    assert [call[1:3] for call in writes] == [(0, BLOCKS * BS)] * 2
    assert h.store.calls.count(("flush",)) == 2                                 # after each pass


def test_while_a_sanitize_runs_the_unit_answers_sanitize_in_progress(h):
    running = overwrite(h, b"\xaa", drain=False)
    assert running.status == 0 and running.sense is None and running.data_in is None  # not finished
    for cdb in (TUR, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), bytes([0x1B, 0, 0, 0, 0, 0])):
        assert_sense(h.run(cdb, drain=False), S.NOT_READY, S.SANITIZE_IN_PROGRESS)
    assert_good(h.run(INQUIRY, drain=False))
    sense = h.run(REQUEST_SENSE, drain=False).data_in
    assert sense[2] == S.NOT_READY and sense[12:14] == b"\x04\x1b"
    assert_sense(overwrite(h, b"\x55", drain=False), S.NOT_READY, S.SANITIZE_IN_PROGRESS)
    h.store.drain()
    assert_good(h.run(TUR))
    assert h.store.data == b"\xaa" * len(h.store.data)


def test_immediate_answers_before_the_sanitize_ends(h):
    task = overwrite(h, b"\x01\x02", immed=True, drain=False)
    assert_good(task)
    assert_sense(h.run(TUR, drain=False), S.NOT_READY, S.SANITIZE_IN_PROGRESS)
    h.store.drain()
    assert_good(h.run(TUR))


def test_crypto_erase_replaces_the_key_of_an_encrypted_unit_only():
    h = Harness(store=EncryptedStore())
    h.ready()
    h.store.data[:] = b"a" * len(h.store.data)
    assert_good(h.run(sanitize_cdb(0x03)))
    assert ("rekey",) in h.store.calls and b"a" not in h.store.data
    assert ("reload_key",) in h.store.calls                                     # as every worker does at the end
    assert_sense(h.run(sanitize_cdb(0x03, 8), data_out=bytes(8)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)
    assert service_actions(h, 0x48) == [0x01, 0x02, 0x03, 0x1F]
    assert characteristics(h)[7] == 0x50                                        # WABEREQ and WACEREQ 01b


def test_a_unit_in_the_clear_offers_no_crypto_erase(h):
    assert service_actions(h, 0x48) == [0x01, 0x02, 0x1F]
    assert characteristics(h)[7] == 0x40
    one = h.run(bytes([0xA3, 0x0C, 0x02, 0x48, 0, 0x03, 0, 0, 0x10, 0, 0, 0])).data_in
    assert one[1] & 0x07 == 0x01                                                # not supported


def service_actions(h, opcode):
    data = h.run(bytes([0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])).data_in
    descriptors = [data[4 + i:12 + i] for i in range(0, int.from_bytes(data[:4], "big"), 8)]
    return [int.from_bytes(d[2:4], "big") for d in descriptors if d[0] == opcode]


def characteristics(h):
    return h.run(bytes([0x12, 1, 0xB1, 0, 0xFF, 0])).data_in


@pytest.mark.parametrize("thin", [True, False])
def test_block_erase_deallocates_or_zeroes_every_block(thin):
    h = Harness(store=ErasableStore(), thin=thin)
    h.ready()
    h.store.data[:] = b"a" * len(h.store.data)
    assert_good(h.run(sanitize_cdb(0x02)))
    assert h.store.data == bytes(len(h.store.data))
    assert (("unmap", 0, BLOCKS * BS) in h.store.calls) == thin


def test_a_failed_sanitize_leaves_failure_mode_only_as_its_ause_allows(h):
    h.store.error = OSError(5, "I/O error")
    assert_sense(overwrite(h, b"\xaa"), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    h.store.error = None
    assert_sense(h.run(TUR), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    assert_sense(h.run(sanitize_cdb(0x1F)), S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)   # no AUSE: stays
    assert_good(overwrite(h, b"\xaa"))                                          # a sanitize that completes ends it
    assert_good(h.run(TUR))
    h.store.error = OSError(5, "I/O error")
    assert_sense(overwrite(h, b"\xaa", ause=True), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    assert_good(h.run(sanitize_cdb(0x1F)))
    h.store.error = None
    assert_good(h.run(TUR))


@pytest.mark.parametrize("hold", ["becoming_ready", "offline"])
def test_a_sanitize_whose_worker_must_not_touch_the_medium_submits_nothing_more_and_fails(h, hold):
    """Its worker fell behind a takeover's OSD map (target/osdmap_sync.py) or the unit went offline while a write of
    the sweep was in flight: that write completes, nothing after it is submitted (no flush, no second pass), and the
    sanitize ends failed; once the unit serves again it is in sanitize failure mode."""
    task = overwrite(h, b"\xaa", count=2, drain=False)
    assert [call[0] for call in h.store.calls] == ["write"] and len(h.store.pending) == 1
    if hold == "offline":
        h.unit.take_offline()
    else:
        h.unit.set_becoming_ready(True)
    h.store.drain()
    assert [call[0] for call in h.store.calls] == ["write"]                    # nothing after the one in flight
    assert_sense(task, S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    if hold == "becoming_ready":
        h.unit.set_becoming_ready(False)                                        # the map arrived
        assert_sense(h.run(TUR), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
        assert_good(overwrite(h, b"\x55"))                                     # sanitized again, whole
        assert h.store.data == b"\x55" * len(h.store.data)


@pytest.mark.parametrize("action", ["overwrite", "block erase"])
def test_a_sanitize_whose_worker_fell_behind_during_its_last_operation_fails(action):
    """The worker fell behind while the sweep's last operation ran (an OVERWRITE's final flush; a BLOCK ERASE's one
    unmap, minutes on a large RBD image): nothing was left to submit, yet the sanitize is not reported done."""
    h = Harness(store=ErasableStore(), thin=True)
    h.ready()
    if action == "overwrite":
        task = overwrite(h, b"\xaa", drain=False)
        while h.store.calls[-1][0] != "flush":
            h.store.pending.pop(0)()                                            # the pass's writes complete
    else:
        task = h.run(sanitize_cdb(0x02), drain=False)
        assert h.store.calls == [("unmap", 0, BLOCKS * BS)]
    assert len(h.store.pending) == 1
    h.unit.set_becoming_ready(True)
    h.store.drain()
    assert_sense(task, S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    h.unit.set_becoming_ready(False)                                            # the map arrived
    assert_sense(h.run(TUR), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)


def test_a_block_erase_begun_while_its_worker_must_not_touch_the_medium_erases_nothing():
    """The worker fell behind while the coordinator decided the SANITIZE's start."""
    h = Harness(store=ErasableStore(), thin=True)

    class BehindMeanwhile(UnitAuthority):
        def medium_request(self, message, origin):
            h.unit.set_becoming_ready(True)
            return super().medium_request(message, origin)
    h.target = coordinated_target({0: h.unit}, authority=BehindMeanwhile)
    h.ready()
    h.store.data[:] = b"a" * len(h.store.data)
    assert_sense(h.run(sanitize_cdb(0x02)), S.MEDIUM_ERROR, S.SANITIZE_COMMAND_FAILED)
    assert h.store.calls == [] and h.store.data == b"a" * len(h.store.data)


@pytest.mark.parametrize("cdb, data, field", [
    (sanitize_cdb(0x01, 4), b"\0" * 4, (7, None)),                                  # no room for a pattern
    (sanitize_cdb(0x01, BS + 5), b"\0" * (BS + 5), (7, None)),                      # longer than a block + 4
    (sanitize_cdb(0x01, 8), overwrite_parameters(b"abcd", count=0), None),          # OVERWRITE COUNT 0
    (sanitize_cdb(0x01, 8), struct.pack(">BxH", 1, 0) + b"abcd", None),             # pattern length 0
    (sanitize_cdb(0x01, 8), struct.pack(">BxH", 1, 5) + b"abcd", None),             # beyond the list
    (sanitize_cdb(0x02, 8), b"\0" * 8, (7, None)),                                  # BLOCK ERASE takes no list
    (sanitize_cdb(0x1F, 8), b"\0" * 8, (7, None)),
    (sanitize_cdb(0x03), None, (1, 4)),                                             # CRYPTO ERASE: not offered
    (sanitize_cdb(0x04), None, (1, 4)),
    (bytes([0x48, 0x41, 0, 0, 0, 0, 0, 0, 0, 0]), None, (1, 6)),                    # reserved bit
    (bytes([0x48, 0x02, 0, 0, 5, 0, 0, 0, 0, 0]), None, (4, None)),                 # reserved byte
])
def test_refusals(h, cdb, data, field):
    task = h.run(cdb, data_out=data)
    expected = S.build_sense(S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(*field)) if field else None
    assert_sense(task, S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB)
    if expected is not None:
        assert task.sense == expected
    assert h.store.data == b"a" * len(h.store.data)
    assert_good(h.run(TUR))


def test_a_write_protected_unit_is_not_sanitized():
    h = Harness(read_only=True)
    h.ready()
    assert_sense(overwrite(h, b"\xaa"), S.DATA_PROTECT, S.WRITE_PROTECTED)


def test_an_ejected_medium_is_not_sanitized():
    h = Harness(removable=True)
    h.ready()
    assert_good(h.run(bytes([0x1B, 0, 0, 0, 0x02, 0])))                        # eject
    assert_sense(h.run(sanitize_cdb(0x02)), S.NOT_READY, S.MEDIUM_NOT_PRESENT)


class _UnsavedStarts(UnitAuthority):
    """The coordinator of RBD LUNs whose sanitize record is not saved: every sanitize start refused with the sense of
    `RESULT` (unit_service.unsaved_sense), or failed (RESULT None: the handler raises, as one dropped unapplied)."""
    RESULT: StoreFailed | None = None

    def medium_request(self, message, origin):
        if message.action not in SANITIZE_STARTS:
            return super().medium_request(message, origin)
        if self.RESULT is None:
            raise RuntimeError("dropped unapplied")
        medium = self.unit(message.target, message.lun).medium
        return Reply(MediumAnswer(message.target, message.lun, medium.loaded, medium.sanitize,
                                  list(unsaved_sense(self.RESULT))))


@pytest.mark.parametrize("result", [StoreFailed("no answer from the Ceph cluster within 3 s"),
                                    StoreBehind("not at the takeover's OSD map yet"), None])
def test_a_sanitize_the_coordinator_does_not_begin_overwrites_nothing_and_leaves_the_unit_serving(result):
    """Refused (its record unsaved: the sense says why) or failed (HARDWARE ERROR): nothing is written, and the unit
    of this worker, which took the sanitize for begun as it asked, serves again."""
    authority = type("Unsaved", (_UnsavedStarts,), {"RESULT": result})
    h = Harness()
    h.target = coordinated_target({0: h.unit}, authority=authority)
    h.ready()
    h.store.data[:] = b"a" * len(h.store.data)
    task = overwrite(h, b"\xaa", immed=True)
    if result is None:
        assert_sense(task, S.HARDWARE_ERROR, S.INTERNAL_TARGET_FAILURE)
    else:
        assert_sense(task, *unsaved_sense(result))
    assert not [call for call in h.store.calls if call[0] == "write"]
    assert_good(h.run(TUR))
    assert h.store.data == b"a" * len(h.store.data)
