"""tests/e2e/cunit.py on output captured from iscsi-test-cu 1.19 (Debian 12) against tgtd."""
from cunit import FAILED, PASSED, SKIPPED, parse

INQUIRY_WITH_SKIP = """\


     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: Inquiry
  Test: Standard ...passed
  Test: AllocLength ...passed
  Test: EVPD ...passed
  Test: BlockLimits ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
  Test: MandatoryVPDSBC ...passed
  Test: SupportedVPD ...passed
  Test: VersionDescriptors ...passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      1      1    n/a      0        0
               tests      7      7      7      0        0
             asserts    278    278    278      0      n/a

Elapsed time =    0.004 seconds
Tests completed with return value: 0
"""

DATASN_FAILED = """\
     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...FAILED
    1. test_iscsi_datasn_invalid.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)
    2. test_iscsi_datasn_invalid.c:116  - CU_ASSERT_NOT_EQUAL(ret,0)

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      1      1    n/a      0        0
               tests      1      1      0      1        0
             asserts      4      4      0      4      n/a

Elapsed time =    0.000 seconds
Tests completed with return value: 0
"""

# libiscsi logs "[FAILED]" for errors a test provoked on purpose; only CUnit's bare verdict counts.
EXPECTED_ERROR_LOG_THEN_PASS = """\
Suite: Read10
  Test: BeyondEol ...    [FAILED] READ10 command failed with sense. ILLEGAL_REQUEST(0x05)/LBA_OUT_OF_RANGE(0x2100)
    [OK] READ10 returned ILLEGAL_REQUEST/LBA_OUT_OF_RANGE.
passed
  Test: Simple ...    [WARNING] something informational
FAILED
    1. test_read10_simple.c:40  - CU_FAIL
"""

# The setup failed before CUnit ran anything (e.g. no such LUN): no tests at all.
ABORTED = """\
    [SKIPPED] READCAPACITY10 is not implemented.
READCAPACITY10 command: failed with sense. (null)
"""


def test_skip_before_pass_is_a_skip():
    report = parse(INQUIRY_WITH_SKIP)
    assert [t.full_name for t in report.tests][:4] == [
        "Inquiry.Standard", "Inquiry.AllocLength", "Inquiry.EVPD", "Inquiry.BlockLimits"]
    verdicts = {t.name: t.verdict for t in report.tests}
    assert verdicts["BlockLimits"] == SKIPPED
    assert report.count(PASSED) == 6 and report.count(SKIPPED) == 1 and not report.failed
    assert report.summary == {"total": 7, "ran": 7, "passed": 7, "failed": 0, "inactive": 0}
    assert "6 passed, 0 failed, 1 skipped" in report.table()


def test_failed_with_assertion_lines():
    report = parse(DATASN_FAILED)
    [test] = report.tests
    assert test.verdict == FAILED and report.failed == [test]
    assert test.messages == ["1. test_iscsi_datasn_invalid.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)",
                             "2. test_iscsi_datasn_invalid.c:116  - CU_ASSERT_NOT_EQUAL(ret,0)"]
    assert report.summary["failed"] == 1


def test_libiscsi_failed_log_lines_are_not_verdicts():
    report = parse(EXPECTED_ERROR_LOG_THEN_PASS)
    beyond, simple = report.tests
    assert beyond.verdict == PASSED
    assert beyond.messages[0].startswith("[FAILED] READ10")
    assert simple.verdict == FAILED
    assert simple.messages == ["[WARNING] something informational", "1. test_read10_simple.c:40  - CU_FAIL"]


def test_output_ending_mid_test_has_no_verdict_and_counts_as_failed():
    report = parse("Suite: Write10\n  Test: Simple ...    [OK] half way\n")
    [test] = report.tests
    assert test.verdict == "" and report.failed == [test]
    assert "NO VERDICT" in report.table()


def test_aborted_run_has_no_tests_and_no_summary():
    report = parse(ABORTED)
    assert report.tests == [] and report.summary is None
