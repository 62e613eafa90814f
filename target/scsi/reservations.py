"""A unit's reservations as a worker checks them per I/O: the access class of every opcode and the `ConflictView`,
the small immutable object compiled from the authority's state (coordinator/unit_state/reservations.py, whose
`Reservations.view()` gives the map it is built from): one attribute test when nothing is reserved.
"""
from __future__ import annotations

from dataclasses import dataclass

from coordinator.unit_state.reservations import ALL_REGISTRANTS, EXCLUSIVE_ACCESS_TYPES, REGISTRANTS_ONLY

# Command classes for the conflict check (SPC-4 table 66, SBC-3 table 13); every opcode not listed WRITES
ALLOWED = 0         # never conflicts with a persistent reservation (PR IN/OUT do their own checks)
READS = 1           # allowed under Write Exclusive, conflicts under Exclusive Access
WRITES = 2          # conflicts under both
_ALLOWED_OPCODES = (0x00, 0x03, 0x12, 0x25, 0x4D, 0x5E, 0x5F, 0x84, 0x9E, 0xA0, 0xA3)
_READ_OPCODES = (0x08, 0x28, 0xA8, 0x88, 0x2F, 0xAF, 0x8F, 0x34, 0x90, 0x1A, 0x5A, 0x37, 0xB7)
ACCESS = [ALLOWED if op in _ALLOWED_OPCODES else READS if op in _READ_OPCODES else WRITES for op in range(256)]
# Served to other nexuses while an SPC-2 reservation is held: INQUIRY, REQUEST SENSE, REPORT LUNS, REPORT
# SUPPORTED OPCODES; RESERVE/RELEASE(6/10) and PR IN/OUT reach the state machine, which decides (a worker's view
# may lag the authority, e.g. after another worker died holding the reservation).
SPC2_ALLOWED = [op in (0x03, 0x12, 0x16, 0x17, 0x56, 0x57, 0x5E, 0x5F, 0xA0, 0xA3) for op in range(256)]


@dataclass(frozen=True)
class ConflictView:
    """What a worker needs per I/O: who may do what. `reserved` False means nothing can conflict."""
    reserved: bool = False
    spc2_holder: str | None = None
    pr_type: int = 0
    holder: str | None = None               # None for the all-registrants types
    registered: frozenset = frozenset()
    registrations: bool = False             # any persistent registration (SPC-2 RESERVE/RELEASE then conflict)

    def conflicts(self, nexus: str, opcode: int) -> bool:
        """True if `opcode` from `nexus` must end in RESERVATION CONFLICT."""
        if self.spc2_holder is not None:
            return nexus != self.spc2_holder and not SPC2_ALLOWED[opcode]
        pr_type = self.pr_type
        access = ACCESS[opcode]
        if not pr_type or access == ALLOWED or nexus == self.holder:
            return False
        if pr_type in REGISTRANTS_ONLY or pr_type in ALL_REGISTRANTS:
            if nexus in self.registered:
                return False
        return access == WRITES or pr_type in EXCLUSIVE_ACCESS_TYPES

    def to_dict(self) -> dict:
        return {"reserved": self.reserved, "spc2_holder": self.spc2_holder, "pr_type": self.pr_type,
                "holder": self.holder, "registered": sorted(self.registered), "registrations": self.registrations}

    @classmethod
    def from_dict(cls, body: dict) -> "ConflictView":
        return cls(body["reserved"], body["spc2_holder"], body["pr_type"], body["holder"],
                   frozenset(body["registered"]), body["registrations"])


NOTHING_RESERVED = ConflictView()
