"""INQUIRY data (SPC-4 6.6, 7.8; SBC-3 6.5): the standard data and the vital product data pages."""
from __future__ import annotations

from struct import Struct

from .lun import HOLE_BYTES, OPTIMAL_TRANSFER_BYTES, PRODUCT, REVISION, VENDOR, LogicalUnit
from .compare_and_write import MAX_COMPARE_AND_WRITE_BLOCKS
from .provisioning import MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, deallocates
from .sense import invalid_cdb
from .xcopy import EXTENDED_COPY, EXTENDED_COPY_ACTIONS, RECEIVE_COPY_RESULTS, RECEIVE_COPY_RESULTS_ACTIONS

DISK = 0x00
NO_UNIT = 0x7F                      # peripheral qualifier 011b, device type 1Fh: no logical unit here

SPC4 = 0x06
_HISUP_FORMAT2 = 0x12               # HiSup, response data format 2
_CMDQUE = 0x02
_RMB = 0x80                         # removable medium
_VERSION_DESCRIPTORS = (0x00A0, 0x0960, 0x0460, 0x04C0)     # SAM-5, iSCSI, SPC-4, SBC-3

_STANDARD = Struct(">BBBBBBBB8s16s4s22x4H8x")                # 74 bytes: 8 version descriptor slots
_VPD_HEADER = Struct(">BBH")
_DESIGNATOR_HEADER = Struct(">BBxB")
_PORT_NUMBER = Struct(">xxH")
_BLOCK_LIMITS = Struct(">BBHIIIIIIIQI16x")                 # after the page header: 60 bytes
_CHARACTERISTICS = Struct(">HxB56x")
_WABEREQ_READS_SUCCEED = 0x40               # a READ after a BLOCK ERASE succeeds
_WACEREQ_READS_SUCCEED = 0x10               # … after a CRYPTO ERASE (0 where the unit offers none)
_PROVISIONING = Struct(">BBBx")
_TPC_DESCRIPTOR = Struct(">HH")
_SUPPORTED_COMMANDS = 0x0001
_WSNZ = 0x00                        # WRITE SAME of 0 blocks writes to the end of the medium
_LBPU, _LBPWS, _LBPWS10, _LBPRZ = 0x80, 0x40, 0x20, 0x04   # UNMAP, WRITE SAME 16/10 with UNMAP; zeros after
_THIN = 0x02                                                # provisioning type

# designator fields (SPC-4 7.8.6.1)
_ISCSI = 0x5                        # protocol identifier
_BINARY, _ASCII, _UTF8 = 1, 2, 3    # code sets
_PIV = 0x80
_LU, _TARGET_PORT = 0x00, 0x10      # association
_T10_VENDOR, _NAA, _RELATIVE_PORT, _PORT_GROUP, _SCSI_NAME = 1, 3, 4, 5, 8


def standard(peripheral: int, removable: bool = False) -> bytes:
    return _STANDARD.pack(peripheral, _RMB if removable else 0, SPC4, _HISUP_FORMAT2, _STANDARD.size - 5, 0, 0, _CMDQUE,
                          VENDOR.encode(), PRODUCT.encode().ljust(16), REVISION.encode(), *_VERSION_DESCRIPTORS)


STANDARD_DISK = standard(DISK)
STANDARD_REMOVABLE_DISK = standard(DISK, removable=True)
STANDARD_NO_UNIT = standard(NO_UNIT)


def _page(code: int, body: bytes) -> bytes:
    return _VPD_HEADER.pack(DISK, code, len(body)) + body


def _designator(protocol_code_set: int, piv_association_type: int, value: bytes) -> bytes:
    return _DESIGNATOR_HEADER.pack(protocol_code_set, piv_association_type, len(value)) + value


def _supported_pages(unit: LogicalUnit) -> bytes:
    return bytes(sorted(VPD_PAGES))


def _unit_serial(unit: LogicalUnit) -> bytes:
    return unit.identity.serial.encode()


def _device_identification(unit: LogicalUnit) -> bytes:
    ident = unit.identity
    port_name = f"{ident.target_iqn},t,0x{ident.portal_group_tag:04x}".encode()
    port_name += bytes(4 - len(port_name) % 4)          # NUL-terminated, padded to a multiple of 4
    port = _ISCSI << 4 | _BINARY
    return b"".join((
        _designator(_BINARY, _LU | _NAA, bytes.fromhex(ident.naa)),
        _designator(_ASCII, _LU | _T10_VENDOR, VENDOR.encode() + ident.serial.encode()),
        _designator(_ISCSI << 4 | _UTF8, _PIV | _TARGET_PORT | _SCSI_NAME, port_name),
        _designator(port, _PIV | _TARGET_PORT | _RELATIVE_PORT, _PORT_NUMBER.pack(ident.relative_port)),
        _designator(port, _PIV | _TARGET_PORT | _PORT_GROUP, _PORT_NUMBER.pack(ident.portal_group_tag)),
    ))


def _block_limits(unit: LogicalUnit) -> bytes:
    optimal = max(1, OPTIMAL_TRANSFER_BYTES // unit.block_size)
    unmap_blocks, unmap_descriptors, granularity = (0, 0, 0) if not deallocates(unit) else (
        MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, max(1, HOLE_BYTES // unit.block_size))
    return _BLOCK_LIMITS.pack(_WSNZ, MAX_COMPARE_AND_WRITE_BLOCKS, unit.blocks_per_physical,
                              unit.max_transfer_blocks, optimal, 0,
                              unmap_blocks, unmap_descriptors, granularity, 0, unit.max_transfer_blocks,
                              unit.max_atomic_blocks)     # atomic alignment and granularity 0: none required


def _block_device_characteristics(unit: LogicalUnit) -> bytes:
    erasures = _WABEREQ_READS_SUCCEED | (_WACEREQ_READS_SUCCEED if unit.crypto_erasable else 0)
    return _CHARACTERISTICS.pack(1, erasures)           # medium rotation rate 1: non-rotating


def _logical_block_provisioning(unit: LogicalUnit) -> bytes:
    if not unit.thin:
        return _PROVISIONING.pack(0, 0, 0)              # fully provisioned, no unmap
    if not deallocates(unit):                           # thin, but UNMAP could only write zeros: not offered
        return _PROVISIONING.pack(0, _LBPRZ, _THIN)
    return _PROVISIONING.pack(0, _LBPU | _LBPWS | _LBPWS10 | _LBPRZ, _THIN)


def _third_party_copy(unit: LogicalUnit) -> bytes:
    """Third-party Copy VPD (SPC-4 7.8.17): the Supported Commands descriptor, the service actions xcopy.py serves."""
    commands = b"".join(bytes([opcode, len(actions), *actions]) for opcode, actions in
                        ((EXTENDED_COPY, EXTENDED_COPY_ACTIONS), (RECEIVE_COPY_RESULTS, RECEIVE_COPY_RESULTS_ACTIONS)))
    body = bytes([len(commands)]) + commands
    body += bytes(-len(body) % 4)
    return _TPC_DESCRIPTOR.pack(_SUPPORTED_COMMANDS, len(body)) + body


VPD_PAGES = {
    0x00: _supported_pages,
    0x80: _unit_serial,
    0x83: _device_identification,
    0xB0: _block_limits,
    0xB1: _block_device_characteristics,
    0xB2: _logical_block_provisioning,
    0x8F: _third_party_copy,
}


def vpd_page(unit: LogicalUnit, code: int) -> bytes:
    build = VPD_PAGES.get(code)
    if build is None:
        raise invalid_cdb(2)
    return _page(code, build(unit))
