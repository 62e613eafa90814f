"""A logical unit's reservations held in the worker itself: the authority when no coordinator serves the unit.

Runs the pure `Reservations` state machine synchronously, establishes the unit attentions an outcome names,
aborts the tasks of preempted nexuses through the target's `abort_tasks` hook, and with APTPL keeps the
registrations in a state file (written atomically: temp file, fsync, rename, fsync of the directory).
The coordinator-backed store offers the same interface: `view`, `submit`, `reset`, `nexus_lost`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable

from .reservations import ConflictView, Outcome, Reservations

log = logging.getLogger(__name__)


def save_state(path: str, state: dict | None) -> None:
    """Write (or with None remove) a reservation state file atomically."""
    directory = os.path.dirname(path)
    if state is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
    else:
        os.makedirs(directory, exist_ok=True)
        temp = f"{path}.tmp"
        with open(temp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temp, path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_state(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class LocalReservations:
    """Reservation authority for one unit inside one process."""

    def __init__(self, attentions, abort_tasks: Callable[[str], None], state_path: str | None = None):
        self.state = Reservations()
        self.attentions = attentions
        self.abort_tasks = abort_tasks
        self.state_path = state_path
        if state_path is not None:
            saved = load_state(state_path)
            if saved is not None:
                self.state.restore(saved)
        self.view: ConflictView = self.state.view()

    def submit(self, kind: str, nexus: str, cdb: bytes, parameters: bytes,
               callback: Callable[[Outcome], None]) -> None:
        state = self.state
        if kind == "out":
            outcome = state.persistent_reserve_out(nexus, cdb, parameters)
        elif kind == "in":
            outcome = state.persistent_reserve_in(nexus, cdb)
        elif kind == "reserve":
            outcome = state.reserve(nexus)
        else:
            outcome = state.release(nexus)
        if outcome.changed:
            self._apply(outcome)
        callback(outcome)

    def _apply(self, outcome: Outcome) -> None:
        self.view = self.state.view()
        for nexus, asc_ascq in outcome.attentions:
            self.attentions.establish_for(nexus, asc_ascq)
        for nexus in outcome.aborts:
            self.abort_tasks(nexus)
        if self.state_path is not None:
            save_state(self.state_path, self.state.persistent_state() if self.state.aptpl else None)

    def reset(self) -> None:
        if self.state.reset():
            self.view = self.state.view()

    def nexus_lost(self, nexus: str) -> None:
        if self.state.nexus_lost(nexus):
            self.view = self.state.view()
