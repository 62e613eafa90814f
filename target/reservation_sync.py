"""A worker's half of the reservation and unit attention state (the coordinator's half:
coordinator/reservations_service.py): applies the coordinator's pushes to this worker's targets.

    pr.change  {target, lun, view, attentions, aborts}   a reservation change made through another worker
    pr.reset   {target, luns, nexus, asc, cold, views}    a LUN or target reset issued through another worker
    pr.clear   {target, lun, nexus}                       CLEAR TASK SET issued through another worker
    mode.change {target, lun, wce, swp, attentions}        MODE SELECT through another worker changed WCE or SWP
    medium.change {target, lun, loaded, sanitize}         a removable medium loaded or ejected, or a sanitize
                                                          begun or ended, through another worker
Each is acked once applied and the tasks it aborted here have stopped, so the issuing worker's answer means
every worker has it. After every
(re)connection to a coordinator the worker fetches every unit's conflict view, mode and medium ("pr.views").
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class ReservationSync:
    """Routes the coordinator's reservation pushes to the worker's ScsiTargets."""

    def __init__(self, coordinator, targets: dict):
        self.coordinator = coordinator
        self.targets = targets              # iqn -> ScsiTarget
        coordinator.subscribe("pr.change", self._change)
        coordinator.subscribe("pr.reset", self._reset)
        coordinator.subscribe("pr.clear", self._clear)
        coordinator.subscribe("mode.change", self._applying("apply_mode"))
        coordinator.subscribe("medium.change", self._applying("apply_medium"))
        coordinator.on_connect(self._refresh)

    def _change(self, body: dict, ack) -> None:
        target = self.targets.get(body["target"])
        if target is not None:
            unit = target.luns.get(body["lun"])
            if unit is not None:
                unit.reservations.apply(body, ack)
                return
        ack()

    def _reset(self, body: dict, ack) -> None:
        target = self.targets.get(body["target"])
        if target is None:
            ack()
        else:
            target.apply_reset(body, ack)

    def _clear(self, body: dict, ack) -> None:
        target = self.targets.get(body["target"])
        if target is None:
            ack()
        else:
            target.apply_clear(body, ack)

    def _applying(self, method: str):
        """A push handler calling the named ScsiTarget method with the body, for pushes that abort nothing."""
        def apply(body: dict, ack) -> None:
            target = self.targets.get(body["target"])
            if target is not None:
                getattr(target, method)(body)
            ack()
        return apply

    def _refresh(self) -> None:
        self.coordinator.request("pr.views", {}, self._views, late=self._views)

    def _views(self, reply: dict) -> None:
        """The views (also late: the coordinator answers when it catches up), or the request's expiry."""
        if "error" in reply:
            if not reply.get("expired"):
                log.error("pr.views failed in the coordinator: %s", reply["error"])
            return
        for iqn, lun, view in reply["units"]:
            target = self.targets.get(iqn)
            if target is not None:
                target.apply_views([(lun, view)])
        for iqn, lun, wce, swp in reply.get("modes", ()):
            target = self.targets.get(iqn)
            if target is not None and lun in target.luns:
                target.luns[lun].set_mode(wce, swp)
        for iqn, lun, loaded, sanitize in reply.get("media", ()):
            target = self.targets.get(iqn)
            if target is not None:
                target.apply_medium({"lun": lun, "loaded": loaded, "sanitize": sanitize})
