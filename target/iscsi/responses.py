"""Encoders of every PDU the target sends (RFC 7143 §11): Data-In sequences, SCSI Response, R2T, NOP-In, Reject,
Text, Logout, Task Management and Login Responses. The one place that knows where their fields go.

Every target BHS carries StatSN, ExpCmdSN and MaxCmdSN at bytes 24..35 (`seq`, in that order). `data_in` appends
its PDUs to an output list (data segments are never copied: headers, memoryview slices, padding for one
gathered send) and returns how many; every other encoder returns one whole PDU as bytes.
"""
from __future__ import annotations

from typing import Final

from ..buffers import headroom_view
from . import pdu as P
from .pdu import FINAL, Buf

# StatSN, ExpCmdSN, MaxCmdSN: what every target BHS carries at bytes 24..35
Seq = tuple[int, int, int]

# opcode, flags, bytes 2 and 3, TotalAHSLength and DataSegmentLength, LUN, ITT, then the words at bytes 20..44
_pack: Final = P.BHS.pack

OVERFLOW: Final = 0x04      # the residual bits, the same in Data-In and SCSI Response
UNDERFLOW: Final = 0x02
STATUS_PRESENT: Final = 0x01  # the S bit of Data-In


def residual_flags(natural: int, expected: int) -> tuple[int, int]:
    """(flag bits, residual count) for a transfer the command wanted to be `natural` bytes long."""
    if natural > expected:
        return OVERFLOW, natural - expected
    if natural < expected:
        return UNDERFLOW, expected - natural
    return 0, 0


def data_in(out: list[Buf], data: Buf, lun_field: int, itt: int, seq: Seq, segment: int, burst: int,
            status: int | None, residual: tuple[int, int]) -> int:
    """Append Data-In PDUs for `data` to `out`; with `status` set, the last PDU carries it (S bit).

    `seq` is (StatSN, ExpCmdSN, MaxCmdSN). Returns the number of PDUs (the next ExpDataSN). Data that fits
    one PDU and came from a backstore buffer with headroom gets its header written in front of it, so header
    and data leave as one piece.
    """
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    total = len(data)
    if total <= segment and total <= burst:
        flags, residual_count, sn = FINAL, 0, 0
        if status is not None:
            flags |= STATUS_PRESENT | residual[0]
            residual_count = residual[1]
            sn = stat_sn
        whole = headroom_view(data)
        if whole is not None:
            P.BHS.pack_into(whole, 0, P.DATA_IN, flags, 0, status or 0, total, lun_field, itt, P.RESERVED_TAG,
                            sn, exp_cmd_sn, max_cmd_sn, 0, 0, residual_count)
            out.append(whole)
        else:
            out.append(_pack(P.DATA_IN, flags, 0, status or 0, total, lun_field, itt, P.RESERVED_TAG, sn,
                             exp_cmd_sn, max_cmd_sn, 0, 0, residual_count))
            out.append(data)
        if total & 3:
            out.append(P.padding(total))
        return 1
    view = memoryview(data)
    offset = 0
    data_sn = 0
    pack = _pack
    while offset < total:
        length = min(segment, total - offset, burst - offset % burst)
        end = offset + length
        flags = 0
        residual_count = 0
        sn = 0
        if end == total:
            flags = FINAL
            if status is not None:
                flags |= STATUS_PRESENT | residual[0]
                residual_count = residual[1]
                sn = stat_sn
        elif end % burst == 0:
            flags = FINAL
        out.append(pack(P.DATA_IN, flags, 0, status or 0, length, lun_field, itt, P.RESERVED_TAG, sn, exp_cmd_sn,
                        max_cmd_sn, data_sn, offset, residual_count))
        out.append(view[offset:end])
        if length & 3:
            out.append(P.padding(length))
        offset = end
        data_sn += 1
    return data_sn


def scsi_response(itt: int, seq: Seq, status: int, sense: bytes | None, exp_data_sn: int,
                  residual: tuple[int, int]) -> bytes:
    """SCSI Response (§11.4), Response "command completed at target", with the sense data if any."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    data = len(sense).to_bytes(2, "big") + sense if sense else b""
    return P.frame(_pack(P.SCSI_RESPONSE, FINAL | residual[0], 0, status, len(data), 0, itt, 0,
                         stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn, 0, residual[1]), data)


def r2t(lun_field: int, itt: int, ttt: int, seq: Seq, r2t_sn: int, offset: int, length: int) -> bytes:
    """Ready To Transfer (§11.8): `length` bytes at Buffer Offset `offset`, Data-Out to carry `ttt`."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return _pack(P.R2T, FINAL, 0, 0, 0, lun_field, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, r2t_sn, offset,
                 length)


def nop_in(seq: Seq, itt: int, ttt: int, lun_field: int = 0, data: P.Buf = b"") -> bytes:
    """NOP-In (§11.19): the answer to a NOP-Out (its ITT, LUN and ping data, TTT reserved), or the target's own
    (ITT reserved; a TTT asks for an answer, the reserved TTT only tells the new MaxCmdSN)."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return P.frame(_pack(P.NOP_IN, FINAL, 0, 0, len(data), lun_field, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn,
                         0, 0, 0), data)


def reject(seq: Seq, reason: int, header: bytes) -> bytes:
    """Reject (§11.17): the rejected PDU's header is the data segment."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return P.frame(_pack(P.REJECT, FINAL, reason, 0, P.BHS_LEN, 0, P.RESERVED_TAG, 0, stat_sn, exp_cmd_sn,
                         max_cmd_sn, 0, 0, 0), header)


def text_response(seq: Seq, flags: int, lun_field: int, itt: int, ttt: int, text: bytes) -> bytes:
    """Text Response (§11.11); `flags` carries F or C, `ttt` continues an exchange (text_exchange.py)."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return P.frame(_pack(P.TEXT_RESPONSE, flags, 0, 0, len(text), lun_field, itt, ttt, stat_sn, exp_cmd_sn,
                         max_cmd_sn, 0, 0, 0), text)


def logout_response(seq: Seq, response: int, itt: int, time2wait: int, time2retain: int) -> bytes:
    """Logout Response (§11.15)."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return _pack(P.LOGOUT_RESPONSE, FINAL, response, 0, 0, 0, itt, 0, stat_sn, exp_cmd_sn, max_cmd_sn, 0,
                 (time2wait << 16) | time2retain, 0)


def task_management_response(seq: Seq, response: int, itt: int) -> bytes:
    """Task Management Function Response (§11.6)."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return _pack(P.TASK_MGMT_RESPONSE, FINAL, response, 0, 0, 0, itt, 0, stat_sn, exp_cmd_sn, max_cmd_sn, 0, 0,
                 0)


def login_response(seq: Seq, flags: int, isid: int, tsih: int, itt: int, status: int, text: bytes) -> bytes:
    """Login Response (§11.13): `flags` carries T, C, CSG and NSG; `status` is Status-Class and -Detail."""
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    return P.frame(_pack(P.LOGIN_RESPONSE, flags, 0, 0, len(text), (isid << 16) | tsih, itt, 0, stat_sn, exp_cmd_sn,
                         max_cmd_sn, status << 16, 0, 0), text)
