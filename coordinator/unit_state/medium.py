"""The medium of a logical unit: whether a removable one is loaded and which I_T nexuses prevent its removal
(SBC-3 4.14; START STOP UNIT 5.25, PREVENT ALLOW MEDIUM REMOVAL 5.13), and whether it is being sanitized or is
in sanitize failure mode (SBC-4 4.11, sanitize.py).

Pure state. It lives in the coordinator (coordinator/unit_service.py, MediumRequest), since one nexus's PREVENT
binds every other nexus on every worker and a sanitize stops the unit on every worker; workers cache only whether
the medium is loaded and its sanitize state, which they check per command.
"""
from __future__ import annotations

from .sense import (ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB, MEDIUM_REMOVAL_PREVENTED, NOT_READY,
                    SANITIZE_IN_PROGRESS)

PREVENT, ALLOW, LOAD, EJECT = "prevent", "allow", "load", "eject"
# a sanitize begins (restricted or AUSE: its failure may be left by EXIT FAILURE MODE), ends, fails; EXIT
SANITIZE, SANITIZE_AUSE, SANITIZED, SANITIZE_FAILED, EXIT_FAILURE_MODE = (
    "sanitize", "sanitize-ause", "sanitized", "sanitize-failed", "exit-failure-mode")
SANITIZE_STARTS = (SANITIZE, SANITIZE_AUSE)
ACTIONS = (PREVENT, ALLOW, LOAD, EJECT, SANITIZE, SANITIZE_AUSE, SANITIZED, SANITIZE_FAILED, EXIT_FAILURE_MODE)
MOVES = (LOAD, EJECT, SANITIZE, SANITIZE_AUSE, SANITIZED, SANITIZE_FAILED, EXIT_FAILURE_MODE)   # seen by all
IDLE, SANITIZING, SANITIZE_FAILURE = 0, 1, 2          # the sanitize state


class MediumState:
    __slots__ = ("loaded", "preventing", "sanitize", "ause", "sanitizer")

    def __init__(self, loaded: bool = True, preventing=(), sanitize: int = IDLE, ause: bool = False,
                 sanitizer: str | None = None):
        self.loaded = loaded
        self.preventing: set[str] = set(preventing)
        self.sanitize = sanitize
        self.ause = ause
        self.sanitizer = sanitizer          # who runs the sanitize (a worker), so its death can fail it

    def request(self, nexus: str, action: str, owner: str | None = None) -> tuple[int, int] | None:
        """Apply one action of `nexus` (through `owner`); the sense key and ASC/ASCQ refusing it, or None."""
        if action == PREVENT:
            self.preventing.add(nexus)
        elif action == ALLOW:
            self.preventing.discard(nexus)
        elif action in (LOAD, EJECT):
            if self.preventing:
                return ILLEGAL_REQUEST, MEDIUM_REMOVAL_PREVENTED   # loading is moving the medium too (libiscsi agrees)
            self.loaded = action == LOAD
        elif self.sanitize == SANITIZING and action in (SANITIZE, SANITIZE_AUSE, EXIT_FAILURE_MODE):
            return NOT_READY, SANITIZE_IN_PROGRESS
        elif action in (SANITIZE, SANITIZE_AUSE):
            self.sanitize, self.ause, self.sanitizer = SANITIZING, action == SANITIZE_AUSE, owner
        elif action in (SANITIZED, SANITIZE_FAILED):
            self.sanitize, self.sanitizer = (IDLE if action == SANITIZED else SANITIZE_FAILURE), None
        elif action == EXIT_FAILURE_MODE:
            if self.sanitize == SANITIZE_FAILURE and not self.ause:
                return ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB        # only a sanitize that completes ends it
            self.sanitize = IDLE
        else:
            raise ValueError(f"unknown medium action {action!r}")
        return None

    def interrupted(self, owner: str) -> bool:
        """`owner` is gone: the sanitize it ran fails (the unit enters sanitize failure mode). True if so."""
        if self.sanitize != SANITIZING or self.sanitizer != owner:
            return False
        self.sanitize, self.sanitizer = SANITIZE_FAILURE, None
        return True

    def nexus_lost(self, nexus: str) -> None:
        self.preventing.discard(nexus)

    def reset(self) -> None:
        """A LUN or target reset ends every prevention (SBC-3 5.13); the medium stays where it is, a sanitize
        goes on (SBC-4 4.11.2)."""
        self.preventing.clear()

    def sanitize_record(self) -> dict | None:
        """What must outlive the target while a sanitize runs or failed: None when there is nothing."""
        return None if self.sanitize == IDLE else {"ause": self.ause}

    def failure_ended(self) -> None:
        """Sanitize failure mode ended elsewhere: a sanitize completed, or EXIT FAILURE MODE, through another node
        (SBC-4 4.11: either ends it for the unit)."""
        self.sanitize, self.ause, self.sanitizer = IDLE, False, None

    def after_restart(self, record: dict) -> None:
        """The target restarted with `record` saved: a sanitize it did not finish failed (failure mode)."""
        self.sanitize, self.ause, self.sanitizer = SANITIZE_FAILURE, bool(record.get("ause")), None

    def summary(self) -> dict:
        """What workers cache: {loaded, sanitize}."""
        return {"loaded": self.loaded, "sanitize": self.sanitize}

    def snapshot(self) -> list:
        return [self.loaded, sorted(self.preventing), self.sanitize, self.ause, self.sanitizer]

    @classmethod
    def restored(cls, snapshot) -> MediumState:
        return cls(*snapshot) if snapshot else cls()
