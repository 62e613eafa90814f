"""Blocking work kept off the coordinator's loop: `Aside(service).run(fn, then)` runs fn() in a thread of its own
and calls then(result, error) from the loop once fn is done (an eventfd the loop watches wakes it), so a slow
call (a Ceph cluster that takes seconds to answer, a file extended) never stops the loop turning: the other
requests go on, and the supervisor's watchdog (target/watchdog.py) sees it alive. fn must not touch the loop's
state; `then` may (it runs in the loop's thread)."""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .service import CoordinatorService

log = logging.getLogger("ringtgt.coordinator")

Then = Callable[[Any, BaseException | None], None]


class Aside:
    def __init__(self, service: CoordinatorService):
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._done: deque[tuple[Then, Any, BaseException | None]] = deque()
        service.watch(self._wakeup, self._drain)

    def run(self, fn: Callable[[], Any], then: Then) -> None:
        threading.Thread(target=self._call, args=(fn, then), name="coordinator-aside", daemon=True).start()

    def _call(self, fn: Callable[[], Any], then: Then) -> None:
        try:
            outcome: tuple[Then, Any, BaseException | None] = (then, fn(), None)
        except Exception as e:       # handed to `then`, in the loop
            outcome = (then, None, e)
        self._done.append(outcome)      # deque appends are atomic
        os.eventfd_write(self._wakeup, 1)

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._wakeup)
        except BlockingIOError:
            return
        while self._done:
            then, result, error = self._done.popleft()
            try:
                then(result, error)
            except Exception:
                log.exception("coordinator: the loop's half of work done aside failed")
