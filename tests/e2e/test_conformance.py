"""libiscsi's conformance suite (iscsi-test-cu) against ringtgt: every listed suite, zero failures."""
import pytest
from harness import run, tool

import cunit

SUITES = [
    "SCSI.Inquiry",
    "SCSI.ReadCapacity10",
    "SCSI.ReadCapacity16",
    "SCSI.Read10",
    "SCSI.Read16",
    "SCSI.Write10",
    "SCSI.Write16",
    "SCSI.TestUnitReady",
    "SCSI.ModeSense6",
    "iSCSI.iSCSIcmdsn",
    "iSCSI.iSCSIdatasn",
    "iSCSI.iSCSIResiduals",
    "iSCSI.iSCSITMF",
    "SCSI.PrinReadKeys",
    "SCSI.PrinServiceactionRange",
    "SCSI.PrinReportCapabilities",
    "SCSI.ProutRegister",
    "SCSI.ProutReserve",
    "SCSI.ProutClear",
    "SCSI.ProutPreempt",
    "SCSI.Reserve6",
]


@pytest.mark.parametrize("suite", SUITES)
def test_iscsi_test_cu_suite(shared_ringtgt, suite):
    proc = run([tool("iscsi-test-cu"), "--dataloss", f"--test={suite}",
                "--initiator-name=iqn.2026-11.org.ringtgt:cu-1", "--initiator-name-2=iqn.2026-11.org.ringtgt:cu-2",
                shared_ringtgt.url(0)], timeout=600, check=False, merge_stderr=False)
    report = cunit.parse(proc.stdout)  # CUnit's verdicts are on stdout; libiscsi's setup notes on stderr
    print(report.table())
    details = (f"iscsi-test-cu exit {proc.returncode}; per-test verdicts:\n{report.table()}\n"
               f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    assert report.tests, f"no test ran in {suite}\n{details}"
    assert all(t.suite == suite.split(".")[1] for t in report.tests), details
    assert report.summary and report.summary["ran"] == len(report.tests), f"summary mismatch\n{details}"
    if report.failed:
        pytest.fail("failed: " + ", ".join(t.full_name for t in report.failed) + "\n" + details, pytrace=False)
    assert report.summary["failed"] == 0 and proc.returncode == 0, details
