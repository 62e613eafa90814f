"""Parse the console output of libiscsi's iscsi-test-cu (CUnit basic interface, verbose mode).

CUnit prints `  Test: NAME ...` without a newline, then the verdict `passed` or `FAILED` (followed by one
numbered line per failed assertion).  libiscsi's own log lines may come in between: `[SKIPPED] …` (the test
then still ends `passed`: it is a skip), `[FAILED] …` / `[WARNING] …` (informational — only CUnit's bare
verdict word counts).  The run ends with a `Run Summary` table whose `tests` row we cross-check.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PASSED, FAILED, SKIPPED = "passed", "FAILED", "SKIPPED"

_SUITE = re.compile(r"^\s*Suite: (?P<suite>\S+)")
_TEST = re.compile(r"^\s*Test: (?P<name>.+?) \.\.\.(?P<rest>.*)$")
_VERDICT = re.compile(r"^\s*(?P<verdict>passed|FAILED)\b")
_SUMMARY_TESTS = re.compile(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+|n/a)\s+(\d+)\s+(\d+)\s*$")


@dataclass
class TestResult:
    suite: str
    name: str
    verdict: str = ""                       # passed / FAILED / SKIPPED; "" if the output ended mid-test
    messages: list[str] = field(default_factory=list)  # libiscsi log lines and failed assertions

    @property
    def full_name(self) -> str:
        return f"{self.suite}.{self.name}"


@dataclass
class Report:
    tests: list[TestResult]
    summary: dict[str, int] | None          # CUnit's `tests` row: total, ran, passed, failed, inactive

    def count(self, verdict: str) -> int:
        return sum(t.verdict == verdict for t in self.tests)

    @property
    def failed(self) -> list[TestResult]:
        return [t for t in self.tests if t.verdict != PASSED and t.verdict != SKIPPED]

    def table(self) -> str:
        width = max((len(t.full_name) for t in self.tests), default=10)
        lines = [f"{t.full_name:<{width}}  {t.verdict or 'NO VERDICT'}" for t in self.tests]
        lines.append(f"{self.count(PASSED)} passed, {len(self.failed)} failed, {self.count(SKIPPED)} skipped")
        return "\n".join(lines)


def parse(output: str) -> Report:
    tests: list[TestResult] = []
    suite, current, summary = "", None, None
    for line in output.splitlines():
        if current is not None and not current.verdict:
            _feed(current, line)
            continue
        if current is not None and current.verdict == FAILED and re.match(r"^\s+\d+\. ", line):
            current.messages.append(line.strip())  # numbered failed assertions after FAILED
            continue
        if m := _SUITE.match(line):
            suite = m["suite"]
        elif m := _TEST.match(line):
            current = TestResult(suite, m["name"])
            tests.append(current)
            _feed(current, m["rest"])
        elif m := _SUMMARY_TESTS.match(line):
            total, ran, passed, failed, inactive = m.groups()
            summary = {"total": int(total), "ran": int(ran), "passed": 0 if passed == "n/a" else int(passed),
                       "failed": int(failed), "inactive": int(inactive)}
    return Report(tests, summary)


def _feed(test: TestResult, text: str) -> None:
    """One more piece of a test's output before its verdict."""
    if m := _VERDICT.match(text):
        skipped = any("[SKIPPED]" in msg for msg in test.messages)
        test.verdict = SKIPPED if m["verdict"] == PASSED and skipped else m["verdict"]
    elif text.strip():
        test.messages.append(text.strip())
