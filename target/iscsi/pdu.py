"""iSCSI PDU codec (RFC 7143 §11): decode what an initiator sends; the target's PDUs are encoded in responses.py.

Every Basic Header Segment is 48 bytes with the same skeleton: opcode byte, a flags byte, two opcode-specific
bytes, TotalAHSLength + DataSegmentLength, an 8-byte LUN-or-opcode-specific field and eight 32-bit words.
`decode_bhs` unpacks, with one precompiled `struct.Struct`, the fields some request's handling reads on the hot
path into the attributes of `Pdu`; each per-opcode class gives the opcode-specific words the names RFC 7143 gives
them there (properties over the same attribute: the module is compiled, target/compiled.py, so reading `pdu.ttt`
is a native call). Fields only a login or a task management request reads come from the header when asked for.
"""
from __future__ import annotations

import struct
from typing import Final

BHS_LEN: Final = 48
BHS: Final = struct.Struct(">BBBBIQ8I")  # the whole skeleton: how responses.py packs the target's headers
# What decode_bhs reads of a request: opcode byte, flags, lengths, LUN, ITT, bytes 20..27, bytes 36..43
_REQUEST: Final = struct.Struct(">BB2xIQ3I8x2I4x")
_WORD: Final = struct.Struct(">I")
CDB_OFFSET: Final = 32                  # a SCSI Command's CDB (its first 16 bytes) in the BHS: bytes 32..47
RESERVED_TAG: Final = 0xFFFFFFFF

# A piece of output or a data segment: a header, data, or a view of either (never copied on the way out)
Buf = bytes | bytearray | memoryview

# Initiator opcodes
NOP_OUT: Final = 0x00
SCSI_COMMAND: Final = 0x01
TASK_MGMT_REQUEST: Final = 0x02
LOGIN_REQUEST: Final = 0x03
TEXT_REQUEST: Final = 0x04
DATA_OUT: Final = 0x05
LOGOUT_REQUEST: Final = 0x06
SNACK_REQUEST: Final = 0x10
# Target opcodes
NOP_IN: Final = 0x20
SCSI_RESPONSE: Final = 0x21
TASK_MGMT_RESPONSE: Final = 0x22
LOGIN_RESPONSE: Final = 0x23
TEXT_RESPONSE: Final = 0x24
DATA_IN: Final = 0x25
LOGOUT_RESPONSE: Final = 0x26
R2T: Final = 0x31
ASYNC_MESSAGE: Final = 0x32
REJECT: Final = 0x3F

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

FINAL: Final = 0x80         # the F bit
CONTINUE: Final = 0x40      # the C bit of Login and Text PDUs
SCSI_READ: Final = 0x40     # the R and W bits of a SCSI Command
SCSI_WRITE: Final = 0x20


class Pdu:
    """A received PDU: the BHS fields requests share, plus AHS and data segment.

    `cmd_sn` is bytes 24..27, CmdSN in every request but Data-Out and SNACK (reserved there). The words at bytes
    20, 36 and 40 mean something different per opcode: the subclasses name them."""

    __slots__ = ("opcode", "immediate", "flags", "ahs_len", "data_len", "lun_field", "itt", "_w20", "cmd_sn",
                 "_w36", "_w40", "header", "ahs", "data", "data_digest_error")
    opcode: int
    immediate: bool
    flags: int
    ahs_len: int
    data_len: int
    lun_field: int
    itt: int
    _w20: int
    cmd_sn: int
    _w36: int
    _w40: int
    header: bytes
    ahs: bytes
    data: Buf                       # bytes; a Data-Out's or a big segment's: a view or bytearray (framing.py)
    data_digest_error: bool

    def __init__(self, opcode: int, immediate: bool, flags: int, ahs_len: int, data_len: int, lun_field: int, itt: int,
                 w20: int, cmd_sn: int, w36: int, w40: int, header: bytes) -> None:
        self.opcode = opcode
        self.immediate = immediate
        self.flags = flags
        self.ahs_len = ahs_len
        self.data_len = data_len
        self.lun_field = lun_field
        self.itt, self._w20, self.cmd_sn, self._w36, self._w40 = itt, w20, cmd_sn, w36, w40
        self.header = header
        self.ahs = b""
        self.data = b""
        self.data_digest_error = False  # the framing decoder found the DataDigest wrong: the data is not to be used

    def __repr__(self) -> str:
        return f"<{type(self).__name__} itt=0x{self.itt:08x} len={self.data_len}>"


def _header_word(pdu: Pdu, offset: int) -> int:
    """A BHS word read from the header when asked for: for the fields no hot path reads."""
    word: int = _WORD.unpack_from(pdu.header, offset)[0]
    return word


class NopOut(Pdu):
    __slots__ = ()

    @property
    def ttt(self) -> int:
        return self._w20


class ScsiCommand(Pdu):
    __slots__ = ()

    @property
    def edtl(self) -> int:              # Expected Data Transfer Length
        return self._w20

    @property
    def cdb(self) -> bytes:
        """The CDB: the BHS's 16 bytes of it, with what an Extended CDB AHS adds (the per-command path reads the BHS's
        bytes itself where there is no AHS, Command.__init__)."""
        if self.ahs:
            return self.header[CDB_OFFSET:BHS_LEN] + _extended_cdb(self.ahs)
        return self.header[CDB_OFFSET:BHS_LEN]


class TaskMgmtRequest(Pdu):
    __slots__ = ()

    @property
    def referenced_task_tag(self) -> int:
        return self._w20

    @property
    def ref_cmd_sn(self) -> int:
        return _header_word(self, 32)

    @property
    def function(self) -> int:
        return self.flags & 0x7F


class LoginRequest(Pdu):
    __slots__ = ()

    @property
    def exp_stat_sn(self) -> int:
        return _header_word(self, 28)

    @property
    def transit(self) -> bool:          # the T bit, where others have F
        return bool(self.flags & FINAL)

    @property
    def cont(self) -> bool:
        return bool(self.flags & CONTINUE)

    @property
    def csg(self) -> int:
        return (self.flags >> 2) & 3

    @property
    def nsg(self) -> int:
        return self.flags & 3

    @property
    def version_min(self) -> int:
        return self.header[3]

    @property
    def isid(self) -> int:
        return self.lun_field >> 16

    @property
    def tsih(self) -> int:
        return self.lun_field & 0xFFFF


class TextRequest(Pdu):
    __slots__ = ()

    @property
    def ttt(self) -> int:
        return self._w20


class DataOut(Pdu):
    __slots__ = ()

    @property
    def ttt(self) -> int:
        return self._w20

    @property
    def data_sn(self) -> int:
        return self._w36

    @property
    def buffer_offset(self) -> int:
        return self._w40


class LogoutRequest(Pdu):
    __slots__ = ()

    @property
    def reason(self) -> int:
        return self.flags & 0x7F


class SnackRequest(Pdu):
    """Answered with a Reject (ErrorRecoveryLevel 0): none of its fields is read."""
    __slots__ = ()


class UnknownPdu(Pdu):
    """An opcode a target never receives; answered with a Reject."""
    __slots__ = ()


PDU_CLASSES: Final[dict[int, type[Pdu]]] = {
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
    fields: tuple[int, int, int, int, int, int, int, int, int] = _REQUEST.unpack(header)   # (typed: native int ops)
    b0, flags, lengths, lun_field, itt, w20, cmd_sn, w36, w40 = fields
    opcode = b0 & 0x3F
    immediate = b0 & 0x40 != 0
    ahs_len = (lengths >> 24) * 4
    data_len = lengths & 0xFFFFFF
    if opcode == SCSI_COMMAND:      # (the per-command path: a native constructor call, not a call of a class object)
        return ScsiCommand(opcode, immediate, flags, ahs_len, data_len, lun_field, itt, w20, cmd_sn, w36, w40, header)
    return PDU_CLASSES.get(opcode, UnknownPdu)(opcode, immediate, flags, ahs_len, data_len, lun_field, itt, w20,
                                              cmd_sn, w36, w40, header)


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


def frame(header: bytes, data: Buf = b"") -> bytes:
    """A whole PDU as one bytes object: header, data and padding."""
    return header + data + padding(len(data)) if data else header


# --- LUN field (SAM-5 §4.7): flat and peripheral addressing of single-level LUNs -------------------------

# A LUN field with none of these bits set is peripheral addressing of a LUN below 256 (what initiators send for the
# usual LUNs): its LUN is `field >> 48`, without the `decode_lun` call (the per-command path's shortcut)
NOT_SMALL_PERIPHERAL: Final = 0xFF00FFFFFFFFFFFF


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
