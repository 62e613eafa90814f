"""What a Connection needs from its host (the worker, or a test's stand-in): the seam of the sans-I/O layer."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..scsi.task import ScsiTask
    from .access import AccessPolicy
    from .connection import Connection
    from .write_budget import WritePool


class ScsiPort(Protocol):
    """What a Connection needs of the SCSI target of its session (target/scsi/target.py's ScsiTarget, or a test's
    stand-in): a Protocol, so that the compiled connection (target/compiled.py) checks no class at run time."""

    def has_lun(self, lun: int) -> bool: ...

    def attach(self, nexus: str, session: Connection) -> None: ...

    def detach(self, nexus: str, session: Connection) -> None: ...

    def data_out_length(self, lun: int, cdb: bytes) -> int: ...

    def data_out_buffers(self, lun: int) -> Callable[[int], memoryview] | None: ...

    def unit_wide(self, cdb: bytes) -> bool: ...

    def execute(self, task: ScsiTask) -> None: ...

    def reset_lun(self, lun: int, nexus: str, done: Callable[[], None]) -> None: ...

    def reset_target(self, nexus: str, cold: bool, done: Callable[[], None]) -> None: ...

    def clear_task_set(self, lun: int, nexus: str, done: Callable[..., None]) -> None: ...


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

    def scsi_target(self, iqn: str) -> ScsiPort: ...

    def session_started(self, conn: Connection) -> None: ...

    def output_ready(self, conn: Connection) -> None: ...

    def send_linked(self, conn: Connection, out: memoryview) -> tuple[int, memoryview, int, int] | None:
        """`out` as the connection's next send, queued by the caller linked to a disk read (the worker's
        `Ring.prep_read_send`): (socket fd, out, the send's ring token, send flags); None when it cannot be now. It
        reports its first completion with `linked_send_completed`, then the send with `output_sent` as any other."""
