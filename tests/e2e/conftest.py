"""Fixtures for the end-to-end tests: real `ringtgt serve` processes on free 127.0.0.1 ports.

    def test_x(ringtgt):
        tgt = ringtgt()                                   # 2 workers, LUN 0: 64 MiB, 512-byte blocks
        tgt4k = ringtgt(luns=[Lun(0, "64MiB", 4096), Lun(1, "16MiB")])

Teardown sends SIGTERM and fails the test unless the server exits 0 within 10 s with all its workers.
A failing test's report carries the stderr of every server still running.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the Python initiator

from harness import Lun, RingTgt  # noqa: E402


class _Launcher:
    """Starts servers under one directory; stops them all, collecting every stop failure."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.started: list[RingTgt] = []

    def __call__(self, *, luns=(Lun(),), workers: int = 2, **kwargs) -> RingTgt:
        target = RingTgt(self.directory / f"ringtgt{len(self.started)}", luns=luns, workers=workers, **kwargs)
        self.started.append(target)
        return target.start()

    def stop_all(self) -> None:
        errors = []
        for target in self.started:
            try:
                target.stop()
            except AssertionError as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("ringtgt did not stop cleanly:\n" + "\n\n".join(errors), pytrace=False)


@pytest.fixture
def ringtgt(tmp_path):
    """Factory: ringtgt(luns=[Lun(...)], workers=2) → a started RingTgt, stopped at teardown."""
    launcher = _Launcher(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def shared_ringtgt(tmp_path_factory):
    """One default server (LUN 0: 64 MiB, 512-byte blocks, 2 workers) for a whole test module."""
    launcher = _Launcher(tmp_path_factory.mktemp("shared"))
    yield launcher()
    launcher.stop_all()


@pytest.fixture
def lab_factory():
    """Factory of the two-node failover lab (cluster_lab.py): nodes a and b and a client in network namespaces;
    skips where namespaces cannot be made (not root)."""
    import netns
    from cluster_lab import new_lab
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    return new_lab


def pytest_collection_modifyitems(items):
    """Mark every test under tests/e2e `e2e` (pyproject.toml registers it), so `make unit` can leave them out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for target in RingTgt.running:
            report.sections.append((f"ringtgt {target.portal} stderr", target.stderr() or "(empty)"))
