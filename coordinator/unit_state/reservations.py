"""Reservations of one logical unit, as pure state: SPC-4 persistent reservations and SPC-2 RESERVE/RELEASE.

No I/O. The authority (the coordinator) feeds it decoded requests (`run_request`) and gets back an `Outcome`:
status and sense, data-in, the unit attentions to establish for other I_T nexuses, and the nexuses whose tasks
PREEMPT AND ABORT aborts. `view()` compiles the state into the map a worker builds its per-I/O `ConflictView`
from (target/scsi/reservations.py, with the access class of every opcode).

Choices (SPC-4 leaves them to the device server):
- One target port per target (relative port 1): ALL_TG_PT=1 is accepted and recorded (READ FULL STATUS reports
  it); it registers the same single I_T nexus. REPORT CAPABILITIES says ATP_C=1.
- SPEC_I_PT is not supported (SIP_C=0): SPEC_I_PT=1 is INVALID FIELD IN PARAMETER LIST.
- REGISTER AND MOVE takes an iSCSI TransportID with an ISID (format 01b) naming the destination port.
- APTPL is supported (PTPL_C=1); the authority persists `snapshot()` whenever `aptpl` is set after a change.
- SPC-2 RESERVE/RELEASE conflict with any persistent registration (SPC-4 5.13.3, CRH=1); the SPC-2
  reservation is dropped by LUN reset, target reset and loss of its I_T nexus.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from struct import Struct

from .sense import (ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR, ScsiError, build_sense, invalid_cdb,
                    invalid_parameter)
from .status import CHECK_CONDITION, GOOD, RESERVATION_CONFLICT

# Reservation types (SPC-4 table 212)
WRITE_EXCLUSIVE = 1
EXCLUSIVE_ACCESS = 3
WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 5
EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 6
WRITE_EXCLUSIVE_ALL_REGISTRANTS = 7
EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 8
TYPES = (WRITE_EXCLUSIVE, EXCLUSIVE_ACCESS, WRITE_EXCLUSIVE_REGISTRANTS_ONLY, EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
         WRITE_EXCLUSIVE_ALL_REGISTRANTS, EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
ALL_REGISTRANTS = (WRITE_EXCLUSIVE_ALL_REGISTRANTS, EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
REGISTRANTS_ONLY = (WRITE_EXCLUSIVE_REGISTRANTS_ONLY, EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)
EXCLUSIVE_ACCESS_TYPES = (EXCLUSIVE_ACCESS, EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
LU_SCOPE = 0

# PERSISTENT RESERVE OUT service actions
REGISTER = 0
RESERVE = 1
RELEASE = 2
CLEAR = 3
PREEMPT = 4
PREEMPT_AND_ABORT = 5
REGISTER_AND_IGNORE_EXISTING_KEY = 6
REGISTER_AND_MOVE = 7
# PERSISTENT RESERVE IN service actions
READ_KEYS = 0
READ_RESERVATION = 1
REPORT_CAPABILITIES = 2
READ_FULL_STATUS = 3

# Unit attentions (ASC/ASCQ) and sense codes of this module
RESERVATIONS_PREEMPTED = 0x2A03
RESERVATIONS_RELEASED = 0x2A04
REGISTRATIONS_PREEMPTED = 0x2A05
INVALID_RELEASE_OF_PERSISTENT_RESERVATION = 0x2604

_PROUT_CDB = Struct(">xBB2xI")          # service action, scope/type, parameter list length
_PRIN_CDB = Struct(">xB5xH")            # service action, allocation length
_PROUT_BASIC = Struct(">QQ4xB")         # reservation key, service action key, flags (SPEC_I_PT/ALL_TG_PT/APTPL)
_PROUT_MOVE = Struct(">QQxBHI")         # key, service action key, UNREG/APTPL, relative port, TransportID length
_HEADER = Struct(">II")                 # PRgeneration, additional length
_RESERVATION = Struct(">Q4xxB2x")       # key, scope/type
_CAPABILITIES = Struct(">HBBH2x")
_FULL_STATUS = Struct(">Q4xBB4xHI")     # key, ALL_TG_PT/R_HOLDER, scope/type, relative port, TransportID length
BASIC_LENGTH = 24
SPEC_I_PT, ALL_TG_PT, APTPL = 0x08, 0x04, 0x01
RELATIVE_PORT = 1
_ISCSI_PROTOCOL = 0x05
_FORMAT_PORT = 0x40                     # TransportID format 01b: iSCSI name + ",i,0x" + ISID
_TYPE_MASK = (0x80 | 0x40 | 0x20 | 0x08 | 0x02) << 8 | 0x01   # WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX | EX_AC_AR


@dataclass
class Outcome:
    """The answer to one request plus what it does to other I_T nexuses."""
    status: int = GOOD
    sense: bytes | None = None
    data: bytes = b""
    attentions: list[tuple[str, int]] = field(default_factory=list)    # (nexus, ASC/ASCQ) to establish
    aborts: list[str] = field(default_factory=list)                    # nexuses whose tasks are aborted
    changed: bool = False                                              # state changed: push the new view

    def to_dict(self) -> dict:
        return {"status": self.status, "sense": self.sense, "data": self.data,
                "attentions": [list(a) for a in self.attentions], "aborts": list(self.aborts),
                "changed": self.changed}

    @classmethod
    def from_dict(cls, body: dict) -> "Outcome":
        return cls(body["status"], body["sense"], body["data"], [tuple(a) for a in body["attentions"]],
                   list(body["aborts"]), body["changed"])


class Conflict(Exception):
    """RESERVATION CONFLICT status."""


NOTHING_RESERVED: dict[str, object] = {
    "reserved": False, "spc2_holder": None, "pr_type": 0, "holder": None, "registered": [],
    "registrations": False}


def initiator_port(nexus: str) -> str:
    """'iqn,i,0xISID' of an I_T nexus named 'iqn,i,0xISID,target,t,0xTPGT'."""
    name, i, isid = nexus.split(",")[:3]
    return f"{name},{i},{isid}"


def transport_id(nexus: str) -> bytes:
    """iSCSI TransportID, format 01b (SPC-4 7.6.4.6): null-terminated port name padded to a multiple of 4."""
    name = initiator_port(nexus).encode() + b"\0"
    name += b"\0" * (-len(name) % 4)
    return bytes((_FORMAT_PORT | _ISCSI_PROTOCOL, 0)) + len(name).to_bytes(2, "big") + name


def _parse_transport_id(data: bytes, offset: int, target_part: str) -> str:
    """The nexus a REGISTER AND MOVE TransportID names (an initiator port on our one target port)."""
    if len(data) < offset + 4 or data[offset] != _FORMAT_PORT | _ISCSI_PROTOCOL:
        raise invalid_parameter(offset)
    length = int.from_bytes(data[offset + 2:offset + 4], "big")
    name = data[offset + 4:offset + 4 + length].split(b"\0", 1)[0].decode("utf-8", "replace")
    parts = name.split(",")
    if len(parts) != 3 or parts[1].lower() != "i" or not parts[2].lower().startswith("0x"):
        raise invalid_parameter(offset + 4)
    try:
        isid = int(parts[2], 16)
    except ValueError:
        raise invalid_parameter(offset + 4) from None
    return f"{parts[0]},i,0x{isid:012x},{target_part}"


class Reservations:
    """Registrations, the persistent reservation and the SPC-2 reservation of one logical unit."""

    def __init__(self):
        self.generation = 0
        self.keys: dict[str, int] = {}             # nexus -> reservation key
        self.all_tg_pt: set[str] = set()           # nexuses registered with ALL_TG_PT=1
        self.holder: str | None = None             # nexus holding a non-all-registrants reservation
        self.pr_type = 0
        self.aptpl = False
        self.spc2_holder: str | None = None

    # -- state export --------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"generation": self.generation, "keys": dict(self.keys), "all_tg_pt": sorted(self.all_tg_pt),
                "holder": self.holder, "pr_type": self.pr_type, "aptpl": self.aptpl,
                "spc2_holder": self.spc2_holder}

    def restore(self, state: dict) -> None:
        self.generation = state["generation"]
        self.keys = dict(state["keys"])
        self.all_tg_pt = set(state["all_tg_pt"])
        self.holder = state["holder"]
        self.pr_type = state["pr_type"]
        self.aptpl = state["aptpl"]
        self.spc2_holder = state["spc2_holder"]

    def persistent_state(self) -> dict:
        """What survives a power loss with APTPL: registrations and the persistent reservation, not SPC-2."""
        state = self.snapshot()
        state["spc2_holder"] = None
        return state

    def view(self) -> dict:
        """Who may do what (target/scsi/reservations.py `ConflictView.from_dict`); `reserved` False: nothing can
        conflict."""
        if not self.keys and self.spc2_holder is None:
            return dict(NOTHING_RESERVED)
        return {"reserved": bool(self.pr_type) or self.spc2_holder is not None, "spc2_holder": self.spc2_holder,
                "pr_type": self.pr_type, "holder": self.holder, "registered": sorted(self.keys),
                "registrations": bool(self.keys)}

    def is_holder(self, nexus: str) -> bool:
        if not self.pr_type:
            return False
        if self.pr_type in ALL_REGISTRANTS:
            return nexus in self.keys
        return nexus == self.holder

    # -- PERSISTENT RESERVE OUT -----------------------------------------------------------------------------
    def persistent_reserve_out(self, nexus: str, cdb: bytes, parameters: bytes) -> Outcome:
        outcome = Outcome()
        try:
            self._prout(nexus, cdb, bytes(parameters), outcome)
        except Conflict:
            return Outcome(RESERVATION_CONFLICT)
        except ScsiError as error:
            return Outcome(CHECK_CONDITION, build_sense(error.key, error.asc_ascq, error.field))
        return outcome

    def _prout(self, nexus: str, cdb: bytes, data: bytes, outcome: Outcome) -> None:
        if self.spc2_holder is not None and self.spc2_holder != nexus:
            raise Conflict
        action, scope_type, length = _PROUT_CDB.unpack_from(cdb)
        action &= 0x1F
        if action > REGISTER_AND_MOVE:
            raise invalid_cdb(1, 4)
        scope, pr_type = scope_type >> 4, scope_type & 0x0F
        if action in (RESERVE, RELEASE, PREEMPT, PREEMPT_AND_ABORT, REGISTER_AND_MOVE):
            if scope != LU_SCOPE:
                raise invalid_cdb(2, 7)
            if pr_type not in TYPES:
                raise invalid_cdb(2, 3)
        if action == REGISTER_AND_MOVE:
            if length < BASIC_LENGTH or len(data) < length:
                raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
            self._register_and_move(nexus, pr_type, data[:length], outcome)
            return
        if length != BASIC_LENGTH or len(data) < BASIC_LENGTH:
            raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        key, action_key, flags = _PROUT_BASIC.unpack_from(data)
        if flags & SPEC_I_PT:
            raise invalid_parameter(20, 3)
        registered = self.keys.get(nexus)
        if action == REGISTER_AND_IGNORE_EXISTING_KEY:
            self._register(nexus, action_key, flags, outcome)
            return
        if registered is None:
            if action == REGISTER and key == 0:
                self._register(nexus, action_key, flags, outcome)
                return
            raise Conflict
        if key != registered:
            raise Conflict
        if action == REGISTER:
            self._register(nexus, action_key, flags, outcome)
        elif action == RESERVE:
            self._reserve(nexus, pr_type, outcome)
        elif action == RELEASE:
            self._release(nexus, pr_type, outcome)
        elif action == CLEAR:
            self._clear(nexus, outcome)
        else:
            self._preempt(nexus, pr_type, action_key, action == PREEMPT_AND_ABORT, outcome)

    def _changed(self, outcome: Outcome) -> None:
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        outcome.changed = True

    def _register(self, nexus: str, key: int, flags: int, outcome: Outcome) -> None:
        if key == 0:
            if nexus in self.keys:
                self._unregister(nexus, outcome)
                self.aptpl = bool(flags & APTPL) if self.keys else False
                self._changed(outcome)
            return
        self.keys[nexus] = key
        if flags & ALL_TG_PT:
            self.all_tg_pt.add(nexus)
        else:
            self.all_tg_pt.discard(nexus)
        self.aptpl = bool(flags & APTPL)
        self._changed(outcome)

    def _unregister(self, nexus: str, outcome: Outcome) -> None:
        """Remove a registration; a reservation it held goes with it (SPC-4 5.13.11.2.3)."""
        del self.keys[nexus]
        self.all_tg_pt.discard(nexus)
        if self.pr_type in ALL_REGISTRANTS:
            if not self.keys:
                self._drop_reservation()
        elif self.holder == nexus:
            if self.pr_type in REGISTRANTS_ONLY:
                outcome.attentions += [(other, RESERVATIONS_RELEASED) for other in self.keys]
            self._drop_reservation()

    def _drop_reservation(self) -> None:
        self.holder = None
        self.pr_type = 0

    def _reserve(self, nexus: str, pr_type: int, outcome: Outcome) -> None:
        if self.pr_type:
            if not self.is_holder(nexus) or self.pr_type != pr_type:
                raise Conflict
            return
        self.pr_type = pr_type
        self.holder = None if pr_type in ALL_REGISTRANTS else nexus
        outcome.changed = True                  # PRgeneration counts registrations only: not incremented

    def _release(self, nexus: str, pr_type: int, outcome: Outcome) -> None:
        if not self.is_holder(nexus):
            return
        if pr_type != self.pr_type:
            raise ScsiError(ILLEGAL_REQUEST, INVALID_RELEASE_OF_PERSISTENT_RESERVATION)
        if self.pr_type not in (WRITE_EXCLUSIVE, EXCLUSIVE_ACCESS):
            outcome.attentions += [(other, RESERVATIONS_RELEASED) for other in self.keys if other != nexus]
        self._drop_reservation()
        outcome.changed = True

    def _clear(self, nexus: str, outcome: Outcome) -> None:
        outcome.attentions += [(other, RESERVATIONS_PREEMPTED) for other in self.keys if other != nexus]
        self.keys.clear()
        self.all_tg_pt.clear()
        self._drop_reservation()
        self.aptpl = False
        self._changed(outcome)

    def _preempt(self, nexus: str, pr_type: int, action_key: int, abort: bool, outcome: Outcome) -> None:
        """PREEMPT / PREEMPT AND ABORT (SPC-4 5.13.11.4)."""
        if not self.pr_type:
            if action_key == 0:
                raise invalid_parameter(8)
            self._remove_keyed(nexus, action_key, abort, outcome)
        elif self.pr_type in ALL_REGISTRANTS:
            if action_key == 0:
                self._remove_others(nexus, abort, outcome)
                self._establish(nexus, pr_type, outcome)
            else:
                self._remove_keyed(nexus, action_key, abort, outcome)
        elif self.holder is not None and action_key == self.keys.get(self.holder):
            self._remove_keyed(nexus, action_key, abort, outcome, reservation_holder=True)
            self._establish(nexus, pr_type, outcome)
        elif action_key == 0:
            raise invalid_parameter(8)
        else:
            self._remove_keyed(nexus, action_key, abort, outcome)
        self._changed(outcome)

    def _remove_keyed(self, nexus: str, key: int, abort: bool, outcome: Outcome,
                      reservation_holder: bool = False) -> None:
        victims = [other for other, k in self.keys.items() if k == key and other != nexus]
        if not victims and not reservation_holder:
            raise Conflict
        self._remove(victims, abort, outcome)

    def _remove_others(self, nexus: str, abort: bool, outcome: Outcome) -> None:
        self._remove([other for other in self.keys if other != nexus], abort, outcome)

    def _remove(self, victims: list[str], abort: bool, outcome: Outcome) -> None:
        for victim in victims:
            del self.keys[victim]
            self.all_tg_pt.discard(victim)
            outcome.attentions.append((victim, REGISTRATIONS_PREEMPTED))
        if abort:
            outcome.aborts += victims

    def _establish(self, nexus: str, pr_type: int, outcome: Outcome) -> None:
        """The preempting nexus takes the reservation; a changed type or scope releases it for the others."""
        if self.pr_type and self.pr_type != pr_type:
            outcome.attentions += [(other, RESERVATIONS_RELEASED) for other in self.keys if other != nexus]
        self.pr_type = pr_type
        self.holder = None if pr_type in ALL_REGISTRANTS else nexus

    def _register_and_move(self, nexus: str, pr_type: int, data: bytes, outcome: Outcome) -> None:
        key, action_key, flags, port, tid_length = _PROUT_MOVE.unpack_from(data)
        registered = self.keys.get(nexus)
        if registered is None or key != registered:
            raise Conflict
        if not self.pr_type or not self.is_holder(nexus) or self.pr_type in ALL_REGISTRANTS:
            raise Conflict
        if action_key == 0:
            raise invalid_parameter(8)
        if port != RELATIVE_PORT:
            raise invalid_parameter(18)
        if BASIC_LENGTH + tid_length > len(data):
            raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        destination = _parse_transport_id(data, BASIC_LENGTH, nexus.split(",", 3)[3])
        if destination == nexus:
            raise invalid_parameter(BASIC_LENGTH)
        self.keys[destination] = action_key
        self.holder = destination
        self.pr_type = pr_type
        if flags & 0x02:                                    # UNREG
            del self.keys[nexus]
            self.all_tg_pt.discard(nexus)
        self.aptpl = bool(flags & APTPL)
        self._changed(outcome)

    # -- PERSISTENT RESERVE IN ------------------------------------------------------------------------------
    def persistent_reserve_in(self, nexus: str, cdb: bytes) -> Outcome:
        """Served to every nexus, even while another holds an SPC-2 reservation (only PR OUT conflicts then)."""
        try:
            action, alloc = _PRIN_CDB.unpack_from(cdb)
            data = self._prin(action & 0x1F)
        except ScsiError as error:
            return Outcome(CHECK_CONDITION, build_sense(error.key, error.asc_ascq, error.field))
        return Outcome(data=data[:alloc])

    def _prin(self, action: int) -> bytes:
        if action == READ_KEYS:
            keys = b"".join(k.to_bytes(8, "big") for k in self.keys.values())
            return _HEADER.pack(self.generation, len(keys)) + keys
        if action == READ_RESERVATION:
            if not self.pr_type:
                return _HEADER.pack(self.generation, 0)
            key = 0 if self.pr_type in ALL_REGISTRANTS or self.holder is None else self.keys[self.holder]
            return _HEADER.pack(self.generation, 16) + _RESERVATION.pack(key, LU_SCOPE << 4 | self.pr_type)
        if action == REPORT_CAPABILITIES:
            # CRH=1, SIP_C=0, ATP_C=1, PTPL_C=1; TMV=1 with ALLOW COMMANDS 0; PTPL_A; the type mask
            return _CAPABILITIES.pack(8, 0x10 | 0x04 | 0x01, 0x80 | int(self.aptpl), _TYPE_MASK)
        if action == READ_FULL_STATUS:
            descriptors = []
            for nexus, key in self.keys.items():
                holder = self.is_holder(nexus)
                tid = transport_id(nexus)
                flags = (0x02 if nexus in self.all_tg_pt else 0) | int(holder)
                scope_type = LU_SCOPE << 4 | self.pr_type if holder else 0
                descriptors.append(_FULL_STATUS.pack(key, flags, scope_type, RELATIVE_PORT, len(tid)) + tid)
            body = b"".join(descriptors)
            return _HEADER.pack(self.generation, len(body)) + body
        raise invalid_cdb(1, 4)

    # -- SPC-2 RESERVE / RELEASE, resets and nexus loss -----------------------------------------------------
    def reserve(self, nexus: str) -> Outcome:
        if self.keys or (self.spc2_holder is not None and self.spc2_holder != nexus):
            return Outcome(RESERVATION_CONFLICT)
        changed = self.spc2_holder is None
        self.spc2_holder = nexus
        return Outcome(changed=changed)

    def release(self, nexus: str) -> Outcome:
        if self.keys:
            return Outcome(RESERVATION_CONFLICT)
        if self.spc2_holder != nexus:
            return Outcome()                        # releasing someone else's reservation: GOOD, no effect
        self.spc2_holder = None
        return Outcome(changed=True)

    def reset(self) -> bool:
        """LUN or target reset: the SPC-2 reservation goes, persistent state stays. True if anything changed."""
        changed = self.spc2_holder is not None
        self.spc2_holder = None
        return changed

    def nexus_lost(self, nexus: str) -> bool:
        """I_T nexus loss releases that nexus's SPC-2 reservation (registrations persist)."""
        if self.spc2_holder == nexus:
            self.spc2_holder = None
            return True
        return False


def run_request(state: Reservations, kind: str, nexus: str, cdb: bytes, parameters: bytes) -> Outcome:
    """One reservation request (ReservationRequest.kind: out, in, reserve, release) against a unit's state."""
    if kind == "out":
        return state.persistent_reserve_out(nexus, cdb, parameters)
    if kind == "in":
        return state.persistent_reserve_in(nexus, cdb)
    if kind == "reserve":
        return state.reserve(nexus)
    if kind == "release":
        return state.release(nexus)
    raise ValueError(f"unknown reservation request {kind!r}")
