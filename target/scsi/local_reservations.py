"""A logical unit's reservations held in the process itself: the store used when no coordinator serves the
unit (SCSI objects built alone, as in unit tests). Runs the pure `Reservations` state machine synchronously
and hands every change to the target (`on_change`), exactly as the coordinator-backed store
(target/scsi/shared_reservations.py) does with the coordinator's answers. Same interface: `view`, `submit`,
`reset`, `nexus_lost`.
"""
from __future__ import annotations

from typing import Callable

from coordinator.unit_state.reservations import Outcome, Reservations, run_request

from .reservations import ConflictView


class LocalReservations:
    """Reservation store for one unit inside one process."""

    def __init__(self, on_change: Callable[[ConflictView, list, list, Callable[[], None]], None]):
        self.state = Reservations()
        self.on_change = on_change          # (view, attentions, aborts, done) -> None
        self.view = ConflictView.from_dict(self.state.view())

    def submit(self, kind: str, nexus: str, cdb: bytes, parameters: bytes,
               callback: Callable[[Outcome], None]) -> None:
        outcome = run_request(self.state, kind, nexus, cdb, parameters)
        if outcome.changed:
            self.on_change(ConflictView.from_dict(self.state.view()), outcome.attentions, outcome.aborts,
                           lambda: callback(outcome))
        else:
            callback(outcome)

    def reset(self) -> None:
        if self.state.reset():
            self.view = ConflictView.from_dict(self.state.view())

    def nexus_lost(self, nexus: str) -> None:
        if self.state.nexus_lost(nexus):
            self.view = ConflictView.from_dict(self.state.view())
