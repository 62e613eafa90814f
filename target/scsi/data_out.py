"""Data-out as the CDB asks for it: the length decoders of the command table (how many bytes a command carries,
known from its CDB before any data arrives, so that the transport holds and solicits no more), and what a
handler gets when the initiator's Expected Data Transfer Length differs from that length.

RFC 7143 §11.4.5.2 (residuals) and FCP-4's rules for a data length that differs from the command's: with more
data offered than the CDB asks for (underflow), the command takes what it asks for and the transport reports the
residual. With less (overflow), a block write takes the whole blocks it received and answers with the overflow
residual (what libiscsi's write residual tests expect); any other shortfall, a part of a block or a part of a
parameter list, is INVALID FIELD IN COMMAND INFORMATION UNIT with nothing done, so that GOOD never acknowledges
data that was not written.
"""
from __future__ import annotations

from .cdb import BYTCHK, BYTCHK_COMPARE, BYTCHK_ONE_BLOCK, WS_NDOB, LbaLayout
from .sense import ILLEGAL_REQUEST, INVALID_FIELD_IN_COMMAND_IU, ScsiError
from .task import ScsiTask


# -- length decoders: (cdb, block size) -> bytes of data-out ----------------------------------------------------
def blocks(layout: LbaLayout):
    """A write of the CDB's transfer length in blocks."""
    decode = layout.decode
    return lambda cdb, size: decode(cdb)[2] * size


def verify(layout: LbaLayout):
    """VERIFY: every block with BYTCHK 01, one block with 11, none otherwise."""
    decode = layout.decode

    def length(cdb, size: int) -> int:
        check = cdb[1] & BYTCHK
        if check == BYTCHK_COMPARE:
            return decode(cdb)[2] * size
        return size if check == BYTCHK_ONE_BLOCK else 0
    return length


def one_block(cdb, size: int) -> int:
    """WRITE SAME(10): the one block to repeat."""
    return size


def write_same16(cdb, size: int) -> int:
    return 0 if cdb[1] & WS_NDOB else size


def compare_and_write(cdb, size: int) -> int:
    """The blocks to compare, then the blocks to write."""
    return 2 * cdb[13] * size


def field(offset: int, width: int, in_blocks: bool = False):
    """A length field of the CDB: a parameter list length in bytes, or a number of blocks."""
    end = offset + width
    if in_blocks:
        return lambda cdb, size: int.from_bytes(cdb[offset:end], "big") * size
    return lambda cdb, size: int.from_bytes(cdb[offset:end], "big")


# -- what handlers get ------------------------------------------------------------------------------------------
def _too_little() -> ScsiError:
    """The initiator's EDTL leaves out data the CDB asks for."""
    return ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_COMMAND_IU)


def parameter_data(task, length: int):
    """The `length` bytes of data-out the CDB asks for (a parameter list, a pattern, compare data); sets
    `task.transfer_length` for the residual. Fewer received: INVALID FIELD IN COMMAND INFORMATION UNIT."""
    task.transfer_length = length
    data = task.data_out
    received = len(data) if data is not None else 0
    if received < length:
        raise _too_little()
    return data if received == length else memoryview(data)[:length]


def exact_data(task, length: int):
    """As `parameter_data`, for a command that takes exactly `length` bytes and refuses an EDTL offering more
    (WRITE SAME's one block, COMPARE AND WRITE's blocks: libiscsi's InvalidDataOutSize tests)."""
    if task.expected_length != length:
        task.transfer_length = length
        raise _too_little()
    return parameter_data(task, length)


def block_data(task: ScsiTask, length: int, size: int):
    """The whole blocks of data-out received for a write of `length` bytes (None if there are none); sets
    `task.transfer_length`. A part of a block, or no data phase at all for a write that asks for one:
    INVALID FIELD IN COMMAND INFORMATION UNIT."""
    task.transfer_length = length
    data = task.data_out
    if data is None:
        if length:
            raise _too_little()
        return None
    received = len(data)
    if received >= length:
        return (data if received == length else memoryview(data)[:length]) if length else None
    if received % size:
        raise _too_little()
    return memoryview(data)[:received] if received else None
