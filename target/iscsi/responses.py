"""Encoders for the PDUs that carry command results: Data-In sequences, SCSI Response, R2T (RFC 7143 §11.4-8).

Data segments are never copied: the output is a list of buffers (headers, memoryview slices, padding) for
one gathered send.
"""
from __future__ import annotations

from ..backstore.buffers import headroom_view
from . import pdu as P

DATA_IN_FINAL = 0x80
OVERFLOW = 0x04
UNDERFLOW = 0x02
STATUS_PRESENT = 0x01
RESPONSE_FINAL = 0x80
RESPONSE_OVERFLOW = 0x04
RESPONSE_UNDERFLOW = 0x02


def residual_flags(natural: int, expected: int) -> tuple[int, int]:
    """(flag bits, residual count) for a transfer the command wanted to be `natural` bytes long."""
    if natural > expected:
        return OVERFLOW, natural - expected
    if natural < expected:
        return UNDERFLOW, expected - natural
    return 0, 0


def data_in(out: list, data, lun_field: int, itt: int, seq, segment: int, burst: int,
            status: int | None, residual: tuple[int, int]) -> int:
    """Append Data-In PDUs for `data` to `out`; with `status` set, the last PDU carries it (S bit).

    `seq` is (StatSN, ExpCmdSN, MaxCmdSN). Returns the number of PDUs (the next ExpDataSN). Data that fits
    one PDU and came from a backstore buffer with headroom gets its header written in front of it, so header
    and data leave as one piece.
    """
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    total = len(data)
    if total <= segment and total <= burst:
        flags, w44, sn = DATA_IN_FINAL, 0, 0
        if status is not None:
            flags |= STATUS_PRESENT | residual[0]
            w44 = residual[1]
            sn = stat_sn
        whole = headroom_view(data)
        if whole is not None:
            P.BHS.pack_into(whole, 0, P.DATA_IN, flags, 0, status or 0, total, lun_field, itt, P.RESERVED_TAG,
                            sn, exp_cmd_sn, max_cmd_sn, 0, 0, w44)
            out.append(whole)
        else:
            out.append(P.BHS.pack(P.DATA_IN, flags, 0, status or 0, total, lun_field, itt, P.RESERVED_TAG, sn,
                                  exp_cmd_sn, max_cmd_sn, 0, 0, w44))
            out.append(data)
        if total & 3:
            out.append(P.padding(total))
        return 1
    view = memoryview(data)
    offset = 0
    data_sn = 0
    encode = P.encode
    while offset < total:
        length = min(segment, total - offset, burst - offset % burst)
        end = offset + length
        flags = 0
        w44 = 0
        sn = 0
        if end == total:
            flags = DATA_IN_FINAL
            if status is not None:
                flags |= STATUS_PRESENT | residual[0]
                w44 = residual[1]
                sn = stat_sn
        elif end % burst == 0:
            flags = DATA_IN_FINAL
        out.append(encode(P.DATA_IN, flags, length, b3=status or 0, lun=lun_field, itt=itt, w20=P.RESERVED_TAG,
                          w24=sn, w28=exp_cmd_sn, w32=max_cmd_sn, w36=data_sn, w40=offset, w44=w44))
        out.append(view[offset:end])
        if length & 3:
            out.append(P.padding(length))
        offset = end
        data_sn += 1
    return data_sn


def scsi_response(out: list, itt: int, seq, status: int, sense: bytes | None, exp_data_sn: int,
                  residual: tuple[int, int]) -> None:
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    data = len(sense).to_bytes(2, "big") + sense if sense else b""
    out.append(P.frame(P.encode(P.SCSI_RESPONSE, RESPONSE_FINAL | residual[0], len(data), b3=status, itt=itt,
                                w24=stat_sn, w28=exp_cmd_sn, w32=max_cmd_sn, w36=exp_data_sn,
                                w44=residual[1]), data))


def r2t(out: list, lun_field: int, itt: int, ttt: int, seq, r2t_sn: int, offset: int, length: int) -> None:
    stat_sn, exp_cmd_sn, max_cmd_sn = seq
    out.append(P.encode(P.R2T, P.FINAL, 0, lun=lun_field, itt=itt, w20=ttt, w24=stat_sn, w28=exp_cmd_sn,
                        w32=max_cmd_sn, w36=r2t_sn, w40=offset, w44=length))
