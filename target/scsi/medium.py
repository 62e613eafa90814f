"""The removable medium of a unit configured `removable = true` (SBC-3 4.14; START STOP UNIT 5.25, PREVENT
ALLOW MEDIUM REMOVAL 5.13): whether the medium is loaded, and which I_T nexuses prevent its removal.

Pure state. With a coordinator it lives there (coordinator/reservations_service.py, "medium.request"), since
one nexus's PREVENT binds every other nexus on every worker; workers cache only whether the medium is loaded,
which they check per command. Built alone (tests), the ScsiTarget keeps it.
"""
from __future__ import annotations

from .sense import MEDIUM_REMOVAL_PREVENTED

PREVENT, ALLOW, LOAD, EJECT = "prevent", "allow", "load", "eject"
ACTIONS = (PREVENT, ALLOW, LOAD, EJECT)


class MediumState:
    __slots__ = ("loaded", "preventing")

    def __init__(self, loaded: bool = True, preventing=()):
        self.loaded = loaded
        self.preventing: set[str] = set(preventing)

    def request(self, nexus: str, action: str) -> int | None:
        """Apply one action of `nexus`; the ASC/ASCQ of an ILLEGAL REQUEST refusing it, or None."""
        if action == PREVENT:
            self.preventing.add(nexus)
        elif action == ALLOW:
            self.preventing.discard(nexus)
        elif action in (LOAD, EJECT):
            if self.preventing:
                return MEDIUM_REMOVAL_PREVENTED      # loading is moving the medium too (libiscsi agrees)
            self.loaded = action == LOAD
        else:
            raise ValueError(f"unknown medium action {action!r}")
        return None

    def nexus_lost(self, nexus: str) -> None:
        self.preventing.discard(nexus)

    def reset(self) -> None:
        """A LUN or target reset ends every prevention (SBC-3 5.13); the medium stays where it is."""
        self.preventing.clear()

    def snapshot(self) -> list:
        return [self.loaded, sorted(self.preventing)]

    @classmethod
    def restored(cls, snapshot) -> MediumState:
        return cls(*snapshot) if snapshot else cls()
