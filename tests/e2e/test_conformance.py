"""libiscsi's whole conformance suite (iscsi-test-cu --test=ALL, destructive and sanitize tests allowed, a
second URL for the multipath tests) against a `workers = 2` ringtgt: zero failures.

The two initiator names and the two URLs' sessions land on either worker, so the state that spans I_T
nexuses (reservations, unit attentions, mode parameters) is checked across worker processes. The per-test
verdicts and the counts are printed; skips are reported, not failed (libiscsi skips what a target does not
claim to support)."""
from collections import Counter

import pytest
from harness import run, tool

import cunit


def test_iscsi_test_cu_all(ringtgt):
    target = ringtgt(workers=2)
    proc = run([tool("iscsi-test-cu"), "--dataloss", "--allow-sanitize", "--test=ALL",
                "--initiator-name=iqn.2026-11.org.ringtgt:cu-1", "--initiator-name-2=iqn.2026-11.org.ringtgt:cu-2",
                target.url(0), target.url(0)], timeout=1200, check=False, merge_stderr=False)
    report = cunit.parse(proc.stdout)  # CUnit's verdicts are on stdout; libiscsi's setup notes on stderr
    counts = Counter(t.verdict for t in report.tests)
    print(report.table())
    print(f"iscsi-test-cu --test=ALL: {len(report.tests)} tests, {counts['passed']} passed, "
          f"{counts['FAILED']} failed, {counts['SKIPPED']} skipped")
    details = (f"iscsi-test-cu exit {proc.returncode}; per-test verdicts:\n{report.table()}\n"
               f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    assert len(report.tests) > 200, f"the whole suite did not run\n{details}"
    assert report.summary and report.summary["ran"] == len(report.tests), f"summary mismatch\n{details}"
    if report.failed:
        pytest.fail("failed: " + ", ".join(t.full_name for t in report.failed) + "\n" + details, pytrace=False)
    assert report.summary["failed"] == 0 and proc.returncode == 0, details
