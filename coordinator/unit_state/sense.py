"""Sense data (SPC-4 4.5.3): fixed format only, built in one place, plus the `ScsiError` handlers raise.

A handler that finds something wrong raises `ScsiError(key, asc_ascq, field)`; the dispatcher turns it into
CHECK CONDITION through `check_condition`. `field` is a `Field` naming the offending byte (and bit) for the
sense-key specific field pointer of ILLEGAL REQUEST.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from .status import CHECK_CONDITION

# Sense keys (SPC-4 table 27)
NO_SENSE = 0x0
RECOVERED_ERROR = 0x1
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
COPY_ABORTED = 0xA
ABORTED_COMMAND = 0xB
MISCOMPARE = 0xE

# Additional sense code / qualifier pairs, as 0xAAQQ
NO_ADDITIONAL_SENSE = 0x0000
BECOMING_READY = 0x0401                   # LOGICAL UNIT IS IN PROCESS OF BECOMING READY (initiators retry it)
MANUAL_INTERVENTION_REQUIRED = 0x0403     # LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED
SANITIZE_IN_PROGRESS = 0x041B
LOGICAL_UNIT_COMMUNICATION_FAILURE = 0x0800
WRITE_ERROR = 0x0C00
COPY_TARGET_DEVICE_NOT_REACHABLE = 0x0D02
INVALID_FIELD_IN_COMMAND_IU = 0x0E03
UNRECOVERED_READ_ERROR = 0x1100
MISCOMPARE_DURING_VERIFY = 0x1D00
PARAMETER_LIST_LENGTH_ERROR = 0x1A00
INVALID_COMMAND_OPERATION_CODE = 0x2000
LBA_OUT_OF_RANGE = 0x2100
INVALID_FIELD_IN_CDB = 0x2400
LOGICAL_UNIT_NOT_SUPPORTED = 0x2500
INVALID_FIELD_IN_PARAMETER_LIST = 0x2600
TOO_MANY_TARGET_DESCRIPTORS = 0x2606
UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = 0x2607
TOO_MANY_SEGMENT_DESCRIPTORS = 0x2608
UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = 0x2609
WRITE_PROTECTED = 0x2700
SPACE_ALLOCATION_FAILED_WRITE_PROTECT = 0x2707
POWER_ON_RESET = 0x2900
POWER_ON_OCCURRED = 0x2901
BUS_DEVICE_RESET = 0x2903
MODE_PARAMETERS_CHANGED = 0x2A01
CAPACITY_DATA_HAS_CHANGED = 0x2A09
COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = 0x2F00
SANITIZE_COMMAND_FAILED = 0x3103
SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900
MEDIUM_NOT_PRESENT = 0x3A00
REPORTED_LUNS_DATA_HAS_CHANGED = 0x3F0E
INTERNAL_TARGET_FAILURE = 0x4400
PROTOCOL_SERVICE_CRC_ERROR = 0x4705
MEDIUM_REMOVAL_PREVENTED = 0x5302

FIXED_FORMAT = 0x70
SENSE_LENGTH = 18
_ADDITIONAL_LENGTH = SENSE_LENGTH - 8


class Field(NamedTuple):
    """Where an invalid field sits: byte offset, bit (None: the whole byte), in the CDB or the parameter list."""
    byte: int
    bit: int | None = None
    in_cdb: bool = True


class ScsiError(Exception):
    """Raised by command handlers; answered with CHECK CONDITION and this sense."""

    def __init__(self, key: int, asc_ascq: int, field: Field | None = None, information: int | None = None):
        super().__init__(key, asc_ascq, field)
        self.key = key
        self.asc_ascq = asc_ascq
        self.field = field
        self.information = information


def invalid_cdb(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB, Field(byte, bit))


def invalid_parameter(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST, Field(byte, bit, False))


@lru_cache(maxsize=256)
def build_sense(key: int, asc_ascq: int, field: Field | None = None, information: int | None = None) -> bytes:
    """18 bytes of fixed-format current sense; SKSV and the field pointer when `field` is given, VALID and
    the INFORMATION field (e.g. the offset of a miscompare) when `information` is."""
    sense = bytearray(SENSE_LENGTH)
    sense[0] = FIXED_FORMAT
    if information is not None:
        sense[0] |= 0x80
        sense[3:7] = (information & 0xFFFFFFFF).to_bytes(4, "big")
    sense[2] = key
    sense[7] = _ADDITIONAL_LENGTH
    sense[12] = asc_ascq >> 8
    sense[13] = asc_ascq & 0xFF
    if field is not None:
        sks = 0x80 | (0x40 if field.in_cdb else 0)
        if field.bit is not None:
            sks |= 0x08 | field.bit
        sense[15] = sks
        sense[16:18] = field.byte.to_bytes(2, "big")
    return bytes(sense)


def check_condition(task, key: int, asc_ascq: int, field: Field | None = None) -> None:
    task.finish(CHECK_CONDITION, None, build_sense(key, asc_ascq, field))


def fail(task, error: ScsiError) -> None:
    task.finish(CHECK_CONDITION, None, build_sense(error.key, error.asc_ascq, error.field, error.information))
