"""Running libiscsi's iscsi-test-cu against a ringtgt URL (tests/e2e/test_conformance.py, test_rbd.py): every
test but one in a run, the one alone right after (ALONE: see test_conformance.py's docstring for why), each run
failing the calling test on any failed test and printing the per-test verdicts."""
from collections import Counter

import pytest
from harness import run, tool

import cunit

INITIATORS = ["--initiator-name=iqn.2026-11.org.ringtgt:cu-1", "--initiator-name-2=iqn.2026-11.org.ringtgt:cu-2"]
ALONE = "ALL.Sanitize.Reset"


def run_suite(tests: str, url: str) -> cunit.Report:
    """iscsi-test-cu on `tests` (comma-separated) with `url` twice; fails the test on any failed test."""
    proc = run([tool("iscsi-test-cu"), "--dataloss", "--allow-sanitize", f"--test={tests}", *INITIATORS, url, url],
               timeout=1200, check=False, merge_stderr=False)
    report = cunit.parse(proc.stdout)  # CUnit's verdicts are on stdout; libiscsi's setup notes on stderr
    counts = Counter(t.verdict for t in report.tests)
    print(report.table())
    print(f"iscsi-test-cu --test={tests}: {len(report.tests)} tests, {counts['passed']} passed, "
          f"{counts['FAILED']} failed, {counts['SKIPPED']} skipped")
    details = (f"iscsi-test-cu exit {proc.returncode}; per-test verdicts:\n{report.table()}\n"
               f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    assert report.tests and report.summary and report.summary["ran"] == len(report.tests), \
        f"summary mismatch\n{details}"
    if report.failed:
        pytest.fail("failed: " + ", ".join(t.full_name for t in report.failed) + "\n" + details, pytrace=False)
    assert report.summary["failed"] == 0 and proc.returncode == 0, details
    return report


def every_test_but(alone: str, path) -> tuple[str, int]:
    """A test-list file for iscsi-test-cu naming every test of ALL but `alone` (whole suites where it can, so
    their tests share sessions as under --test=ALL); and how many tests ALL has."""
    names = run([tool("iscsi-test-cu"), "--list"]).stdout.split()
    tests = [name for name in names if name.startswith("ALL.") and name.count(".") == 2]
    suite_of_alone = alone.rsplit(".", 1)[0]
    lines = [name for name in names if name.startswith("ALL.") and name.count(".") == 1 and name != suite_of_alone]
    lines += [name for name in tests if name.startswith(suite_of_alone + ".") and name != alone]
    path.write_text("\n".join(lines) + "\n")
    return str(path), len(tests)
