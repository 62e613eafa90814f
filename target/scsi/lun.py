"""A logical unit as the SCSI layer sees it: its backstore, its identity, and its unit attention state."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coordinator.unit_state.medium import IDLE, SANITIZE_FAILURE, SANITIZING

from ..buffers import BufferPool

from .op import ATOMIC, BUSY, MEDIUM, MODIFIES, THIN
from .sense import (BECOMING_READY, DATA_PROTECT, ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE,
                    MANUAL_INTERVENTION_REQUIRED, MEDIUM_ERROR, MEDIUM_NOT_PRESENT, NOT_READY, SANITIZE_COMMAND_FAILED,
                    SANITIZE_IN_PROGRESS, WRITE_PROTECTED, ScsiError)

if TYPE_CHECKING:
    from .compare_and_write import CompareAndWriteLock
    from .shared_reservations import SharedReservations

VENDOR = "RINGTGT "
PRODUCT = "ringtgt disk"
REVISION = "0001"

MAX_TRANSFER_BYTES = 16 << 20       # matches the MaxBurstLength we offer: one command, one burst
OPTIMAL_TRANSFER_BYTES = 1 << 20
HOLE_BYTES = 4096                   # a file system block: what a punched hole deallocates at least


class UnitAttentions:
    """Pending unit attention conditions per I_T nexus (SPC-4 5.14), in the worker hosting the nexus.

    The coordinator decides what a nexus starts with (`replace` at session start, see coordinator/unit_service.py:
    POWER ON for an initiator the target has not seen) and hears of every condition reported (`on_take`).
    """

    __slots__ = ("_queues", "on_take")

    def __init__(self):
        self._queues: dict[str, list[int]] = {}
        self.on_take: Callable[[str, int], None] | None = None  # (nexus, asc_ascq), after a condition is reported

    def _queue(self, nexus: str) -> list[int]:
        queue = self._queues.get(nexus)
        if queue is None:
            queue = self._queues[nexus] = []
        return queue

    def take(self, nexus: str) -> int | None:
        """Report-and-clear the oldest pending condition (as ASC/ASCQ), or None."""
        queue = self._queues.get(nexus)
        if queue is None:
            queue = self._queue(nexus)
        if not queue:
            return None
        asc_ascq = queue.pop(0)
        if self.on_take is not None:
            self.on_take(nexus, asc_ascq)
        return asc_ascq

    def replace(self, nexus: str, pending: list[int]) -> None:
        self._queues[nexus] = list(pending)

    def forget(self, nexus: str) -> None:
        """The nexus left this worker; the coordinator keeps what it still has pending."""
        self._queues.pop(nexus, None)

    def establish_for(self, nexus: str, asc_ascq: int) -> None:
        """Queue a condition for one nexus (e.g. REGISTRATIONS PREEMPTED)."""
        queue = self._queue(nexus)
        if asc_ascq not in queue:
            queue.append(asc_ascq)

    def establish(self, asc_ascq: int, except_nexus: str | None = None) -> None:
        """Queue a condition for every known nexus but `except_nexus`."""
        for nexus, queue in self._queues.items():
            if nexus != except_nexus and asc_ascq not in queue:
                queue.append(asc_ascq)


@dataclass(frozen=True)
class Identity:
    """What INQUIRY reports about the unit and the target port it is reached through."""
    serial: str
    naa: str                    # hex digits of a NAA designator, first digit '6' (8 or 16 bytes)
    target_iqn: str
    portal_group_tag: int
    relative_port: int


class LogicalUnit:
    """One LUN in one worker."""

    __slots__ = ("lun_id", "backstore", "identity", "read_only", "configured_read_only", "software_write_protect",
                 "attentions", "reservations", "default_write_cache", "block_size", "blocks", "max_transfer_blocks",
                 "thin", "caw_lock", "removable", "medium_loaded", "sanitize", "sanitize_rate",
                 "max_atomic_blocks", "crypto_erasable", "blocks_per_physical", "offline", "becoming_ready", "refused",
                 "data_buffers")
    reservations: SharedReservations    # the reservation store (the coordinator's, through a view): set by ScsiTarget

    def __init__(self, lun_id: int, backstore, *, serial: str, naa: str, target_iqn: str,
                 portal_group_tag: int, relative_port: int, read_only: bool = False,
                 attentions: UnitAttentions | None = None, thin: bool = False,
                 removable: bool = False, sanitize_rate: int = 0, physical_block_size: int | None = None,
                 direct: bool = False):
        naa_bytes = bytes.fromhex(naa)
        if len(naa_bytes) not in (8, 16) or naa_bytes[0] >> 4 != 6:
            raise ValueError(f"NAA designator {naa!r} is not 8 or 16 bytes of NAA 6")
        self.lun_id = lun_id
        self.backstore = backstore
        self.identity = Identity(serial, naa, target_iqn, portal_group_tag, relative_port)
        self.read_only = self.configured_read_only = read_only     # read_only: writes refused, for any reason
        self.software_write_protect = False                         # the control mode page's SWP
        self.attentions = attentions if attentions is not None else UnitAttentions()
        self.default_write_cache = bool(backstore.write_cache)
        self.block_size = backstore.block_size
        self.blocks = backstore.size // backstore.block_size
        self.max_transfer_blocks = MAX_TRANSFER_BYTES // self.block_size
        self.max_atomic_blocks = backstore.max_atomic_bytes // self.block_size   # 0: no WRITE ATOMIC
        self.crypto_erasable = hasattr(backstore, "rekey")     # encrypted at rest: SANITIZE CRYPTO ERASE
        self.blocks_per_physical = (physical_block_size or self.block_size) // self.block_size   # a power of 2
        self.thin = thin                    # thin-provisioned: UNMAP, WRITE SAME with UNMAP, GET LBA STATUS
        self.caw_lock: CompareAndWriteLock | None = None    # made by the first COMPARE AND WRITE or ORWRITE
        self.removable = removable          # INQUIRY RMB; START STOP UNIT loads and ejects the medium
        self.medium_loaded = True
        self.sanitize = IDLE                # medium.py: IDLE, SANITIZING or SANITIZE_FAILURE
        self.sanitize_rate = sanitize_rate  # bytes per second a sanitize may write (0: no limit)
        self.offline = False                # its image is gone (backstore/images.py): nothing touches the medium
        self.becoming_ready = False         # nothing touches the medium until its store may (target/osdmap_sync.py)
        # where a write's Data-Out is gathered (Command.start_write): page-aligned on an O_DIRECT store, so that
        # the backstore writes from it without a copy
        self.data_buffers = BufferPool(aligned=direct)
        self.refused = 0                    # command flags refused now (op.py's MODIFIES…ATOMIC): one test
        self._refuse()

    def _refuse(self) -> None:
        unready = self.offline or self.becoming_ready
        self.refused = ((MODIFIES if self.read_only or unready else 0)
                        | (0 if self.medium_loaded and self.sanitize == IDLE and not unready else MEDIUM)
                        | (BUSY if self.sanitize == SANITIZING else 0)
                        | (0 if self.thin else THIN) | (0 if self.max_atomic_blocks else ATOMIC))

    def refusal(self, flags: int) -> ScsiError:
        """Why a command with these refused flags is refused: a sanitize in progress, then an offline unit, then
        one becoming ready, then no medium (or a failed sanitize), then write protection, then a command this kind
        of unit does not serve."""
        if flags & BUSY:
            return ScsiError(NOT_READY, SANITIZE_IN_PROGRESS)
        if self.offline:
            # SPC-4 04/03: the unit will not become ready by itself (Linux sd gives up at once, no START UNIT);
            # 3A/00 MEDIUM NOT PRESENT is a removable unit's ejected medium, which START STOP UNIT can load
            return ScsiError(NOT_READY, MANUAL_INTERVENTION_REQUIRED)
        if self.becoming_ready:
            # 04/01: it will by itself (Linux retries the command, with a delay, for up to its retries × timeout)
            return ScsiError(NOT_READY, BECOMING_READY)
        if flags & MEDIUM:
            if self.sanitize == SANITIZE_FAILURE:
                return ScsiError(MEDIUM_ERROR, SANITIZE_COMMAND_FAILED)
            return ScsiError(NOT_READY, MEDIUM_NOT_PRESENT)
        if flags & MODIFIES:
            return ScsiError(DATA_PROTECT, WRITE_PROTECTED)
        return ScsiError(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)

    def set_medium(self, loaded: bool, sanitize: int = IDLE) -> None:
        """The removable medium was loaded or ejected, or a sanitize began or ended, through any worker."""
        if self.crypto_erasable and self.sanitize == SANITIZING != sanitize:
            self.backstore.reload_key()     # a CRYPTO ERASE through another worker replaced it
        self.medium_loaded = loaded
        self.sanitize = sanitize
        self._refuse()

    def take_offline(self) -> None:
        """The unit's image is gone: every command touching the medium or writing is NOT READY from now on, in
        this worker, until the target starts again (the SANITIZE of a unit in failure mode too)."""
        self.offline = True
        self._refuse()

    def set_becoming_ready(self, waiting: bool) -> None:
        """Whether the unit waits for its store to be safe to use (its RADOS clients not yet at a takeover's OSD
        map: target/osdmap_sync.py): every command touching the medium or writing is NOT READY, LOGICAL UNIT IS IN
        PROCESS OF BECOMING READY meanwhile, in this worker."""
        self.becoming_ready = waiting
        self._refuse()

    def resize(self, size: int) -> None:
        """The unit is `size` bytes now (`ringtgt resize`: its file or device grew), in the backstore too."""
        self.backstore.size = size
        self.blocks = size // self.block_size

    def set_mode(self, write_cache: bool, software_write_protect: bool) -> None:
        """The changeable mode parameters (WCE, SWP), as MODE SELECT through any worker left them."""
        self.backstore.write_cache = write_cache
        self.software_write_protect = software_write_protect
        self._write_protect()

    def set_configured_read_only(self, read_only: bool) -> None:
        """The configuration's `readonly` changed (a reload)."""
        self.configured_read_only = read_only
        self._write_protect()

    def _write_protect(self) -> None:
        self.read_only = self.configured_read_only or self.software_write_protect
        self._refuse()

    def establish_ua(self, asc_ascq: int, except_nexus: str | None = None) -> None:
        self.attentions.establish(asc_ascq, except_nexus)
