"""The supervisor's watchdog: a child whose loop stops turning for `hang_timeout` seconds (stopped, deadlocked,
stuck in a system call) is killed and restarted, so its sessions reconnect to the other workers and the
coordinator stops waiting for it.

Heartbeats cost no I/O and no message: the supervisor maps one shared anonymous page of counters before it
forks, each child bumps its own counter on every turn of its loop (`beat()`: a worker's loop turns at least
every 0.5 s, target/worker.py; the coordinator's too, coordinator/service.py), and the supervisor reads them
on its periodic sigtimedwait timeout. A counter that has not moved for hang_timeout seconds (counted from the
child's start until its first beat) is a hang. The supervisor kills with SIGKILL: a stopped process would not
act on SIGTERM.
"""
from __future__ import annotations

import mmap

COUNTER_BYTES = 8
MAX_CHECK_INTERVAL = 1.0        # seconds between two looks at the counters

_counters: memoryview | None = None     # in a child: the shared counters, and which one is its own
_slot = 0


def beat() -> None:
    """One turn of this process's loop (nothing in a process the supervisor did not fork, e.g. a test)."""
    if _counters is not None:
        _counters[_slot] += 1


class Watchdog:
    """The supervisor's side: one counter slot per supervised child."""

    def __init__(self, hang_timeout: float, slots: int):
        self.hang_timeout = hang_timeout
        self.interval = min(MAX_CHECK_INTERVAL, hang_timeout / 4)
        self._counters = memoryview(mmap.mmap(-1, COUNTER_BYTES * slots)).cast("Q")   # MAP_SHARED: seen by all
        self._seen = [0] * slots
        self._moved = [0.0] * slots
        self._at_start = [0] * slots

    def started(self, slot: int, now: float) -> None:
        """In the supervisor when the slot's child is (re)started or killed: its silence counts from now."""
        self._seen[slot] = self._at_start[slot] = self._counters[slot]
        self._moved[slot] = now

    def turned(self, slot: int) -> bool:
        """Whether the slot's child has turned its loop since its start (so it got through its set-up)."""
        return self._counters[slot] != self._at_start[slot]

    def enter(self, slot: int) -> None:
        """In the forked child: `beat()` bumps this slot from now on."""
        global _counters, _slot
        _counters, _slot = self._counters, slot

    def hung(self, slots: list[int], now: float) -> list[int]:
        """Those of the running children's `slots` silent for hang_timeout seconds."""
        silent = []
        for slot in slots:
            value = self._counters[slot]
            if value != self._seen[slot]:
                self._seen[slot], self._moved[slot] = value, now
            elif now - self._moved[slot] >= self.hang_timeout:
                silent.append(slot)
        return silent
