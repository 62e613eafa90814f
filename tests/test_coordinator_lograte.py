"""RateLimitedLog: one line per key per interval, the suppressed count reported with the next one."""
import logging

from coordinator.lograte import RateLimitedLog


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_one_line_per_key_per_interval_then_the_count(caplog):
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("t.lograte"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.lograte"):
        assert limited.warning("emfile", "accept failed: %s", "EMFILE")
        for _ in range(500):
            assert not limited.warning("emfile", "accept failed: %s", "EMFILE")
        assert limited.warning("other", "another key is not held back")
        clock.now += 10
        assert limited.warning("emfile", "accept failed: %s", "EMFILE")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["accept failed: EMFILE", "another key is not held back",
                     "accept failed: EMFILE (500 more like this in the last 10 s)"]


def test_keys_are_bounded():
    limited = RateLimitedLog(logging.getLogger("t.lograte.bounded"), interval=10, clock=Clock())
    for key in range(10_000):
        limited.warning(key, "x")
    assert len(limited._last) <= 4096
