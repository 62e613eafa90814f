"""Command numbering (RFC 7143 §4.2.2): the CmdSN window and in-order delivery of non-immediate commands.

A command is outstanding until its response has been sent. The window accepts a command only up to the highest
MaxCmdSN announced so far (§4.2.2.1: anything past it is ignored), so a client that sends without reading what
we announce gets no further than we let it. While the connection's output is over its bound, the window is
frozen: MaxCmdSN stops advancing.
"""
from __future__ import annotations

from typing import Final

from .pdu import Pdu

MASK: Final = 0xFFFFFFFF
HALF: Final = 1 << 31


def serial_lt(a: int, b: int) -> bool:
    """a < b in 32-bit serial number arithmetic (RFC 1982)."""
    return a != b and ((b - a) & MASK) < HALF


class CommandWindow:
    """ExpCmdSN/MaxCmdSN bookkeeping; holds early commands until the gap before them is filled."""

    __slots__ = ("exp_cmd_sn", "depth", "outstanding", "announced", "frozen", "early")

    def __init__(self, exp_cmd_sn: int, depth: int) -> None:
        self.exp_cmd_sn = exp_cmd_sn & MASK
        self.depth = depth
        self.outstanding = 0          # commands received whose response has not been sent yet
        self.announced = (exp_cmd_sn - 1 + depth) & MASK    # the highest MaxCmdSN announced (the login's)
        self.frozen = False
        self.early: dict[int, Pdu] = {}     # CmdSN -> a PDU that came before the gap was filled

    @property
    def max_cmd_sn(self) -> int:
        if self.frozen:
            return self.announced
        return (self.exp_cmd_sn - 1 + max(1, self.depth - self.outstanding)) & MASK

    def announce(self) -> int:
        """MaxCmdSN for a PDU going out, remembered as announced (`max_cmd_sn` and `serial_lt` written out: this
        runs for every response)."""
        announced = self.announced
        if self.frozen:
            return announced
        room = self.depth - self.outstanding   # max(1, room) written out: builtin min/max parse their arguments
        max_cmd_sn = (self.exp_cmd_sn - 1 + (room if room > 1 else 1)) & MASK
        if announced != max_cmd_sn and ((max_cmd_sn - announced) & MASK) < HALF:
            self.announced = max_cmd_sn
        return max_cmd_sn

    @property
    def closed(self) -> bool:
        """The initiator may send no command until a higher MaxCmdSN reaches it."""
        return serial_lt(self.announced, self.exp_cmd_sn)

    def accept(self, cmd_sn: int, pdu: Pdu) -> bool:
        """True if `pdu` is the next in order (ExpCmdSN now past it): deliver it, then any `early` ones
        `released()` gives. False if it is early (held until the gap before it is filled), stale or outside the
        window."""
        exp = self.exp_cmd_sn
        announced = self.announced      # below, serial_lt(announced, cmd_sn) written out: once per command
        if cmd_sn != exp or (cmd_sn != announced and ((cmd_sn - announced) & MASK) < HALF):
            if serial_lt(exp, cmd_sn) and not serial_lt(self.announced, cmd_sn):
                self.early.setdefault(cmd_sn, pdu)
            return False
        self.exp_cmd_sn = (exp + 1) & MASK
        return True

    def released(self) -> list[Pdu]:
        """The early PDUs now in order (after `accept`), ExpCmdSN past them."""
        ready = []
        exp = self.exp_cmd_sn
        early = self.early
        while early and exp in early:
            ready.append(early.pop(exp))
            exp = (exp + 1) & MASK
        self.exp_cmd_sn = exp
        return ready
