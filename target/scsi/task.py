"""The SCSI task: what the iSCSI layer hands to the SCSI layer, and how the answer comes back."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..iscsi.pdu import Buf

# the statuses a task ends with, defined beside the unit state machines that answer with them too
from coordinator.unit_state.status import (BUSY, CHECK_CONDITION, CONDITION_MET, GOOD,  # noqa: F401
                                           RESERVATION_CONFLICT, TASK_ABORTED, TASK_SET_FULL)


class Barrier:
    """Runs `then()` once `release()` was called and every callback `hold()` handed out has run: used to answer
    a task management function (or ack its push) only when the tasks it aborted have stopped."""

    __slots__ = ("count", "then")

    def __init__(self, then: Callable[[], None]) -> None:
        self.count = 1
        self.then = then

    def hold(self) -> Callable[[], None]:
        self.count += 1
        return self.release

    def release(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.then()


class ScsiTask:
    """One SCSI command on one I_T nexus.

    The transport fills in the request fields and `done` (iSCSI's Command is one: a subclass); the SCSI layer calls
    `finish()` exactly once.
    `data_in` may be longer than `expected_length`: the transport truncates and reports the residual.
    For commands that carry data out, the SCSI layer sets `transfer_length` to the byte count the CDB asks
    for (it writes no more than the transport received); the transport reports the residual against it.
    `send_with_read`, set by the transport where it can send a read's data-in the moment the disk has it (a
    connection with nothing else in flight): READ hands it, bound to the task, to a backstore that reads the whole
    transfer in one ring op (`sends_with_read`), which calls it with the buffer it reads into right before it
    queues the read; it returns (socket fd, what to send, the send's token, its flags) for
    `Ring.prep_read_send`, or None (not now).
    """

    __slots__ = ("lun", "cdb", "nexus", "initiator_name", "expected_length", "read", "write",
                 "data_out", "done", "status", "data_in", "sense", "transfer_length", "remote", "send_with_read")

    def __init__(self, lun: int, cdb: bytes, nexus: str, initiator_name: str, expected_length: int,
                 read: bool, write: bool, data_out: memoryview | None, done: Callable[[ScsiTask], None]) -> None:
        self.lun = lun
        self.cdb = cdb
        self.nexus = nexus
        self.initiator_name = initiator_name
        self.expected_length = expected_length
        self.read = read
        self.write = write
        self.data_out = data_out
        self.done = done
        self.status = GOOD
        self.data_in: Buf | None = None
        self.sense: bytes | None = None
        self.transfer_length: int | None = None
        self.remote = False             # waiting for the coordinator (not for the disk)
        self.send_with_read: Callable[[ScsiTask, memoryview], tuple[int, memoryview, int, int] | None] | None = None

    def finish(self, status: int = GOOD, data: Buf | None = None, sense: bytes | None = None) -> None:
        self.status = status
        self.data_in = data
        self.sense = sense
        self.done(self)
