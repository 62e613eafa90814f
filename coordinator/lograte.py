"""Rate-limited logging: an error a client or a failing disk can repeat is logged once per interval per key.

The first occurrence of a key is logged at once; later ones within `interval` seconds are counted and the
count is reported with the next line that gets through ("… (37 more like this in the last 10 s)"), so a
storm costs one line per interval instead of one per event.
"""
from __future__ import annotations

import logging
import time

DEFAULT_INTERVAL = 10.0
MAX_KEYS = 4096             # keys remembered at once; beyond that the oldest is forgotten


class RateLimitedLog:
    """`log(level, key, msg, *args)`: `msg % args` on `logger`, at most once per `interval` per `key`."""

    __slots__ = ("logger", "interval", "_last", "_suppressed", "_clock")

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}
        self._clock = clock

    def log(self, level: int, key, msg: str, *args, exc_info=None) -> bool:
        """Log unless `key` was logged less than `interval` seconds ago; True if this line went out."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= MAX_KEYS:
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        self._last.pop(key, None)
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        if more:
            msg += " (%d more like this in the last %g s)"
            args = (*args, more, self.interval)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key, msg: str, *args, exc_info=None) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)
