"""SCSI targets for the unit tests, with the coordinator production has: coordinator/in_process.py running the real
unit state handlers (UnitAuthority) in this process, so a command runs the path it runs in a worker."""
from __future__ import annotations

from coordinator.in_process import InProcessCoordinator
from coordinator.unit_service import UnitAuthority, register_unit_handlers
from target.scsi.target import ScsiTarget


class IdleSession:
    """A session with no task of its own in flight: what a nexus attaches with when the test runs its commands
    one at a time."""

    def abort_lun(self, lun: int, done) -> bool:
        done()
        return False

    def close(self) -> None:
        pass


def coordinated_target(luns: dict, call_later=None, authority: type[UnitAuthority] = UnitAuthority) -> ScsiTarget:
    """A ScsiTarget of `luns` whose coordinator is an in-process one with an `authority` for exactly those units."""
    iqn = next(iter(luns.values())).identity.target_iqn
    hub = InProcessCoordinator()
    register_unit_handlers(hub, authority([(iqn, lun) for lun in luns]))
    return ScsiTarget(luns, coordinator=hub.client(), call_later=call_later)


def attached(target: ScsiTarget, nexus: str) -> None:
    """The nexus's session started (the coordinator tells it what is pending), unless it has one."""
    if nexus not in target.nexuses:
        target.attach(nexus, IdleSession())
