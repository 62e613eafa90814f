"""iSCSI PDU codec (RFC 7143 §11): decode what an initiator sends, encode what a target sends.

Every Basic Header Segment is 48 bytes with the same skeleton: opcode byte, a flags byte, two opcode-specific
bytes, TotalAHSLength + DataSegmentLength, an 8-byte LUN-or-opcode-specific field and eight 32-bit words.
One precompiled `struct.Struct` covers them all; the per-opcode classes only name the words.
"""
from __future__ import annotations

import struct
from operator import attrgetter

BHS_LEN = 48
BHS = struct.Struct(">BBBBIQ8I")
RESERVED_TAG = 0xFFFFFFFF

# Initiator opcodes
NOP_OUT = 0x00
SCSI_COMMAND = 0x01
TASK_MGMT_REQUEST = 0x02
LOGIN_REQUEST = 0x03
TEXT_REQUEST = 0x04
DATA_OUT = 0x05
LOGOUT_REQUEST = 0x06
SNACK_REQUEST = 0x10
# Target opcodes
NOP_IN = 0x20
SCSI_RESPONSE = 0x21
TASK_MGMT_RESPONSE = 0x22
LOGIN_RESPONSE = 0x23
TEXT_RESPONSE = 0x24
DATA_IN = 0x25
LOGOUT_RESPONSE = 0x26
R2T = 0x31
ASYNC_MESSAGE = 0x32
REJECT = 0x3F

# Reject reasons (RFC 7143 §11.17.1)
REJECT_DATA_DIGEST = 0x02
REJECT_SNACK = 0x03
REJECT_PROTOCOL_ERROR = 0x04
REJECT_COMMAND_NOT_SUPPORTED = 0x05
REJECT_IMMEDIATE_COMMAND = 0x06
REJECT_TASK_IN_PROGRESS = 0x07
REJECT_INVALID_DATA_ACK = 0x08
REJECT_INVALID_PDU_FIELD = 0x09
REJECT_OUT_OF_RESOURCES = 0x0A
REJECT_WAITING_FOR_LOGOUT = 0x0C

FINAL = 0x80


def _word(name: str) -> property:
    return property(attrgetter(name))


class Pdu:
    """A received PDU: the BHS split into raw fields, plus AHS and data segment."""

    __slots__ = ("opcode", "immediate", "flags", "b2", "b3", "ahs_len", "data_len", "lun_field",
                 "w16", "w20", "w24", "w28", "w32", "w36", "w40", "w44", "header", "ahs", "data",
                 "data_digest_error")

    itt = _word("w16")

    @property
    def final(self) -> bool:
        return bool(self.flags & FINAL)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} itt=0x{self.w16:08x} len={self.data_len}>"


class NopOut(Pdu):
    __slots__ = ()
    ttt = _word("w20")
    cmd_sn = _word("w24")
    exp_stat_sn = _word("w28")


class ScsiCommand(Pdu):
    __slots__ = ()
    expected_length = _word("w20")
    cmd_sn = _word("w24")
    exp_stat_sn = _word("w28")

    @property
    def read(self) -> bool:
        return bool(self.flags & 0x40)

    @property
    def write(self) -> bool:
        return bool(self.flags & 0x20)

    @property
    def cdb(self) -> bytes:
        if self.ahs:
            return self.header[32:48] + _extended_cdb(self.ahs)
        return self.header[32:48]


class TaskMgmtRequest(Pdu):
    __slots__ = ()
    referenced_tag = _word("w20")
    cmd_sn = _word("w24")
    exp_stat_sn = _word("w28")
    ref_cmd_sn = _word("w32")

    @property
    def function(self) -> int:
        return self.flags & 0x7F


class LoginRequest(Pdu):
    __slots__ = ()
    cmd_sn = _word("w24")
    exp_stat_sn = _word("w28")

    transit = property(lambda self: bool(self.flags & 0x80))
    cont = property(lambda self: bool(self.flags & 0x40))
    csg = property(lambda self: (self.flags >> 2) & 3)
    nsg = property(lambda self: self.flags & 3)
    version_max = property(attrgetter("b2"))
    version_min = property(attrgetter("b3"))
    isid = property(lambda self: self.lun_field >> 16)
    tsih = property(lambda self: self.lun_field & 0xFFFF)
    cid = property(lambda self: self.w20 >> 16)


class TextRequest(Pdu):
    __slots__ = ()
    ttt = _word("w20")
    cmd_sn = _word("w24")
    exp_stat_sn = _word("w28")
    cont = property(lambda self: bool(self.flags & 0x40))


class DataOut(Pdu):
    __slots__ = ()
    ttt = _word("w20")
    exp_stat_sn = _word("w28")
    data_sn = _word("w36")
    buffer_offset = _word("w40")


class LogoutRequest(Pdu):
    __slots__ = ()
    cmd_sn = _word("w24")
    exp_stat_sn = _word("w28")
    reason = property(lambda self: self.flags & 0x7F)
    cid = property(lambda self: self.w20 >> 16)


class SnackRequest(Pdu):
    __slots__ = ()
    ttt = _word("w20")
    exp_stat_sn = _word("w28")
    begrun = _word("w40")
    run_length = _word("w44")


class UnknownPdu(Pdu):
    """An opcode a target never receives; answered with a Reject."""
    __slots__ = ()


PDU_CLASSES: dict[int, type[Pdu]] = {
    NOP_OUT: NopOut, SCSI_COMMAND: ScsiCommand, TASK_MGMT_REQUEST: TaskMgmtRequest,
    LOGIN_REQUEST: LoginRequest, TEXT_REQUEST: TextRequest, DATA_OUT: DataOut,
    LOGOUT_REQUEST: LogoutRequest, SNACK_REQUEST: SnackRequest,
}


def _extended_cdb(ahs: bytes) -> bytes:
    """The Extended CDB AHS (type 1) carries CDB bytes beyond the first 16."""
    pos = 0
    while pos + 4 <= len(ahs):
        length = int.from_bytes(ahs[pos:pos + 2], "big")
        if ahs[pos + 2] == 1:
            return bytes(ahs[pos + 4:pos + 3 + length])
        pos += 4 + ((length + 3) & ~3)
    return b""


def decode_bhs(header: bytes) -> Pdu:
    """Split a 48-byte BHS into a typed PDU (AHS and data are attached by the framing decoder)."""
    (b0, flags, b2, b3, lengths, lun_field,
     w16, w20, w24, w28, w32, w36, w40, w44) = BHS.unpack(header)
    opcode = b0 & 0x3F
    cls = PDU_CLASSES.get(opcode, UnknownPdu)
    pdu = cls.__new__(cls)
    pdu.opcode = opcode
    pdu.immediate = bool(b0 & 0x40)
    pdu.flags = flags
    pdu.b2 = b2
    pdu.b3 = b3
    pdu.ahs_len = (lengths >> 24) * 4
    pdu.data_len = lengths & 0xFFFFFF
    pdu.lun_field = lun_field
    pdu.w16, pdu.w20, pdu.w24, pdu.w28 = w16, w20, w24, w28
    pdu.w32, pdu.w36, pdu.w40, pdu.w44 = w32, w36, w40, w44
    pdu.header = header
    pdu.ahs = b""
    pdu.data = b""
    pdu.data_digest_error = False   # the framing decoder found the DataDigest wrong: the data is not to be used
    return pdu


def decode_bhs_with_data(raw: bytes) -> Pdu:
    """Decode one whole PDU held in `raw` (for tests and tools; the framing decoder is the streaming path)."""
    pdu = decode_bhs(raw[:BHS_LEN])
    start = BHS_LEN + pdu.ahs_len
    pdu.ahs = raw[BHS_LEN:start]
    pdu.data = raw[start:start + pdu.data_len]
    return pdu


def pad_len(n: int) -> int:
    return -n & 3


_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")


def padding(n: int) -> bytes:
    """Zero bytes that bring a data segment of length n to a 4-byte boundary."""
    return _PADDING[n & 3]


def encode(opcode: int, flags: int, data_len: int = 0, *, b2: int = 0, b3: int = 0, lun: int = 0,
           itt: int = RESERVED_TAG, w20: int = 0, w24: int = 0, w28: int = 0, w32: int = 0,
           w36: int = 0, w40: int = 0, w44: int = 0) -> bytes:
    """Pack a target BHS; the data segment (and padding) is sent after it by the caller."""
    return BHS.pack(opcode, flags, b2, b3, data_len, lun, itt, w20, w24, w28, w32, w36, w40, w44)


def frame(header: bytes, data: bytes = b"") -> bytes:
    """A whole PDU as one bytes object: header, data and padding."""
    return header + data + padding(len(data)) if data else header


# --- LUN field (SAM-5 §4.7): flat and peripheral addressing of single-level LUNs -------------------------

def decode_lun(field: int) -> int:
    top = field >> 48
    method = top >> 14
    if field & 0xFFFFFFFFFFFF:
        return -1
    if method == 1:
        return top & 0x3FFF
    if method == 0 and not top & 0x3F00:
        return top
    return -1


def encode_lun(lun: int) -> int:
    if lun < 256:
        return lun << 48
    return (0x4000 | lun) << 48
