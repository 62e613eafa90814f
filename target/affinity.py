"""A worker's CPU pin, and the CPUs its helper threads get: the worker's own thread runs on its CPU, while the
threads a library starts for it (librados's messenger and completion threads, librbd's) run on every CPU the
process had before the pin, as the kernel schedules them: pinned with the worker, they would queue behind it on one
core (a 128k RBD read's reply is received, checksummed and copied there) while the other cores idle."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_unpinned: set[int] | None = None   # the CPUs before pin(): None in a process that never pinned itself


def pin(cpu: int) -> None:
    """Run the calling thread (a worker's, before it starts any other) on `cpu` only."""
    global _unpinned
    _unpinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})


@contextmanager
def unpinned() -> Iterator[None]:
    """Threads started inside (they inherit the calling thread's CPU set) run on the CPUs from before the pin."""
    if _unpinned is None:
        yield
        return
    pinned = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, _unpinned)
    except OSError:                 # none of those CPUs allowed any more (a cpuset changed): they stay pinned
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)
