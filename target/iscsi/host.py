"""What a Connection needs from its host (the worker, or a test's stand-in): the seam of the sans-I/O layer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..scsi.target import ScsiTarget
    from .access import AccessPolicy
    from .connection import Connection
    from .write_budget import WritePool


class Host(Protocol):
    """The environment of every connection on a worker: who may log in, TSIHs, the SCSI targets, the shared R2T
    budget, and the hooks a connection calls when its session starts and when it has output to send."""

    @property
    def access(self) -> AccessPolicy: ...

    @property
    def portal_group_tag(self) -> int: ...

    @property
    def offers(self) -> Mapping[str, object] | None: ...     # our values of negotiated keys (negotiation.py)

    @property
    def write_pool(self) -> WritePool: ...

    def allocate_tsih(self) -> int: ...

    def scsi_target(self, iqn: str) -> ScsiTarget: ...

    def session_started(self, conn: Connection) -> None: ...

    def output_ready(self, conn: Connection) -> None: ...

    def send_linked(self, conn: Connection, out: memoryview) -> tuple[int, memoryview, int, int] | None:
        """`out` as the connection's next send, queued by the caller linked to a disk read (the worker's
        `Ring.prep_read_send`): (socket fd, out, the send's ring token, send flags); None when it cannot be now. It
        reports its first completion with `linked_send_completed`, then the send with `output_sent` as any other."""
