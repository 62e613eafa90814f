"""The R2T budget: how much write data a connection, and all the connections of a worker, solicit at once.

A write that needs R2Ts is charged its whole data-out (`Command.wanted`, at most 16 MiB) when its first R2T is
due and keeps the charge until nothing of it is held any more: it completed, or, aborted, its solicited Data-Out
drained and the SCSI layer let go of it. Writes beyond the budget wait, in order of arrival, for their first R2T
(RFC 7143 §11.8: when to solicit is the target's choice). The connection keeps its own charges and queue
(Connection.admit_writes); this module is the worker's side of it.

So that no write waits forever and no connection starves another, a connection that holds nothing always gets
its next write, whatever the pool holds; beyond that its writes fit CONNECTION_WRITE_BUDGET and the worker's
pool, which serves waiting connections in turn. A connection then holds at most CONNECTION_WRITE_BUDGET of
solicited data, a worker at most WORKER_WRITE_BUDGET plus one write per connection.
"""
from __future__ import annotations

from typing import Protocol

CONNECTION_WRITE_BUDGET = 32 << 20
WORKER_WRITE_BUDGET = 256 << 20


class Waiter(Protocol):
    """What the pool needs of a connection waiting for room (Connection.admit_writes)."""

    def admit_writes(self) -> bool: ...


class WritePool:
    """The bytes charged to a worker's writes, and the connections waiting for room in it (in turn)."""

    __slots__ = ("limit", "held", "waiting")

    def __init__(self, limit: int = WORKER_WRITE_BUDGET) -> None:
        self.limit = limit
        self.held = 0
        self.waiting: dict[Waiter, None] = {}         # Connection -> None, in the order they began to wait

    def take(self, size: int) -> None:
        """Charge a connection's one guaranteed write (it held nothing), room or not."""
        self.held += size

    def grant(self, conn: Waiter, size: int) -> bool:
        """Charge `size` for `conn` if it fits and no connection waits before it; else `conn` waits its turn."""
        waiting = self.waiting
        if self.held + size <= self.limit and (not waiting or next(iter(waiting)) is conn):
            self.held += size
            return True
        waiting[conn] = None
        return False

    def release(self, size: int) -> None:
        """`size` bytes are free again: the waiting connections take their turns until one whose next write
        does not fit (it stays first)."""
        self.held -= size
        waiting = self.waiting
        while waiting:
            conn = next(iter(waiting))
            if conn.admit_writes():
                return
            del waiting[conn]

    def withdraw(self, conn: Waiter) -> None:
        """`conn` no longer waits (it closed, or the write it waited for was aborted): the next in turn may fit."""
        if conn in self.waiting:
            del self.waiting[conn]
            self.release(0)
