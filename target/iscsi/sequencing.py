"""Command numbering (RFC 7143 §4.2.2): the CmdSN window and in-order delivery of non-immediate commands.

A command is outstanding until its response has been sent. The connection can freeze the window (`freeze`)
while its unsent output is over its bound: MaxCmdSN stops advancing, and commands past it are ignored (§4.2.2.1),
whatever CmdSN they carry."""
from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 1 << 31


def serial_lt(a: int, b: int) -> bool:
    """a < b in 32-bit serial number arithmetic (RFC 1982)."""
    return a != b and ((b - a) & MASK) < HALF


class CommandWindow:
    """ExpCmdSN/MaxCmdSN bookkeeping; holds early commands until the gap before them is filled."""

    __slots__ = ("exp_cmd_sn", "depth", "outstanding", "frozen", "_early")

    def __init__(self, exp_cmd_sn: int, depth: int):
        self.exp_cmd_sn = exp_cmd_sn & MASK
        self.depth = depth
        self.outstanding = 0          # commands received whose response has not been sent yet
        self.frozen: int | None = None  # the MaxCmdSN held while the window is frozen
        self._early: dict[int, object] = {}

    @property
    def max_cmd_sn(self) -> int:
        if self.frozen is not None:
            return self.frozen
        return (self.exp_cmd_sn - 1 + max(1, self.depth - self.outstanding)) & MASK

    def freeze(self) -> None:
        if self.frozen is None:
            self.frozen = self.max_cmd_sn

    def thaw(self) -> None:
        self.frozen = None

    def accept(self, cmd_sn: int, pdu) -> list:
        """The PDUs now deliverable in order (empty if `pdu` is early, stale or outside the window)."""
        exp = self.exp_cmd_sn
        if cmd_sn != exp or self.frozen is not None and serial_lt(self.frozen, cmd_sn):
            if serial_lt(exp, cmd_sn) and not serial_lt(self.max_cmd_sn, cmd_sn):
                self._early.setdefault(cmd_sn, pdu)
            return []
        ready = [pdu]
        exp = (exp + 1) & MASK
        early = self._early
        while early and exp in early:
            ready.append(early.pop(exp))
            exp = (exp + 1) & MASK
        self.exp_cmd_sn = exp
        return ready
