"""MODE SENSE and MODE SELECT (SPC-4 6.11-6.14, SBC-3 6.4): the caching, control and informational
exceptions pages. The caching page's WCE bit (in `backstore.write_cache`) and the control page's SWP bit
(software write protect: writes answered DATA PROTECT) are changeable; a change applies to the unit in every
worker and gives every other I_T nexus MODE PARAMETERS CHANGED (`ScsiTarget.change_mode`).
"""
from __future__ import annotations

from struct import Struct
from typing import NamedTuple

from . import cdb as C
from .data_out import parameter_data
from .sense import (ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR, SAVING_PARAMETERS_NOT_SUPPORTED, ScsiError,
                    invalid_cdb, invalid_parameter)

CURRENT, CHANGEABLE, DEFAULT, SAVED = range(4)
CACHING, CONTROL, INFORMATIONAL_EXCEPTIONS, ALL_PAGES = 0x08, 0x0A, 0x1C, 0x3F
ALL_SUBPAGES = 0xFF
WCE = 0x04
SWP = 0x08                      # control page byte 4: software write protect
WP = 0x80                       # device-specific parameter: write protected
DPOFUA = 0x10                   # device-specific parameter: DPO and FUA supported


class ModePage(NamedTuple):
    default: bytes              # the whole page, header included
    changeable: bytes           # mask of the bits MODE SELECT may change


def _page(code: int, body: dict[int, int], length: int) -> bytes:
    page = bytearray(length + 2)
    page[0], page[1] = code, length
    for offset, value in body.items():
        page[offset] = value
    return bytes(page)


PAGES = {
    CACHING: ModePage(_page(CACHING, {}, 0x12), _page(CACHING, {2: WCE}, 0x12)),
    # queue algorithm modifier 1 (unrestricted reordering), busy timeout unlimited
    CONTROL: ModePage(_page(CONTROL, {3: 0x10, 8: 0xFF, 9: 0xFF}, 0x0A), _page(CONTROL, {4: SWP}, 0x0A)),
    # DEXCPT: no informational exception reporting
    INFORMATIONAL_EXCEPTIONS: ModePage(_page(INFORMATIONAL_EXCEPTIONS, {2: 0x08}, 0x0A),
                                       _page(INFORMATIONAL_EXCEPTIONS, {}, 0x0A)),
}

_HEADER6 = Struct(">BBBB")
_HEADER10 = Struct(">HBBBxH")
_SHORT_DESCRIPTOR = Struct(">IxBH")
_LONG_DESCRIPTOR = Struct(">Q4xI")


def page_values(unit, code: int, control: int) -> bytes:
    page = PAGES[code]
    if control == CHANGEABLE:
        return page.changeable
    if code == CACHING:
        offset, bit = 2, WCE
        on = unit.backstore.write_cache if control == CURRENT else unit.default_write_cache
    elif code == CONTROL:
        offset, bit = 4, SWP
        on = control == CURRENT and unit.software_write_protect
    else:
        return page.default
    if not on:
        return page.default
    values = bytearray(page.default)
    values[offset] |= bit
    return bytes(values)


def _block_descriptor(unit, long: bool, control: int) -> bytes:
    blocks, size = (0, 0) if control == CHANGEABLE else (unit.blocks, unit.block_size)
    if long:
        return _LONG_DESCRIPTOR.pack(blocks, size)
    return _SHORT_DESCRIPTOR.pack(min(blocks, 0xFFFFFFFF), size >> 16, size & 0xFFFF)


def _mode_sense(unit, fields, ten: bool) -> bytes:
    dbd, llbaa, control, code, subpage, alloc = fields
    if control == SAVED:
        raise ScsiError(ILLEGAL_REQUEST, SAVING_PARAMETERS_NOT_SUPPORTED)
    if subpage not in (0, ALL_SUBPAGES):
        raise invalid_cdb(3)
    if code == ALL_PAGES:
        codes = sorted(PAGES)
    elif code in PAGES:
        codes = [code]
    else:
        raise invalid_cdb(2, 5)
    pages = b"".join(page_values(unit, c, control) for c in codes)
    descriptor = b"" if dbd else _block_descriptor(unit, llbaa and ten, control)
    specific = DPOFUA | (WP if unit.read_only else 0)
    if ten:
        length = _HEADER10.size + len(descriptor) + len(pages)
        header = _HEADER10.pack(length - 2, 0, specific, int(llbaa and not dbd), len(descriptor))
    else:
        length = _HEADER6.size + len(descriptor) + len(pages)
        header = _HEADER6.pack(length - 1, 0, specific, len(descriptor))
    return (header + descriptor + pages)[:alloc]


def mode_sense6(target, unit, task) -> bytes:
    return _mode_sense(unit, C.mode_sense6(task.cdb), False)


def mode_sense10(target, unit, task) -> bytes:
    return _mode_sense(unit, C.mode_sense10(task.cdb), True)


def _check_descriptor(unit, data, offset: int, length: int) -> None:
    if length == _SHORT_DESCRIPTOR.size:
        blocks, size_high, size_low = _SHORT_DESCRIPTOR.unpack_from(data, offset)
        size, current = size_high << 16 | size_low, min(unit.blocks, 0xFFFFFFFF)
        size_offset = offset + 5
    else:
        blocks, size = _LONG_DESCRIPTOR.unpack_from(data, offset)
        current, size_offset = unit.blocks, offset + 12
    if blocks not in (0, current):
        raise invalid_parameter(offset)
    if size != unit.block_size:
        raise invalid_parameter(size_offset)


def _changed_pages(unit, data, offset: int) -> dict[int, bytes]:
    """Validate every page of the parameter list before anything is applied; return them by code."""
    pages = {}
    end = len(data)
    while offset < end:
        if offset + 2 > end:
            raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        code = data[offset] & 0x3F
        if data[offset] & 0x40 or code not in PAGES:             # SPF: we have no subpages
            raise invalid_parameter(offset, 6 if data[offset] & 0x40 else 5)
        current = page_values(unit, code, CURRENT)
        changeable = PAGES[code].changeable
        if data[offset + 1] != current[1]:
            raise invalid_parameter(offset + 1)
        if offset + len(current) > end:
            raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        for i in range(2, len(current)):
            if (data[offset + i] ^ current[i]) & ~changeable[i]:
                raise invalid_parameter(offset + i)
        pages[code] = bytes(data[offset:offset + len(current)])
        offset += len(current)
    return pages


def _mode_select(target, unit, task, length: int, ten: bool) -> bytes | None:
    data = parameter_data(task, length)
    if not length:
        return b""
    header = _HEADER10 if ten else _HEADER6
    if length < header.size:
        raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    data = memoryview(data)
    if ten:
        _, _, _, longlba, descriptor_length = header.unpack_from(data)
        expected = _LONG_DESCRIPTOR.size if longlba & 0x01 else _SHORT_DESCRIPTOR.size
        length_field = 6
    else:
        _, _, _, descriptor_length = header.unpack_from(data)
        expected, length_field = _SHORT_DESCRIPTOR.size, 3
    if descriptor_length not in (0, expected):
        raise invalid_parameter(length_field)
    if header.size + descriptor_length > length:
        raise ScsiError(ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    if descriptor_length:
        _check_descriptor(unit, data, header.size, descriptor_length)
    pages = _changed_pages(unit, data, header.size + descriptor_length)
    caching, control = pages.get(CACHING), pages.get(CONTROL)
    wce = bool(caching[2] & WCE) if caching is not None else bool(unit.backstore.write_cache)
    swp = bool(control[4] & SWP) if control is not None else unit.software_write_protect
    if (wce, swp) == (bool(unit.backstore.write_cache), unit.software_write_protect):
        return b""
    return target.change_mode(unit, task, wce, swp)


def mode_select6(target, unit, task) -> bytes | None:
    return _mode_select(target, unit, task, C.mode_select6(task.cdb), False)


def mode_select10(target, unit, task) -> bytes | None:
    return _mode_select(target, unit, task, C.mode_select10(task.cdb), True)
