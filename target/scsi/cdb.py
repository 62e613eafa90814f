"""CDB layouts, compiled to `struct.Struct` once, and the decoders that validate their fields.

Every decoder takes the CDB bytes and returns a plain tuple of the fields its handler needs, or raises
`ScsiError` (INVALID FIELD IN CDB with the field pointer) for a bad field.
"""
from __future__ import annotations

from struct import Struct
from typing import Callable, Final, NamedTuple

from .sense import invalid_cdb

CDB_LENGTH = (6, 10, 10, 0, 16, 12, 0, 0)      # by group code (opcode >> 5); 0: variable or vendor specific


# -- LBA + transfer length commands (READ, WRITE, VERIFY, SYNCHRONIZE CACHE) ---------------------------------
_RW6 = Struct(">IB")


def lba6(cdb) -> tuple[int, int, int]:
    """READ(6)/WRITE(6): 21-bit LBA, transfer length 0 meaning 256, no flags."""
    word, count = _RW6.unpack_from(cdb)
    return 0, word & 0x1FFFFF, count or 256


class LbaLayout(NamedTuple):
    decode: Callable        # cdb -> (byte-1 flags, lba, block count)
    count_byte: int         # first byte of the transfer length, for the sense field pointer


LBA6 = LbaLayout(lba6, 4)
LBA10 = LbaLayout(Struct(">xBIxH").unpack_from, 7)
LBA12 = LbaLayout(Struct(">xBII").unpack_from, 6)
LBA16 = LbaLayout(Struct(">xBQI").unpack_from, 10)

PROTECT: Final = 0xE0   # RDPROTECT / WRPROTECT / VRPROTECT
DPO: Final = 0x10
FUA: Final = 0x08
BYTCHK = 0x06           # VERIFY's byte check mode, bits 2-1 of byte 1:
BYTCHK_NONE, BYTCHK_COMPARE, BYTCHK_RESERVED, BYTCHK_ONE_BLOCK = 0x00, 0x02, 0x04, 0x06
IMMED: Final = 0x02


# -- thin provisioning: UNMAP, WRITE SAME flags, GET LBA STATUS -------------------------------------------------
WS_ANCHOR = 0x10
WS_UNMAP = 0x08
WS_NDOB = 0x01          # WRITE SAME(16): no data-out buffer, the block is zeros
_UNMAP = Struct(">xB5xH")
_GET_LBA_STATUS = Struct(">xxQI")


def unmap(cdb) -> int:
    """UNMAP: the parameter list length (ANCHOR refused: no anchored state)."""
    anchor, length = _UNMAP.unpack_from(cdb)
    if anchor & 0x01:
        raise invalid_cdb(1, 0)
    return length


def get_lba_status(cdb) -> tuple[int, int]:
    """SERVICE ACTION IN(16) / GET LBA STATUS: (starting LBA, allocation length)."""
    return _GET_LBA_STATUS.unpack_from(cdb)


# -- READ DEFECT DATA 10/12: (PLISTV | GLISTV | list format as asked, allocation length) -------------------
_DEFECT_LISTS = 0x1F
_READ_DEFECT10 = Struct(">2xB4xH")
_READ_DEFECT12 = Struct(">xB4xI")


def read_defect_data10(cdb) -> tuple[int, int]:
    lists, alloc = _READ_DEFECT10.unpack_from(cdb)
    return lists & _DEFECT_LISTS, alloc


def read_defect_data12(cdb) -> tuple[int, int]:
    lists, alloc = _READ_DEFECT12.unpack_from(cdb)
    return lists & _DEFECT_LISTS, alloc


# -- INQUIRY, REQUEST SENSE, REPORT LUNS ---------------------------------------------------------------------
_INQUIRY = Struct(">xBBH")


def inquiry(cdb) -> tuple[bool, int, int]:
    """(evpd, page code, allocation length)."""
    flags, page, alloc = _INQUIRY.unpack_from(cdb)
    if flags & 0x02:
        raise invalid_cdb(1, 1)                 # CMDDT (obsolete)
    evpd = bool(flags & 0x01)
    if not evpd and page:
        raise invalid_cdb(2)
    return evpd, page, alloc


_REQUEST_SENSE = Struct(">xB2xB")


def request_sense(cdb) -> int:
    """Allocation length; only fixed-format sense is offered (DESC=1 is refused)."""
    flags, alloc = _REQUEST_SENSE.unpack_from(cdb)
    if flags & 0x01:
        raise invalid_cdb(1, 0)
    return alloc


_REPORT_LUNS = Struct(">xxB3xI")
SELECT_ALL, SELECT_WELL_KNOWN, SELECT_ALL_AND_WELL_KNOWN = 0, 1, 2


def report_luns(cdb) -> tuple[int, int]:
    """(select report, allocation length)."""
    select, alloc = _REPORT_LUNS.unpack_from(cdb)
    if select > SELECT_ALL_AND_WELL_KNOWN:
        raise invalid_cdb(2)
    return select, alloc


# -- READ CAPACITY -------------------------------------------------------------------------------------------
_READ_CAPACITY10 = Struct(">xxIxxB")


def read_capacity10(cdb) -> None:
    lba, pmi = _READ_CAPACITY10.unpack_from(cdb)
    if lba and not pmi & 0x01:
        raise invalid_cdb(2)


_SERVICE_ACTION_IN16 = Struct(">xBQIB")
READ_CAPACITY16 = 0x10


def read_capacity16(cdb) -> int:
    """SERVICE ACTION IN(16) / READ CAPACITY(16): allocation length."""
    action, lba, alloc, pmi = _SERVICE_ACTION_IN16.unpack_from(cdb)
    if action & 0x1F != READ_CAPACITY16:
        raise invalid_cdb(1, 4)
    if lba and not pmi & 0x01:
        raise invalid_cdb(2)
    return alloc


# -- MODE SENSE / MODE SELECT --------------------------------------------------------------------------------
_MODE_SENSE6 = Struct(">xBBBB")
_MODE_SENSE10 = Struct(">xBBB3xH")


def mode_sense6(cdb) -> tuple[bool, bool, int, int, int, int]:
    """(dbd, llbaa, page control, page code, subpage code, allocation length)."""
    flags, page, subpage, alloc = _MODE_SENSE6.unpack_from(cdb)
    return bool(flags & 0x08), False, page >> 6, page & 0x3F, subpage, alloc


def mode_sense10(cdb) -> tuple[bool, bool, int, int, int, int]:
    flags, page, subpage, alloc = _MODE_SENSE10.unpack_from(cdb)
    return bool(flags & 0x08), bool(flags & 0x10), page >> 6, page & 0x3F, subpage, alloc


_MODE_SELECT6 = Struct(">xB2xB")
_MODE_SELECT10 = Struct(">xB5xH")


def _mode_select(flags: int, length: int) -> int:
    if not flags & 0x10:
        raise invalid_cdb(1, 4)                 # PF=0: vendor-specific page format, not supported
    if flags & 0x01:
        raise invalid_cdb(1, 0)                 # SP=1: nothing can be saved
    return length


def mode_select6(cdb) -> int:
    """Parameter list length."""
    return _mode_select(*_MODE_SELECT6.unpack_from(cdb))


def mode_select10(cdb) -> int:
    return _mode_select(*_MODE_SELECT10.unpack_from(cdb))


# -- START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL ----------------------------------------------------------------
def start_stop_unit(cdb, removable: bool) -> bool | None:
    """START STOP UNIT (SBC-3 5.25): True to load the medium, False to eject it, None when nothing moves (LOEJ
    clear, or a POWER CONDITION other than 0, which makes LOEJ and START ignored). A unit that is not
    removable has nothing to load or eject."""
    if not cdb[4] & 0x02 or cdb[4] >> 4:
        return None
    if not removable:
        raise invalid_cdb(4, 1)
    return bool(cdb[4] & 0x01)


def prevent_allow(cdb, removable: bool) -> bool:
    """PREVENT ALLOW MEDIUM REMOVAL (SBC-3 5.13): True to prevent. Only a removable medium can be locked in;
    the values 2 and 3 are obsolete."""
    prevent = cdb[4] & 0x03
    if prevent > 1 or prevent and not removable:
        raise invalid_cdb(4, 1 if prevent & 0x02 else 0)
    return bool(prevent)
