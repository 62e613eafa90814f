"""The worker's counters (layout.py): counted per I/O in a process-local list, published to the worker's counter
file a few times a second, under a seqlock so a reader never sees a half-written file.

Per I/O the connection stamps a command at its arrival (`Command.arrived`, one clock read per received batch) and
notes its data bytes; `count()` runs once per send completion with one clock read and, per command, adds its
bytes, its service time (arrival to response sent) and one histogram bucket: three list additions, no message, no
system call. A LUN's counts on this worker are its LUN slot (what ended sessions counted, folded in when they end)
plus its live sessions' slots, so a LUN's totals only ever grow while sessions come and go.

A worker restarted by the same supervisor (the file's incarnation is the supervisor's) adopts the file: the LUN
slots keep counting, the dead worker's sessions are folded into them, `restarts` goes up. What the dead worker
counted since its last publish (PUBLISH_SECONDS apart while busy) is lost. A new `serve` starts from zero.
"""
from __future__ import annotations

import logging
import mmap
import os
import time
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from coordinator.lograte import RateLimitedLog

from . import layout as L

if TYPE_CHECKING:
    from ..iscsi.command import Command
    from ..iscsi.connection import Connection

log = logging.getLogger(f"ringtgt.{__name__}")

PUBLISH_SECONDS = 0.25

# CDB operation code -> the kind's offset in a slot: READ(6/10/12/16), WRITE(6/10/12/16) and WRITE AND
# VERIFY(10/12/16) are reads and writes, everything else is "other"
_READS = (0x08, 0x28, 0xA8, 0x88)
_WRITES = (0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E)
KIND_OFFSET: Final = tuple(L.S_KINDS + (L.READ if op in _READS else L.WRITE if op in _WRITES else L.OTHER)
                           * L.KIND_WORDS for op in range(256))

# int.bit_length() of a service time -> its histogram counter's offset in a kind
HIST_OF: Final = tuple(L.KIND_HIST + bucket for bucket in L.BUCKET_OF)


def kind_of(opcode: int) -> str:
    return L.KINDS[(KIND_OFFSET[opcode] - L.S_KINDS) // L.KIND_WORDS]


class WorkerCounters:
    """One worker's counters and its counter file. `luns`, the configured (target, LUN) pairs, get their slots at
    once (their series exist from the start); a LUN added later gets one from its first command."""

    def __init__(self, state_dir: str, index: int, incarnation: str, luns: list[tuple[str, int]]) -> None:
        directory = os.path.join(state_dir, "stats")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, L.file_name(index))
        self.counts: list[int] = []
        self.labels: list[bytes] = []
        self._dirty_labels: set[int] = set()
        self._free: list[int] = []
        self._lun_slots: dict[tuple[str, int], int] = {}           # (target, lun) -> base index into counts
        self._sessions: dict[Connection, dict[int, int]] = {}       # connection -> lun -> base index
        self.limited_log = RateLimitedLog(log)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            adopted = self._adopt(fd, incarnation)
            if not adopted:
                os.ftruncate(fd, 0)                 # whatever was there: zeros
                os.ftruncate(fd, L.FILE_BYTES)
            self._map = mmap.mmap(fd, L.FILE_BYTES)
        finally:
            os.close(fd)
        self._words = memoryview(self._map).cast("B")[:L.LABELS_OFFSET].cast("Q")
        self._header = self._words[:L.HEADER_WORDS]
        self._slots = memoryview(self._map).cast("B")[L.SLOTS_OFFSET:L.LABELS_OFFSET].cast("Q")
        header = self._header
        if not adopted:
            header[L.H_MAGIC], header[L.H_VERSION], header[L.H_STARTED] = L.MAGIC, L.VERSION, time.time_ns()
            self._map[L.HEADER_WORDS * 8:L.HEADER_WORDS * 8 + len(incarnation.encode())] = incarnation.encode()
        else:
            header[L.H_RESTARTS] += 1
        header[L.H_PID] = os.getpid()
        for target, lun in luns:
            self._lun_slot(target, lun)
        self.publish(0, 0, 0)

    def _adopt(self, fd: int, incarnation: str) -> bool:
        """Take over the file a dead worker of this supervisor left: its slots into `counts`, its sessions folded
        into their LUNs' slots. False if the file is another `serve`'s, another layout's, or was left mid-write."""
        if os.fstat(fd).st_size != L.FILE_BYTES:
            return False
        with mmap.mmap(fd, L.FILE_BYTES, access=mmap.ACCESS_READ) as old:
            words = memoryview(old).cast("B")[:L.LABELS_OFFSET].cast("Q")
            try:
                header = words[:L.HEADER_WORDS].tolist()
                raw = old[L.HEADER_WORDS * 8:L.HEADER_BYTES].rstrip(b"\0").decode(errors="replace")
                if header[L.H_MAGIC] != L.MAGIC or header[L.H_VERSION] != L.VERSION or header[L.H_SEQ] & 1 \
                        or raw != incarnation:
                    return False
                used = header[L.H_USED]
                self.counts = words[L.SLOTS_WORD:L.SLOTS_WORD + used * L.SLOT_WORDS].tolist()
                self.labels = [old[L.LABELS_OFFSET + i * L.LABEL_BYTES:L.LABELS_OFFSET + (i + 1) * L.LABEL_BYTES]
                               .rstrip(b"\0") for i in range(used)]
            finally:
                del words
        sessions = []
        for slot in range(used):
            state = self.counts[slot * L.SLOT_WORDS + L.S_STATE]
            if state == L.FREE:
                self._free.append(slot * L.SLOT_WORDS)
                continue
            target, lun, session = L.decode_label(self.labels[slot])
            if session is None:
                self._lun_slots[target, lun] = slot * L.SLOT_WORDS
            else:
                sessions.append((slot * L.SLOT_WORDS, target, lun))
        for base, target, lun in sessions:
            self._fold(base, target, lun)
        log.info("counters of worker file %s adopted: %d LUN slots, %d sessions of the dead worker folded in",
                 self.path, len(self._lun_slots), len(sessions))
        return True

    # -- slots ------------------------------------------------------------------------------------------------------
    def _new_slot(self, state: int, label: bytes) -> int | None:
        if self._free:
            base = self._free.pop()
        elif len(self.counts) < L.MAX_SLOTS * L.SLOT_WORDS:
            base = len(self.counts)
            self.counts.extend([0] * L.SLOT_WORDS)
            self.labels.append(b"")
        else:
            return None
        self.counts[base + L.S_STATE] = state
        self.counts[base + L.S_SINCE] = time.time_ns()
        self.labels[base // L.SLOT_WORDS] = label
        self._dirty_labels.add(base // L.SLOT_WORDS)
        return base

    def _lun_slot(self, target: str, lun: int) -> int | None:
        """The LUN's own slot on this worker; None if every slot is taken."""
        base = self._lun_slots.get((target, lun))
        if base is None:
            base = self._new_slot(L.LUN, L.encode_label(target, lun, None))
            if base is not None:
                self._lun_slots[target, lun] = base
        return base

    def _session_slot(self, conn: Connection, lun: int) -> int | None:
        """The slot of `conn`'s session on `lun`: a new one at its first command there; its LUN's own slot once
        MAX_SLOTS are taken (counted, but not per session); None for a LUN its target does not have (now: a LUN
        added while the worker runs is counted from its first command)."""
        target = conn.session_key[2] if conn.session_key is not None else None
        if target is None or conn.target is None or not conn.target.has_lun(lun):
            return None
        initiator, isid, _ = conn.session_key  # type: ignore[misc]   # a session's key: set at its login
        session = (initiator, f"0x{isid:012x}", str(getattr(conn, "tsih", 0)), "%s:%d" % conn.peer_address)
        base = self._new_slot(L.SESSION, L.encode_label(target, lun, session))
        if base is None:
            self.limited_log.warning("slots", "%d counter slots in use: %s's commands on LUN %d are counted for "
                                     "the LUN only, if it has a slot", L.MAX_SLOTS, initiator, lun)
            base = self._lun_slots.get((target, lun))
            if base is None:
                return None
        self._sessions.setdefault(conn, {})[lun] = base
        return base

    def _fold(self, base: int, target: str, lun: int) -> None:
        """A session's slot into its LUN's, then free; it becomes the LUN's slot if the LUN has none yet."""
        counts = self.counts
        into = self._lun_slots.get((target, lun))
        if into is None:
            counts[base + L.S_STATE] = L.LUN
            self.labels[base // L.SLOT_WORDS] = L.encode_label(target, lun, None)
            self._dirty_labels.add(base // L.SLOT_WORDS)
            self._lun_slots[target, lun] = base
            return
        for i in range(L.S_KINDS, L.SLOT_WORDS):
            counts[into + i] += counts[base + i]
        counts[base:base + L.SLOT_WORDS] = [0] * L.SLOT_WORDS
        self.labels[base // L.SLOT_WORDS] = b""
        self._dirty_labels.add(base // L.SLOT_WORDS)
        self._free.append(base)

    def session_ended(self, conn: Connection) -> None:
        slots = self._sessions.pop(conn, None)
        if not slots:
            return
        target: str = conn.session_key[2]   # type: ignore[index,assignment]   # it had slots: a normal session
        for lun, base in slots.items():
            if base != self._lun_slots.get((target, lun)):      # not one counted for the LUN only
                self._fold(base, target, lun)

    # -- per I/O ----------------------------------------------------------------------------------------------------
    def count(self, conn: Connection, commands: Sequence[Command], now: int) -> None:
        """`commands`' responses were sent at `now` (monotonic ns): their bytes, service times and errors."""
        counts = self.counts
        slots = self._sessions.get(conn)
        if slots is None:
            slots = self._sessions[conn] = {}
        kind_offset, hist_of = KIND_OFFSET, HIST_OF
        for command in commands:
            base = slots.get(command.lun)
            if base is None:
                base = self._session_slot(conn, command.lun)
                if base is None:
                    continue
            kind = base + kind_offset[command.cdb[0]]
            latency = now - command.arrived
            # (`a[i] = a[i] + n`, not `a[i] += n`: compiled, the first adds native ints, the second calls the generic
            # in-place add)
            bucket = kind + hist_of[latency.bit_length()]
            counts[bucket] = counts[bucket] + 1
            counts[kind + 1] = counts[kind + 1] + latency       # KIND_SUM
            sent = command.sent
            if sent >= 0:
                counts[kind] = counts[kind] + sent              # KIND_BYTES
            else:
                sense = command.failed_sense
                counts[base + L.S_ERRORS + (sense[2] & 0x0F if sense is not None and len(sense) > 2
                                            else L.NO_SENSE_STATUS)] += 1

    # -- publish ----------------------------------------------------------------------------------------------------
    def publish(self, connections: int, sessions: int, inflight: int) -> None:
        """Copy the counts to the file, with the worker's gauges; readers retry while `seq` is odd."""
        header = self._header
        header[L.H_SEQ] += 1
        counts = self.counts
        self._slots[:len(counts)] = array("Q", counts)
        for slot in self._dirty_labels:
            start = L.LABELS_OFFSET + slot * L.LABEL_BYTES
            label = self.labels[slot]
            self._map[start:start + L.LABEL_BYTES] = label + bytes(L.LABEL_BYTES - len(label))
        self._dirty_labels.clear()
        header[L.H_USED] = len(counts) // L.SLOT_WORDS
        header[L.H_CONNECTIONS], header[L.H_SESSIONS], header[L.H_INFLIGHT] = connections, sessions, inflight
        header[L.H_PUBLISHED], header[L.H_PUBLISHED_WALL] = time.monotonic_ns(), time.time_ns()
        header[L.H_SEQ] += 1

    def close(self) -> None:
        for view in (self._header, self._slots, self._words):   # the mmap closes once no view exports it
            view.release()
        self._map.close()
