"""What a Connection needs from its host (the worker, or a test's stand-in): the seam of the sans-I/O layer."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..scsi.target import ScsiTarget
    from .access import AccessPolicy
    from .connection import Connection
    from .write_budget import WritePool


class Host(Protocol):
    """The environment of every connection on a worker: who may log in, TSIHs, the SCSI targets, the shared R2T
    budget, and the hooks a connection calls when its session starts and when it has output to send."""

    access: AccessPolicy
    portal_group_tag: int
    offers: dict[str, object] | None    # our values of negotiated keys, overriding negotiation.py's table
    write_pool: WritePool
    allocate_tsih: Callable[[], int]

    def scsi_target(self, iqn: str) -> ScsiTarget: ...

    def session_started(self, conn: Connection) -> None: ...

    def output_ready(self, conn: Connection) -> None: ...
