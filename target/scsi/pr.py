"""Reservation commands: PERSISTENT RESERVE IN/OUT, RESERVE(6/10), RELEASE(6/10), and the per-I/O conflict check.

The handlers decode what the transport must know (the parameter list length of PR OUT), then hand the request
to the unit's reservation authority (`unit.reservations`: the coordinator, through the worker's view)
and finish the task from the `Outcome` it calls back with.
"""
from __future__ import annotations

from struct import Struct

from coordinator.unit_state.reservations import Outcome

from .data_out import parameter_data
from .sense import invalid_cdb

_PROUT_LENGTH = Struct(">5xI")
_THIRD_PARTY, _LONGID, _EXTENT = 0x10, 0x02, 0x01


def _finish(unit, task):
    """The completion of a request to the reservation store; the task waits on the coordinator meanwhile (a task
    management function aborting it does not wait for it: the coordinator may be busy with that very function)."""
    task.remote = True

    def done(outcome: Outcome) -> None:
        task.remote = False
        task.finish(outcome.status, outcome.data or None, outcome.sense)
    return done


def persistent_reserve_in(target, unit, task):
    unit.reservations.submit("in", task.nexus, bytes(task.cdb), b"", _finish(unit, task))


def persistent_reserve_out(target, unit, task):
    length = _PROUT_LENGTH.unpack_from(task.cdb)[0]
    data = parameter_data(task, length)
    parameters = bytes(data) if length else b""
    unit.reservations.submit("out", task.nexus, bytes(task.cdb), parameters, _finish(unit, task))


def reserve(target, unit, task):
    """RESERVE(6)/(10): logical unit reservations only; third-party and extent forms are refused."""
    _check_party_and_extent(task.cdb)
    unit.reservations.submit("reserve", task.nexus, b"", b"", _finish(unit, task))


def release(target, unit, task):
    _check_party_and_extent(task.cdb)
    unit.reservations.submit("release", task.nexus, b"", b"", _finish(unit, task))


def _check_party_and_extent(cdb) -> None:
    flags = cdb[1] & (_THIRD_PARTY | _LONGID | _EXTENT)
    if flags:
        raise invalid_cdb(1, flags.bit_length() - 1)
