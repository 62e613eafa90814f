"""Reading the node's counter files (layout.py) into totals per LUN, per session and per worker, and what two
readings tell: rates and latency quantiles over the interval between them. Used by `ringtgt stats` and the
Prometheus collector; reads files only, so it works without the coordinator.

A file is copied whole between two reads of its seqlock (retried while the worker writes, for at most
READ_DEADLINE seconds); only the files of the current `serve` (the incarnation of the most recently published
file) count, so a worker index dropped from the configuration still adds what it counted, and an older
`serve`'s files do not. A worker a reload dropped (its index not below the running configuration's `workers`)
left its file: its counts stay with their LUNs, but it is no worker and holds no session any more.
"""
from __future__ import annotations

import glob
import mmap
import os
import time
from dataclasses import dataclass, field

from ..config import ConfigError
from ..running_config import load_running
from . import layout as L

READ_DEADLINE = 1.0


@dataclass
class Totals:
    """A slot's counters, or the sum of several (`add`): `words` as in a slot (layout.py), `since` the earliest."""

    words: list[int] = field(default_factory=lambda: [0] * L.SLOT_WORDS)
    since: int = 0                          # wall clock ns

    def add(self, words: list[int]) -> None:
        mine = self.words
        for i in range(L.S_KINDS, L.SLOT_WORDS):
            mine[i] += words[i]
        if words[L.S_SINCE] and (not self.since or words[L.S_SINCE] < self.since):
            self.since = words[L.S_SINCE]

    def histogram(self, kind: int) -> list[int]:
        start = L.S_KINDS + kind * L.KIND_WORDS + L.KIND_HIST
        return self.words[start:start + L.BUCKETS]

    def commands(self, kind: int) -> int:
        return sum(self.histogram(kind))

    def bytes(self, kind: int) -> int:
        return self.words[L.S_KINDS + kind * L.KIND_WORDS + L.KIND_BYTES]

    def latency_sum_ns(self, kind: int) -> int:
        return self.words[L.S_KINDS + kind * L.KIND_WORDS + L.KIND_SUM]

    def errors(self) -> dict[str, int]:
        return {name: self.words[L.S_ERRORS + i] for i, name in enumerate(L.SENSE_KEYS) if self.words[L.S_ERRORS + i]}

    def minus(self, earlier: Totals) -> Totals:
        return Totals([a - b for a, b in zip(self.words, earlier.words)], self.since)


@dataclass
class WorkerFile:
    index: int
    header: list[int]
    incarnation: str
    slots: list[tuple[tuple[str, int, tuple[str, str, str, str] | None], list[int]]]


@dataclass
class Snapshot:
    """The node's counters at one moment: `luns` by (target, lun), `sessions` by (target, initiator, isid, tsih)
    with their client address, `workers` by index (header gauges, pid)."""

    taken: float                            # time.monotonic() of the reading
    luns: dict[tuple[str, int], Totals]
    sessions: dict[tuple[str, str, str, str], tuple[str, Totals]]
    workers: dict[int, dict[str, int]]


def read_worker_file(path: str, index: int) -> WorkerFile | None:
    """One consistent copy of a worker's counter file; None if it is missing, foreign or kept busy past the
    deadline."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size != L.FILE_BYTES:
            return None
        mapped = mmap.mmap(fd, L.FILE_BYTES, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    try:
        return _copy(mapped, index)
    finally:
        mapped.close()


def _copy(mapped: mmap.mmap, index: int) -> WorkerFile | None:
    words = memoryview(mapped).cast("B")[:L.LABELS_OFFSET].cast("Q")
    try:
        if words[L.H_MAGIC] != L.MAGIC or words[L.H_VERSION] != L.VERSION:
            return None
        deadline = time.monotonic() + READ_DEADLINE
        while True:
            seq = words[L.H_SEQ]
            if not seq & 1:
                header = words[:L.HEADER_WORDS].tolist()
                used = min(header[L.H_USED], L.MAX_SLOTS)
                counts = words[L.SLOTS_WORD:L.SLOTS_WORD + used * L.SLOT_WORDS].tolist()
                labels = mapped[L.LABELS_OFFSET:L.LABELS_OFFSET + used * L.LABEL_BYTES]
                if words[L.H_SEQ] == seq:
                    break
            if time.monotonic() > deadline:
                return None
            time.sleep(0.001)
    finally:
        del words
    incarnation = mapped[L.HEADER_WORDS * 8:L.HEADER_BYTES].rstrip(b"\0").decode(errors="replace")
    slots = []
    for slot in range(used):
        slot_words = counts[slot * L.SLOT_WORDS:(slot + 1) * L.SLOT_WORDS]
        if slot_words[L.S_STATE] != L.FREE:
            slots.append((L.decode_label(labels[slot * L.LABEL_BYTES:(slot + 1) * L.LABEL_BYTES]), slot_words))
    return WorkerFile(index, header, incarnation, slots)


def read_node(state_dir: str) -> Snapshot:
    """Every counter file of the running `serve` under `state_dir`, summed up."""
    files = []
    for path in glob.glob(os.path.join(state_dir, "stats", "worker-*.stats")):
        number = os.path.basename(path)[len("worker-"):-len(".stats")]
        if number.isdigit():
            worker = read_worker_file(path, int(number))
            if worker is not None:
                files.append(worker)
    current = max(files, key=lambda w: w.header[L.H_PUBLISHED_WALL]).incarnation if files else None
    running = _configured_workers(state_dir)
    luns: dict[tuple[str, int], Totals] = {}
    sessions: dict[tuple[str, str, str, str], tuple[str, Totals]] = {}
    workers = {}
    for worker in sorted(files, key=lambda w: w.index):
        if worker.incarnation != current:
            continue
        dropped = running is not None and worker.index >= running
        header = worker.header
        if not dropped:
            workers[worker.index] = {"pid": header[L.H_PID], "started": header[L.H_STARTED],
                                     "restarts": header[L.H_RESTARTS], "connections": header[L.H_CONNECTIONS],
                                     "sessions": header[L.H_SESSIONS], "inflight": header[L.H_INFLIGHT],
                                     "published": header[L.H_PUBLISHED]}
        for (target, lun, session), words in worker.slots:
            luns.setdefault((target, lun), Totals()).add(words)
            if session is not None and not dropped:
                initiator, isid, tsih, client = session
                key = (target, initiator, isid, tsih)
                sessions.setdefault(key, (client, Totals()))[1].add(words)
    return Snapshot(time.monotonic(), luns, sessions, workers)


def _configured_workers(state_dir: str) -> int | None:
    """The running configuration's `workers` (None without one: every file counts as a worker's)."""
    try:
        return load_running(state_dir).server.workers
    except ConfigError:
        return None


def interval(now: Snapshot, before: Snapshot) -> float:
    """Seconds between two readings as the counts saw them: the mean of the workers' times between their publishes
    (each worker's counts are as of its last publish, up to PUBLISH_SECONDS before the reading); the readings'
    own interval if no worker published in between."""
    deltas = [worker["published"] - before.workers[index]["published"] for index, worker in now.workers.items()
              if index in before.workers and worker["published"] > before.workers[index]["published"]]
    return sum(deltas) / len(deltas) / 1e9 if deltas else now.taken - before.taken


def quantile(q: float, histogram: list[int]) -> float | None:
    """The `q` quantile in seconds of a histogram of layout.py's buckets, interpolating linearly within the bucket
    (as Prometheus's histogram_quantile does); None without counts. In the last bucket: its lower bound."""
    total = sum(histogram)
    if not total:
        return None
    bounds = L.bucket_bounds()
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = bounds[i - 1] if i else 0.0
            if i == len(histogram) - 1:
                return lower
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-2]
