"""A unit's reservations as a worker checks them per I/O: the access class of every opcode and the `ConflictView`,
the small immutable object compiled from the authority's state (coordinator/unit_state/reservations.py, whose
`Reservations.view()` gives the map it is built from): one attribute test when nothing is reserved.
"""
from __future__ import annotations

from dataclasses import dataclass

from coordinator.unit_state.reservations import ALL_REGISTRANTS, EXCLUSIVE_ACCESS_TYPES, REGISTRANTS_ONLY

# How a command meets a reservation: every row of the command table (op.py, target.py) carries one PR class and
# maybe SPC2_ALLOWED (SPC-4 table 66, SBC-3 table 13)
PR_ALLOWED = 0      # never conflicts with a persistent reservation (PR IN/OUT do their own checks)
PR_READ = 1         # allowed under Write Exclusive, conflicts under Exclusive Access
PR_WRITE = 2        # conflicts under both
_PR_CLASS = 0x03
# Served to other nexuses while an SPC-2 reservation is held: INQUIRY, REQUEST SENSE, REPORT LUNS, REPORT
# SUPPORTED OPCODES; RESERVE/RELEASE(6/10) and PR IN/OUT reach the state machine, which decides (a worker's view
# may lag the authority, e.g. after another worker died holding the reservation).
SPC2_ALLOWED = 0x04


@dataclass(frozen=True)
class ConflictView:
    """What a worker needs per I/O: who may do what. `reserved` False means nothing can conflict."""
    reserved: bool = False
    spc2_holder: str | None = None
    pr_type: int = 0
    holder: str | None = None               # None for the all-registrants types
    registered: frozenset = frozenset()
    registrations: bool = False             # any persistent registration (SPC-2 RESERVE/RELEASE then conflict)

    def conflicts(self, nexus: str, access: int) -> bool:
        """True if a command from `nexus` meeting reservations as `access` (its row's) must end in RESERVATION
        CONFLICT."""
        if self.spc2_holder is not None:
            return nexus != self.spc2_holder and not access & SPC2_ALLOWED
        pr_type = self.pr_type
        pr_class = access & _PR_CLASS
        if not pr_type or pr_class == PR_ALLOWED or nexus == self.holder:
            return False
        if pr_type in REGISTRANTS_ONLY or pr_type in ALL_REGISTRANTS:
            if nexus in self.registered:
                return False
        return pr_class == PR_WRITE or pr_type in EXCLUSIVE_ACCESS_TYPES

    def to_dict(self) -> dict:
        return {"reserved": self.reserved, "spc2_holder": self.spc2_holder, "pr_type": self.pr_type,
                "holder": self.holder, "registered": sorted(self.registered), "registrations": self.registrations}

    @classmethod
    def from_dict(cls, body: dict) -> "ConflictView":
        return cls(body["reserved"], body["spc2_holder"], body["pr_type"], body["holder"],
                   frozenset(body["registered"]), body["registrations"])


NOTHING_RESERVED = ConflictView()
