"""One row of the command table (target.py's `OPS`): everything the target knows about an opcode, in one place.

A row names the handler and the CDB length, the flags below, how many bytes of data-out the CDB asks for, how
the command meets a reservation (reservations.py's access classes), the service actions it serves and, for a
command addressing blocks, the `LbaCheck` that `ScsiTarget.execute` runs before the handler, so that no handler
repeats it (tgt's `struct device_type_operations`, LIO's `check_lba:` block in `sbc_parse_cdb`).
Adding an opcode is adding a row.
"""
from __future__ import annotations

from typing import Callable, Final, NamedTuple

# Flags. MODIFIES, MEDIUM, BUSY, THIN and ATOMIC are refused by a unit's state or kind (`LogicalUnit.refused`).
ANY_LUN: Final = 0x01    # served for LUNs that do not exist
KEEPS_UA: Final = 0x02   # neither reports nor clears a pending unit attention
UNIT_WIDE: Final = 0x04  # changes what every later command of the unit sees (SANITIZE): while it waits for its
                         # data-out, the transport holds the unit's later commands (target/iscsi/connection.py)
MODIFIES: Final = 0x08   # modifies the medium: refused while the unit is write-protected
MEDIUM: Final = 0x10     # accesses the medium: refused while a removable unit's medium is ejected, and in
                         # sanitize failure mode
BUSY: Final = 0x20       # refused while the unit is being sanitized; the table adds it to every row but those
                         # served for any LUN and MAINTENANCE IN (SBC-4 4.11.2)
THIN: Final = 0x40       # served by thin-provisioned units only (INVALID COMMAND OPERATION CODE on others)
ATOMIC: Final = 0x80     # served by units with atomic writes only (backstore/atomic.py)


class ServiceActions(NamedTuple):
    """The service actions (byte 1, bits 4-0) an opcode serves, as REPORT SUPPORTED OPERATION CODES reports them."""
    served: tuple[int, ...]
    usage: int                                  # CDB usage data of byte 1
    unit_dependent: tuple[tuple[int, str], ...] = ()    # (action, the unit's attribute saying whether it serves it)


class LbaCheck(NamedTuple):
    """The checks of a command addressing blocks, made once by `execute` after the unit's refusals, in this order:
    protection information asked for (`protect` bits of byte 1: INVALID FIELD IN CDB, none is kept), the
    command's own field checks (`fields(unit, task, flags, count)`), the range (LOGICAL BLOCK ADDRESS OUT OF
    RANGE), then, if `held`, the block count against the largest transfer (INVALID FIELD IN CDB at `count_byte`).
    The handler gets the decoded fields: `handler(target, unit, task, flags, lba, count)`."""
    decode: Callable                # cdb -> (byte-1 flags, lba, block count)
    count_byte: int                 # first byte of the block count, for the sense field pointer
    protect: int                    # RDPROTECT/WRPROTECT/… bits of byte 1, or 0 where byte 1 has none
    fields: Callable | None         # (unit, task, flags, count) -> None, raising ScsiError
    held: bool                      # the count is held to the unit's largest transfer (it carries the blocks)


class Op(NamedTuple):
    name: str
    handler: Callable | None    # (target, unit, task[, flags, lba, count]) -> data-in bytes, or None when it
                                # finishes later; None: the opcode is not served
    length: int                 # CDB length
    flags: int
    data_out: Callable | None   # (cdb, block size) -> bytes of data-out the CDB asks for; None: carries none
    access: int                 # how it meets a reservation: reservations.PR_* | SPC2_ALLOWED
    actions: ServiceActions | None
    lba: LbaCheck | None
