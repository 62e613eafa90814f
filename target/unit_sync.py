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
"""
from __future__ import annotations

import logging

from coordinator.messages import (ClearTaskSet, FetchUnitStates, LunResized, MediumChange, ModeChange,
                                  ReservationChange, UnitReset, UnitStates)

log = logging.getLogger(f"ringtgt.{__name__}")


class UnitSync:
    """Routes the coordinator's unit state pushes to the worker's ScsiTargets."""

    def __init__(self, coordinator, targets: dict):
        self.coordinator = coordinator
        self.targets = targets              # iqn -> ScsiTarget
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
        self.coordinator.request(FetchUnitStates(), self._states, _proceed, late=self._states)

    def _states(self, states: UnitStates) -> None:
        """The states (also late: the coordinator answers when it catches up)."""
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


def _proceed(failure) -> None:
    """No states (logged by the client): the worker goes on with what it has; the next push or reconnection
    brings them."""
