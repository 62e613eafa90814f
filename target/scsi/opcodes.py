"""MAINTENANCE IN (0xA3): REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) and REPORT SUPPORTED TASK MANAGEMENT
FUNCTIONS (SPC-4 6.36), both answered from the command table the target dispatches with, so what is reported
is what is served.

CDB usage data marks every bit of a field the device server decodes; for the commands with DPO and FUA (whose
support the mode pages' DPOFUA bit claims) byte 1 includes them. Timeouts are not specified (0).
"""
from __future__ import annotations

from struct import Struct

from .op import ServiceActions
from .sense import invalid_cdb

REPORT_SUPPORTED_OPCODES, REPORT_SUPPORTED_TMFS = 0x0C, 0x0D
ALL, ONE_OPCODE, ONE_SERVICE_ACTION, ONE_EITHER = 0, 1, 2, 3
SUPPORTED, NOT_SUPPORTED = 0x03, 0x01
CTDP = 0x02
_MAINTENANCE_IN = Struct(">xBBBHIx")
_DESCRIPTOR = Struct(">BxHxBH")
_ONE = Struct(">xBH")
_TIMEOUTS = Struct(">HxB8x")                # length 0x0A, command specific 0, nominal and recommended 0
_TIMEOUTS_DESCRIPTOR = _TIMEOUTS.pack(0x0A, 0)
# ATS, ATSS, CTSS, LURS, TRS: ABORT TASK (SET), CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET
_TMFS = bytes([0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0, 0, 0])


def make_maintenance_in(command_table):
    """The MAINTENANCE IN handler over `command_table()`: a list of 256 rows (op.py's `Op`), with handler None
    where the opcode is not served, and the service actions of each in its row."""

    def maintenance_in(target, unit, task) -> bytes:
        action, options, opcode, service_action, alloc = _MAINTENANCE_IN.unpack_from(task.cdb)
        action &= 0x1F
        if action == REPORT_SUPPORTED_TMFS:
            return _TMFS[:alloc]
        if action != REPORT_SUPPORTED_OPCODES:
            raise invalid_cdb(1, 4)
        timeouts = bool(options & 0x80)
        options &= 0x07
        table = command_table()
        if options == ALL:
            data = _all_commands(table, timeouts, unit)
        elif options in (ONE_OPCODE, ONE_SERVICE_ACTION, ONE_EITHER):
            data = _one_command(table, options, opcode, service_action, timeouts, unit)
        else:
            raise invalid_cdb(2, 2)
        return data[:alloc]

    return maintenance_in


def _served(unit, actions: ServiceActions, action: int) -> bool:
    attribute = dict(actions.unit_dependent).get(action)
    return attribute is None or unit is None or bool(getattr(unit, attribute))


def _all_commands(table, timeouts: bool, unit) -> bytes:
    flags = CTDP if timeouts else 0
    suffix = _TIMEOUTS_DESCRIPTOR if timeouts else b""
    descriptors = []
    for opcode, op in enumerate(table):
        if op.handler is None:
            continue
        actions = op.actions
        for action in (a for a in actions.served if _served(unit, actions, a)) if actions else (0,):
            descriptors.append(_DESCRIPTOR.pack(opcode, action, flags | (1 if actions else 0), op.length) + suffix)
    body = b"".join(descriptors)
    return len(body).to_bytes(4, "big") + body


def _one_command(table, options: int, opcode: int, service_action: int, timeouts: bool, unit) -> bytes:
    op = table[opcode]
    actions = op.actions
    if options == ONE_OPCODE and actions or options == ONE_SERVICE_ACTION and not actions:
        raise invalid_cdb(2, 2)
    if op.handler is None or actions and (service_action not in actions.served
                                          or not _served(unit, actions, service_action)):
        return _ONE.pack(NOT_SUPPORTED, 0)
    usage = bytearray([0xFF] * op.length)
    usage[0] = opcode
    usage[1] = actions.usage if actions else 0xFF
    usage[-1] = 0                   # CONTROL: NACA and LINK are not supported
    return (_ONE.pack(SUPPORTED | (0x80 if timeouts else 0), op.length) + bytes(usage)
            + (_TIMEOUTS_DESCRIPTOR if timeouts else b""))
