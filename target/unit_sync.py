"""A worker's half of the units' shared state — reservations, unit attentions, mode, medium (the coordinator's
half: coordinator/unit_service.py): applies the coordinator's pushes to this worker's targets.

    ReservationChange  a reservation change made through another worker (view, attentions, aborts)
    UnitReset          a LUN or target reset issued through another worker
    ClearTaskSet       CLEAR TASK SET issued through another worker
    ModeChange         MODE SELECT through another worker changed WCE or SWP
    MediumChange       a removable medium loaded or ejected, or a sanitize begun or ended, through another worker
    LunResized         `ringtgt resize` grew a unit: its new size, and CAPACITY DATA HAS CHANGED for its nexuses
Each is acked once applied and the tasks it aborted here have stopped, so the issuing worker's answer means
every worker has it. After every (re)connection to a coordinator the worker fetches every unit's state
(FetchUnitStates).

The first answer gates the worker's service: a reservation, a sanitize failure or a removed medium kept by the
coordinator (from RADOS, a planned restart's snapshot, its live file) must be in force before any command of this
worker is served, so the worker accepts connections only once `ready` (`on_ready()` runs once, when the first
states are applied). Past a request's deadline (the client's REQUEST_TIMEOUT) the worker logs that once and asks
again, RETRY_SECONDS later and on every reconnection, never serving meanwhile: the other workers (which have their
states) serve the connections the kernel gives them (SO_REUSEPORT still gives this one its share, which waits in its
listener's backlog: a listener opened later would make a start's first connections refused instead), the
supervisor's watchdog restarts a hung coordinator (hang_timeout), and a worker exiting instead would only come
back to the same wait. Later (re)connections refresh the states while the worker serves on: every change was
applied through the coordinator that last answered, so what the worker holds is the state it left, and any
change not yet everywhere has not yet been answered to its initiator.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from coordinator.client import REQUEST_TIMEOUT
from coordinator.messages import (ClearTaskSet, FetchUnitStates, LunResized, MediumChange, ModeChange,
                                  ReservationChange, UnitReset, UnitStates)

log = logging.getLogger(f"ringtgt.{__name__}")

START_DEADLINE = REQUEST_TIMEOUT    # from the worker's start to the first states applied, before that is logged
RETRY_SECONDS = 1.0         # after a failed FetchUnitStates (past its deadline, or refused), before asking again


class UnitSync:
    """Routes the coordinator's unit state pushes to the worker's ScsiTargets."""

    def __init__(self, coordinator, targets: dict, on_ready: Callable[[], None] = lambda: None,
                 call_later: Callable[[float, Callable[[], None]], object] | None = None):
        """`on_ready()`: once, when the first states are applied; `call_later`: for the retries (None: asking
        again on the next reconnection only)."""
        self.coordinator = coordinator
        self.targets = targets              # iqn -> ScsiTarget
        self.ready = False                  # the first states are applied: the worker may serve
        self._on_ready = on_ready
        self._call_later = call_later
        self._since = time.monotonic()
        self._waiting_logged = False
        if call_later is not None:
            call_later(START_DEADLINE, lambda: self._overdue(f"no answer within {START_DEADLINE:g} s"))
        coordinator.subscribe(ReservationChange, self._change)
        coordinator.subscribe(UnitReset, self._reset)
        coordinator.subscribe(ClearTaskSet, self._clear)
        coordinator.subscribe(ModeChange, self._applying("apply_mode"))
        coordinator.subscribe(MediumChange, self._applying("apply_medium"))
        coordinator.subscribe(LunResized, self._applying("apply_resize"))
        coordinator.on_connect(self._refresh)

    def _change(self, change: ReservationChange, ack) -> None:
        target = self.targets.get(change.target)
        if target is not None:
            unit = target.luns.get(change.lun)
            if unit is not None:
                unit.reservations.apply(change, ack)
                return
        ack()

    def _reset(self, reset: UnitReset, ack) -> None:
        target = self.targets.get(reset.target)
        if target is None:
            ack()
        else:
            target.apply_reset(reset, ack)

    def _clear(self, clear: ClearTaskSet, ack) -> None:
        target = self.targets.get(clear.target)
        if target is None:
            ack()
        else:
            target.apply_clear(clear, ack)

    def _applying(self, method: str):
        """A push handler calling the named ScsiTarget method with the message, for pushes that abort nothing."""
        def apply(message, ack) -> None:
            target = self.targets.get(message.target)
            if target is not None:
                getattr(target, method)(message)
            ack()
        return apply

    def _refresh(self) -> None:
        self.coordinator.request(FetchUnitStates(), self._states, self._failed, late=self._states)

    def _failed(self, failure) -> None:
        """No states (the client logged why). Serving already: go on with what the worker has, the next push or
        reconnection brings them. Not yet: log once that the worker waits, and ask again."""
        if self.ready:
            return
        self._overdue(failure.reason)
        if self._call_later is not None:
            self._call_later(RETRY_SECONDS, self._retry)

    def _overdue(self, why: str) -> None:
        if not self.ready and not self._waiting_logged:
            self._waiting_logged = True
            log.error("no unit states from the coordinator %.1f s after the start (%s): accepting no connection "
                      "until they arrive; asking again", time.monotonic() - self._since, why)

    def _retry(self) -> None:
        if not self.ready:
            self._refresh()

    def _states(self, states: UnitStates) -> None:
        """The states (also late: the coordinator answers when it catches up)."""
        self._apply(states)
        if not self.ready:
            self.ready = True
            if self._waiting_logged:
                log.info("unit states applied %.1f s after the start: accepting connections",
                         time.monotonic() - self._since)
            self._on_ready()

    def _apply(self, states: UnitStates) -> None:
        for iqn, lun, view in states.units:
            target = self.targets.get(iqn)
            if target is not None:
                target.apply_views([(lun, view)])
        for iqn, lun, wce, swp in states.modes:
            target = self.targets.get(iqn)
            if target is not None and lun in target.luns:
                target.luns[lun].set_mode(wce, swp)
        for iqn, lun, loaded, sanitize in states.media:
            target = self.targets.get(iqn)
            if target is not None:
                target.apply_medium(MediumChange(iqn, lun, loaded, sanitize))
        for iqn, lun, size in states.sizes:
            target = self.targets.get(iqn)
            if target is not None:
                target.apply_resize(LunResized(iqn, lun, size, []))

