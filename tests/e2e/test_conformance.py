"""libiscsi's whole conformance suite (iscsi-test-cu --test=ALL, destructive and sanitize tests allowed, a
second URL for the multipath tests) against a `workers = 2` ringtgt: zero failures; then the suites that need
a LUN configured `readonly = true` or `removable = true`, or with more than one logical block per physical block,
against such LUNs.

The two initiator names and the two URLs' sessions land on either worker, so the state that spans I_T
nexuses (reservations, unit attentions, mode parameters, medium removal) is checked across worker processes.
The per-test verdicts and the counts are printed; skips are reported, not failed (libiscsi skips what a target
does not claim to support).

Sanitize.Reset runs in an iscsi-test-cu run of its own, right after the others: with two URLs, libiscsi 1.19's
Sanitize.Reservations, just before it in the Sanitize suite, leaves its RESERVE(6) held by the second path's
session (mpath_sd2_put keeps multipath sessions until the suite ends), so Sanitize.Reset's own SANITIZE and TEST
UNIT READY from the first path meet RESERVATION CONFLICT on any target that implements RESERVE."""
from collections import Counter

from conformance import ALONE, every_test_but, run_suite
from harness import Lun

READ_ONLY_SUITES = "ALL.ReadOnly"
# The unit of the ALL run is encrypted at rest, so that SANITIZE CRYPTO ERASE is served (and every other test runs
# through the encryption). Sanitize.Reset checks that a SANITIZE still runs after resets, a logout and a new
# login, seconds after it began, as on a real disk; a 64 MiB file is overwritten far sooner, so the unit's sanitize
# rate paces it (8 s at least).
ALL_RUN_LUN = 'encryption_key = "lun0.key"\nsanitize_rate = "8MiB"'
REMOVABLE_SUITES = "ALL.StartStopUnit,ALL.PreventAllow,ALL.NoMedia"
GEOMETRY_TESTS = ",".join(f"ALL.{name}" for name in (
    "CompareAndWrite.InvalidDataOutSize", "WriteSame10.InvalidDataOutSize", "WriteSame10.UnmapUnaligned",
    "WriteSame16.InvalidDataOutSize", "WriteSame16.UnmapUnaligned"))


def test_iscsi_test_cu_all(ringtgt, tmp_path):
    url = ringtgt(workers=2, luns=[Lun(0, extra=ALL_RUN_LUN)]).url(0)
    test_list, total = every_test_but(ALONE, tmp_path / "tests.txt")
    reports = [run_suite(test_list, url), run_suite(ALONE, url)]
    verdicts = Counter(t.verdict for report in reports for t in report.tests)
    print(f"ALL, in two runs: {sum(verdicts.values())} tests, {verdicts['passed']} passed, {verdicts['FAILED']} "
          f"failed, {verdicts['SKIPPED']} skipped")
    assert sum(verdicts.values()) == total > 200, "the whole suite did not run"


def test_luns_configured_for_the_suites_that_need_them(ringtgt):
    """ReadOnly against a `readonly` LUN; the removable-media suites against a `removable` one; and against a LUN
    of 512-byte blocks in 4096-byte physical blocks, the tests that need more than one logical block per physical
    block. (ALL runs on one logical block per physical block: with more, libiscsi's GetLBAStatus.UnmapSingle
    expects a first descriptor that does not cover the LBA asked for.)"""
    target = ringtgt(workers=2, luns=[Lun(0, extra="readonly = true"), Lun(1, extra="removable = true"),
                                      Lun(2, extra="physical_block_size = 4096")])
    for tests, lun, expected in ((READ_ONLY_SUITES, 0, 1), (REMOVABLE_SUITES, 1, 12), (GEOMETRY_TESTS, 2, 5)):
        report = run_suite(tests, target.url(lun))
        verdicts = Counter(t.verdict for t in report.tests)
        assert verdicts["passed"] == len(report.tests) == expected, report.table()
