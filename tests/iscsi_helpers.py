"""Builders of initiator PDUs for the sans-I/O iSCSI unit tests."""
from __future__ import annotations

import struct

from target.iscsi import pdu as P
from target.iscsi.negotiation import encode_text

BHS = struct.Struct(">BBBBIQ8I")


def build(opcode: int, flags: int = 0x80, data: bytes = b"", *, immediate=False, b2=0, b3=0, lun=0, itt=1,
          w20=0, w24=0, w28=0, w32=0, w36=0, w40=0, w44=0, cdb: bytes = b"") -> bytes:
    header = BHS.pack(opcode | (0x40 if immediate else 0), flags, b2, b3, len(data), lun, itt, w20, w24, w28,
                      w32, w36, w40, w44)
    if cdb:
        header = header[:32] + cdb.ljust(16, b"\0")
    return header + data + P.padding(len(data))


def login_request(keys, *, csg=1, nsg=3, transit=True, isid=0x23D000000001, tsih=0, itt=0, cmd_sn=1,
                  exp_stat_sn=0, cont=False) -> bytes:
    flags = (0x80 if transit else 0) | (0x40 if cont else 0) | (csg << 2) | (nsg if transit else 0)
    return build(P.LOGIN_REQUEST, flags, encode_text(keys), lun=(isid << 16) | tsih, itt=itt, w24=cmd_sn,
                 w28=exp_stat_sn)


def scsi_command(cdb: bytes, *, itt=1, cmd_sn=1, edtl=0, read=False, write=False, final=True, data=b"",
                 lun=0, immediate=False) -> bytes:
    flags = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | 1
    return build(P.SCSI_COMMAND, flags, data, immediate=immediate, lun=lun << 48, itt=itt, w20=edtl,
                 w24=cmd_sn, cdb=cdb)


def data_out(data: bytes, *, itt=1, ttt=P.RESERVED_TAG, data_sn=0, offset=0, final=True) -> bytes:
    return build(P.DATA_OUT, 0x80 if final else 0, data, itt=itt, w20=ttt, w36=data_sn, w40=offset)


class Answer:
    """A PDU the target sent, its BHS fields under the names RFC 7143 gives them (the target itself decodes only
    requests). Bytes 36..47 mean something different per opcode: each meaning has its name below."""

    __slots__ = ("opcode", "flags", "response", "status", "ahs_len", "data_len", "lun_field", "itt", "ttt",
                 "stat_sn", "exp_cmd_sn", "max_cmd_sn", "_w36", "_w40", "_w44")

    def __init__(self, header: bytes):
        (self.opcode, self.flags, self.response, self.status, lengths, self.lun_field, self.itt, self.ttt,
         self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn, self._w36, self._w40, self._w44) = P.BHS.unpack(header)
        self.ahs_len, self.data_len = (lengths >> 24) * 4, lengths & 0xFFFFFF

    data_sn = exp_data_sn = r2t_sn = property(lambda self: self._w36)
    login_status = property(lambda self: self._w36 >> 16)              # Status-Class, Status-Detail
    buffer_offset = property(lambda self: self._w40)
    time2wait = property(lambda self: self._w40 >> 16)
    residual_count = desired_length = property(lambda self: self._w44)
    reason = property(lambda self: self.response)                      # of a Reject


def nop_out(data: bytes = b"", *, itt=1, ttt=P.RESERVED_TAG, cmd_sn=0, immediate=False) -> bytes:
    return build(P.NOP_OUT, 0x80, data, immediate=immediate, itt=itt, w20=ttt, w24=cmd_sn)


def task_management(function: int, *, itt, referenced_task_tag=0, cmd_sn=0, ref_cmd_sn=0, lun=0) -> bytes:
    """An immediate Task Management Function Request (as initiators send them)."""
    return build(P.TASK_MGMT_REQUEST, 0x80 | function, immediate=True, lun=lun << 48, itt=itt,
                 w20=referenced_task_tag, w24=cmd_sn, w32=ref_cmd_sn)


def text_request(data: bytes = b"", *, itt=3, ttt=P.RESERVED_TAG, cmd_sn=1, cont=False) -> bytes:
    return build(P.TEXT_REQUEST, 0x40 if cont else 0x80, data, itt=itt, w20=ttt, w24=cmd_sn)


def logout_request(*, itt, cmd_sn, reason=0) -> bytes:
    return build(P.LOGOUT_REQUEST, 0x80 | reason, itt=itt, w24=cmd_sn)


def split(stream) -> list[tuple[Answer, bytes]]:
    """Decode every target PDU in a byte stream (or a list of buffers): [(pdu, data)]."""
    if not isinstance(stream, (bytes, bytearray)):
        stream = b"".join(bytes(b) for b in stream)
    out = []
    pos = 0
    while pos < len(stream):
        pdu = Answer(stream[pos:pos + P.BHS_LEN])
        pos += P.BHS_LEN + pdu.ahs_len
        out.append((pdu, stream[pos:pos + pdu.data_len]))
        pos += pdu.data_len + P.pad_len(pdu.data_len)
    return out
