"""Live reconfiguration, a worker's half (the coordinator's: coordinator/reload_service.py, which has checked and
prepared the change before it pushes it): ConfigChanged is applied between two commands, in one turn of the loop.

    portals             added: every worker listens there too; removed: no more accepts there (sessions stay)
    targets added       built (their images opened as at the start); new logins may use them
    targets removed     every task of theirs aborted, every session ended, their images closed once the tasks stopped
    LUNs added          built and served: REPORT LUNS lists them
    LUNs removed        out of REPORT LUNS at once, their commands answer LOGICAL UNIT NOT SUPPORTED; tasks in flight
                        on them are aborted (as by a LUN reset), the image is closed once they stopped
    LUNs grown          the new size (as `ringtgt resize`); readonly changed: writes refused or allowed from now on
    access              the targets' ACLs, aliases and CHAP, discovery CHAP: new logins; a session whose initiator a
                        target's ACL no longer allows ends. Connections still logging in when targets go or access
                        changes are closed (their initiators log in again, under the new rules).
The unit attentions the coordinator established (REPORTED LUNS DATA HAS CHANGED, CAPACITY DATA HAS CHANGED) come
with the change, for the nexuses of this worker. The push is acked once the aborted tasks have stopped. After every
(re)connection the worker fetches the running configuration and applies it the same way (nothing, when it has it).
A worker that fails in the middle exits, and starts again with the running configuration. `[server] workers` is
the supervisor's (it forks or stops workers), nothing a worker applies.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from coordinator.messages import ConfigChanged, FetchConfig, Message

from .config import Config, loads_config
from .config_diff import ConfigDiff, config_diff
from .iscsi.access import AccessPolicy
from .scsi.task import Barrier

if TYPE_CHECKING:
    from .scsi.lun import LogicalUnit
    from .scsi.target import ScsiTarget
    from .worker import Worker

log = logging.getLogger(f"ringtgt.{__name__}")

RELOAD_PREPARE_SECONDS = 60.0   # the coordinator's preparation of a reload (images made, files grown), at most
RELOAD_TIMEOUT = RELOAD_PREPARE_SECONDS + 15.0     # `ringtgt reload` (and SIGHUP's) wait for the coordinator's answer


class LiveConfig:
    """Applies the coordinator's ConfigChanged pushes to the worker."""

    def __init__(self, worker: Worker):
        self.worker = worker
        worker.coordinator.subscribe(ConfigChanged, self._apply)
        worker.coordinator.on_connect(self._refresh)

    def _refresh(self) -> None:
        """After every (re)connection: the running configuration, in case a reload was pushed while away."""
        self.worker.coordinator.request(FetchConfig(), self._fetched, _proceed, late=self._fetched)

    def _fetched(self, running: Message) -> None:
        self._apply(running, _nothing)

    def _apply(self, message: Message, ack) -> None:
        change = cast(ConfigChanged, message)
        worker = self.worker
        new = loads_config(change.config)
        diff = config_diff(worker.config, new)
        if diff.empty:
            ack()
            return
        targets, units = self._build(new, diff)
        try:
            self._change(change, new, diff, targets, units, ack)
        except Exception as exc:                # half applied: as a failed build, start again from the running one
            log.exception("worker %d failed applying the reload (%s): exiting, to start again with the running "
                          "configuration", worker.index, exc)
            raise SystemExit(1) from None

    def _change(self, change: ConfigChanged, new: Config, diff: ConfigDiff, targets: dict[str, ScsiTarget],
                units: dict[tuple[str, int], LogicalUnit], ack) -> None:
        """The change itself, once `_build` has made what it adds; `ack` once the retired LUNs' tasks stopped."""
        worker = self.worker
        stopped = Barrier(ack)
        for host, port in diff.portals_removed:
            worker.stop_listening(host, port)
        for host, port in diff.portals_added:
            worker.listen(host, port)
        for iqn in diff.targets_removed:
            target = worker.targets.pop(iqn)
            self._retire(target, sorted(target.luns), stopped)
        worker.targets.update(targets)
        for iqn, lun_id in diff.luns_removed:
            self._retire(worker.targets[iqn], [lun_id], stopped)
        for (iqn, lun_id), unit in units.items():
            worker.targets[iqn].luns[lun_id] = unit
            worker.targets[iqn].share_unit(lun_id, unit)
        for lun_change in diff.luns_changed:
            unit = worker.targets[lun_change.iqn].luns[lun_change.lun]
            if lun_change.size is not None:
                unit.resize(lun_change.size[1])
            if lun_change.readonly is not None:
                unit.set_configured_read_only(lun_change.readonly)
        for iqn, lun_id, nexus, asc_ascq in change.attentions:
            kept = worker.targets.get(iqn)
            if kept is not None and lun_id in kept.luns and nexus in kept.nexuses:
                kept.luns[lun_id].attentions.establish_for(nexus, asc_ascq)
        worker.config = new
        worker.access = AccessPolicy.from_config(new, worker.portal_group_tag, worker.access.admit)
        self._end_refused_sessions()
        if diff.targets_removed or diff.access_changed:
            self._end_logins()
        log.info("worker %d serves the reloaded configuration (%d changes)", worker.index, len(diff.lines()))
        stopped.release()

    def _build(self, new: Config, diff: ConfigDiff) -> tuple[dict[str, ScsiTarget], dict[tuple[str, int], LogicalUnit]]:
        """The targets and LUNs the change adds, their images opened: first, as the only part that can fail (an
        image that is gone serves offline, as at a start). A worker that fails there cannot serve what the others
        serve now: it exits, and the supervisor starts it again with the running configuration."""
        configured = {target.iqn: target for target in new.targets}
        try:
            targets = {iqn: self.worker.build_target(configured[iqn]) for iqn in diff.targets_added}
            units = {(iqn, lun.id): self.worker.build_unit(iqn, lun) for iqn, lun_id in diff.luns_added
                     for lun in configured[iqn].luns if lun.id == lun_id}
        except Exception as exc:
            log.exception("worker %d cannot apply the reload (%s): exiting, to start again with the running "
                          "configuration", self.worker.index, exc)
            raise SystemExit(1) from None
        return targets, units

    def _retire(self, target: ScsiTarget, lun_ids: list[int], stopped: Barrier) -> None:
        """Take the units out of `target`, abort every task on them, close their images once those stopped."""
        units = [target.luns.pop(lun_id) for lun_id in lun_ids]
        for lun_id in lun_ids:
            self.worker.images.forget(target.iqn, lun_id)
        done = stopped.hold()

        def close() -> None:
            for unit in units:
                unit.backstore.close()
            done()

        aborted = Barrier(close)
        for lun_id in lun_ids:
            sessions: list[Any] = list(target.nexuses.values())     # Connections
            for session in sessions:
                session.abort_lun(lun_id, aborted.hold())
        aborted.release()

    def _end_refused_sessions(self) -> None:
        """End the sessions of targets gone, and of initiators a target's ACL no longer allows."""
        access = self.worker.access.targets
        for (initiator, _, iqn), conn in list(self.worker.sessions.items()):
            allowed = access.get(iqn) if iqn is not None else None
            if iqn is not None and (allowed is None or not allowed.allows(initiator)):
                log.info("ending the session of %s on %s: %s", initiator, iqn,
                         "the target is gone" if allowed is None else "no longer in its allowed_initiators")
                conn.close()

    def _end_logins(self) -> None:
        """Close the connections still logging in: their logins were checked against the targets and access rules
        before the change (the initiator logs in again, under the new ones)."""
        for conn in [conn for conn in self.worker.channels if conn.login is not None]:
            log.info("%s:%d: closing a connection still logging in: the targets or access rules changed",
                     *conn.peer_address)
            conn.close()


def _nothing() -> None:
    pass


def _proceed(failure) -> None:
    """No answer (logged by the client): the worker serves what it was started with; the next push or reconnection
    brings the running configuration."""
