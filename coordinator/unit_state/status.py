"""SCSI status codes (SAM-5 table 36): what a task ends with, and what a unit state machine's `Outcome` carries."""
from typing import Final

GOOD: Final = 0x00
CHECK_CONDITION: Final = 0x02
CONDITION_MET: Final = 0x04
BUSY: Final = 0x08
RESERVATION_CONFLICT: Final = 0x18
TASK_SET_FULL: Final = 0x28
TASK_ABORTED: Final = 0x40
