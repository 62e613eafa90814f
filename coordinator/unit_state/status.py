"""SCSI status codes (SAM-5 table 36): what a task ends with, and what a unit state machine's `Outcome` carries."""

GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
TASK_ABORTED = 0x40
