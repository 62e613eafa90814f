"""A logical unit's reservations when the coordinator is their authority (coordinator/unit_service.py).

The worker keeps only the unit's `ConflictView`, refreshed from every answer and every ReservationChange push, so the
per-I/O conflict check costs no round trip. PR IN/OUT and RESERVE/RELEASE are requests; their task finishes
when the answer comes, i.e. after every other worker has applied the change. Without an answer within the
client's deadline (the coordinator stopped, say) the task ends BUSY, which initiators retry (SAM-5 §5.3: "the
logical unit is temporarily unable to accept the command"; the Linux SCSI layer requeues it), and the request is
dropped by the coordinator unapplied; if the coordinator applied it just before, its late answer still updates
this worker's view.
"""
from __future__ import annotations

from typing import Callable

from coordinator.messages import Failure, ReservationAnswer, ReservationChange, ReservationRequest
from coordinator.unit_state.reservations import Outcome

from .reservations import NOTHING_RESERVED, ConflictView
from .sense import HARDWARE_ERROR, INTERNAL_TARGET_FAILURE, build_sense
from .task import BUSY, CHECK_CONDITION

_FAILED = Outcome(CHECK_CONDITION, build_sense(HARDWARE_ERROR, INTERNAL_TARGET_FAILURE))
_BUSY = Outcome(BUSY)


def failed_command(failure: Failure) -> Outcome:
    """What a command whose request to the coordinator failed ends with: BUSY when it did not answer in time (the
    initiator retries), HARDWARE ERROR / INTERNAL TARGET FAILURE when it refused or failed it."""
    return _BUSY if failure.expired else _FAILED


class SharedReservations:
    """Reservation store for one unit, backed by the coordinator."""

    def __init__(self, coordinator, target_iqn: str, lun: int,
                 on_change: Callable[[ConflictView, list, list, Callable[[], None]], None]):
        self.coordinator = coordinator
        self.target_iqn = target_iqn
        self.lun = lun
        self.on_change = on_change          # (view, attentions, aborts, done) -> None
        self.view: ConflictView = NOTHING_RESERVED

    def submit(self, kind: str, nexus: str, cdb: bytes, parameters: bytes,
               callback: Callable[[Outcome], None]) -> None:
        def answered(reply: ReservationAnswer) -> None:
            outcome = Outcome.from_dict(reply.outcome)
            if reply.change is None:
                callback(outcome)
            else:
                self.apply(reply.change, lambda: callback(outcome))

        self.coordinator.request(ReservationRequest(self.target_iqn, self.lun, kind, nexus, cdb, parameters),
                                 answered, lambda failure: callback(failed_command(failure)), owner=nexus,
                                 late=self._late)

    def _late(self, reply: ReservationAnswer) -> None:
        """The coordinator applied a request after its task ended BUSY (or its connection closed)."""
        if reply.change is not None:
            self.apply(reply.change, _nothing)

    def apply(self, change: ReservationChange, done: Callable[[], None]) -> None:
        """A change from the coordinator (this worker's answer or another's push); `done` once the tasks it
        aborts here (PREEMPT AND ABORT) have stopped."""
        self.on_change(ConflictView.from_dict(change.view), change.attentions, change.aborts, done)


def _nothing() -> None:
    pass
