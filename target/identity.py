"""Stable LUN identities: unit serial number and NAA-6 designator derived from sha256(iqn + "/" + lun id).

Every node serving the same LUN of the same target derives the same values, and they survive restarts.
The NAA designator is "IEEE Registered Extended" (SPC-4 7.8.6.6.6, 16 bytes): NAA 6, the IEEE company
id 0x001405 (the one LIO uses, so hosts classify ringtgt LUNs as Linux software-target LUNs), then 100
bits of the digest as the vendor-specific identifier and its extension.
"""
import hashlib

NAA_COMPANY_ID = 0x001405
SERIAL_LENGTH = 16
NAA_LENGTH = 32  # hex digits: 16 bytes


def _digest(iqn: str, lun_id: int) -> bytes:
    return hashlib.sha256(f"{iqn.lower()}/{lun_id}".encode()).digest()


def derive_serial(iqn: str, lun_id: int) -> str:
    """16 upper-case hex digits for the Unit Serial Number VPD page."""
    return _digest(iqn, lun_id)[: SERIAL_LENGTH // 2].hex().upper()


def derive_naa(iqn: str, lun_id: int) -> str:
    """32 lower-case hex digits: '6', the company id, then 25 digits taken from the digest."""
    vendor = _digest(iqn, lun_id)[16:].hex()[: NAA_LENGTH - 7]
    return f"6{NAA_COMPANY_ID:06x}{vendor}"
