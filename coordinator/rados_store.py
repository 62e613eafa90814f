"""The state store of an RBD LUN (coordinator/unit_store.py): one RADOS object per LUN, `ringtgt.unit.<image>` in
the image's pool, holding {"format": FORMAT, "unit": …, "sanitize": …} as JSON (the unit's whole SCSI state,
`UnitState.record()` in coordinator/unit_service.py, and its sanitize record), written as a versioned object
(target/backstore/rados_objects.py): a coordinator that has not seen the last write (another node's) is refused
instead of overwriting it. Its save answers Stale with what is stored; the unit then takes that state. An object
an older ringtgt wrote ({"aptpl": …}: the APTPL state alone) reads as a unit record of those reservations. Keys
it does not know are kept (written back as they were) and otherwise ignored, logged once per object; an object of a
higher `format` (an incompatible change by a newer ringtgt) is refused, never written over: its load fails (the
coordinator's start exits naming it and both formats), and so does every save and read of it.

The coordinator's loop never waits on RADOS, except at start and when a reload adds a LUN (`load`, at most
LOAD_DEADLINE): a thread of its own (`RadosStateClient`) runs every read and write in order, on one librados client
per Ceph client whose operations time out after OP_TIMEOUT_SECONDS, and hands each result back through an eventfd
the loop watches. A save not answered within SAVE_DEADLINE fails (StoreFailed) whatever the thread is doing, below
the workers' request deadline, so the command that waits for it gets its sense, not BUSY. A failure is logged once
per Ceph client until a save works again.

A save refused because the object changed is made again on top of what it holds when that is no conflict: the
object's reservations are those the save was `based_on` (a peer's write this coordinator already has from the
cluster bus, or one that changed only facts whose loss is harmless: those of this save win), or the object holds
our own earlier write that failed (timed out, or answered after the save's deadline) and landed after all (an OSD
that was only slow), or the save is of a sanitize record (the unit's own fact, independent of the rest). A save is
also refused when what the thread last read or wrote has other reservations than those it was based on (after a
refusal or a `refresh` the unit takes the stored state; a save queued before that was based on the old one), unless
a fresh read shows them after all.

After a takeover fenced a peer, the thread's clients begin their wait for the OSD map of the blocklist at once, and
every write waits until its client has it (coordinator/store_osdmap.py, `osdmap_barrier`): one not there in time is
held (StoreBehind), without the loop ever waiting.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from target.backstore.base import BackstoreError
from target.backstore.fencing import NodeFenced, record
from target.backstore.rados import CONNECT_TIMEOUT_SECONDS, Connection
from target.backstore.rados_objects import StaleObject, read_versioned, write_versioned
from target.backstore.rbd_image import CephClient, RbdImage

from .store_osdmap import OsdMapWaits
from .unit_store import SANITIZE, UNIT, Done, SaveResult, Stale, StoreBehind, StoreFailed, StoreFenced

log = logging.getLogger("ringtgt.coordinator")

OBJECT_PREFIX = "ringtgt.unit."
OP_TIMEOUT_SECONDS = 2
SAVE_DEADLINE = 3.0             # below the workers' REQUEST_TIMEOUT (coordinator/client.py)
LOAD_DEADLINE = CONNECT_TIMEOUT_SECONDS + 2 * OP_TIMEOUT_SECONDS
HEARTBEAT_SECONDS = 0.5         # as often as the loop turns (target/watchdog.py)
SANITIZE_ATTEMPTS = 3
_EMPTY: dict = {UNIT: None, SANITIZE: None}
FORMAT = 1                  # the object's "format" (none: 1), raised only by a change older readers would get wrong
_FORMAT = "format"
_OLD_APTPL = "aptpl"        # the key of an older ringtgt's object: the APTPL state alone
_UNKNOWN = object()         # RadosStore.record after `forget`: equal to no state, so the next change is saved
_UNSET = object()           # a save based on no state in particular


class _Job:
    __slots__ = ("run", "done", "owner", "result", "finished", "expired")

    def __init__(self, run: Callable[[], object], done: Callable[[object], None] | None, owner: object = None):
        self.run = run
        self.done = done
        self.owner = owner
        self.result: object = None
        self.finished = threading.Event()
        self.expired = False


class RadosStateClient:
    """The coordinator's RADOS thread: `call` waits for a result (start, reload), `submit` hands it to `done` on the
    loop (or waits too, before `attach`); both run jobs one at a time, in order."""

    def __init__(self, heartbeat: Callable[[], None] = lambda: None, node: str | None = None) -> None:
        """`node`: this cluster node's name, under which the thread's client is recorded for fencing in every
        pool before its first operation there (target/backstore/fencing.py); None: not a cluster node."""
        self._heartbeat = heartbeat         # the supervisor's watchdog, while `call` waits
        self._node = node
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._finished: deque[_Job] = deque()
        self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._connections: dict[CephClient, Connection] = {}     # the thread's alone
        self._failing: set[CephClient] = set()                    # the loop's: clients whose failure was logged
        self._maps = OsdMapWaits()                                # a takeover's OSD map, before each write
        self._unfinished: dict[object, int] = {}                  # the loop's: owner -> its jobs the thread has
        self._call_later: Callable[[float, Callable[[], None]], None] | None = None
        self._thread = threading.Thread(target=self._run, name="rados-state", daemon=True)
        self._thread.start()

    def attach(self, service) -> None:
        service.watch(self._eventfd, self._drain)
        self._call_later = service.call_later

    def osdmap_barrier(self, epochs: dict[str, int], then: Callable[[dict[str, str]], None]) -> None:
        """(The loop) a takeover blocklisted a peer in these OSD map epochs (per cluster, fencing.cluster_of): the
        thread's clients there begin their wait for that map now, and every write of a unit object there waits for
        it first (store_osdmap.py). `then(behind)`: the clients not at the map within the wait's deadline, or not
        known to be (the thread did not answer), each with why."""
        self._maps.want(epochs)

        def answered(result: object) -> None:
            if isinstance(result, dict):
                then({str(client): why for client, why in result.items()})
            else:
                then({"": f"not known to be at the takeover's OSD map: {result}"})
        self.submit(lambda: self._maps.at_takeover(list(self._connections.values())), answered)

    def at_map(self, rbd: RbdImage) -> None:
        """For a job about to write (in the thread): StoreBehind unless the client is at the OSD map a takeover
        wants (waits WAIT_SECONDS at most)."""
        self._maps.before_write(self._connection(rbd))

    def _connection(self, rbd: RbdImage) -> Connection:
        conn = self._connections.get(rbd.client)
        if conn is None:
            conn = self._connections[rbd.client] = Connection(rbd.client, rados_osd_op_timeout=str(OP_TIMEOUT_SECONDS))
        return conn

    def ioctx(self, rbd: RbdImage):
        """For jobs (in the thread): the pool's ioctx on the client's connection, connected at first use."""
        conn = self._connection(rbd)
        if self._node is not None:          # a takeover must be able to fence this client too (BackstoreError:
            recorded = record(rbd.client, rbd.pool, self._node, "coordinator", conn)   # not recorded, or fenced)
            if recorded:
                log.info("units' state in pool %s: written by %s at %s (recorded for fencing)", rbd.pool,
                         rbd.client, ", ".join(recorded))
        return conn.ioctx(rbd.pool)

    def call(self, run: Callable[[], object], deadline: float) -> object:
        job = _Job(run, None)
        self._jobs.put(job)
        end = time.monotonic() + deadline
        while not job.finished.wait(min(HEARTBEAT_SECONDS, max(0.0, end - time.monotonic()))):
            if time.monotonic() >= end:
                job.expired = True
                return StoreFailed(f"no answer from the Ceph cluster within {deadline:.0f} s")
            self._heartbeat()
        return job.result

    def submit(self, run: Callable[[], object], done: Callable[[object], None], owner: object = None) -> None:
        if self._call_later is None:          # the coordinator's start, before its loop: wait here
            done(self.call(run, SAVE_DEADLINE))
            return
        job = _Job(run, done, owner)
        self._unfinished[owner] = self._unfinished.get(owner, 0) + 1
        self._jobs.put(job)
        self._call_later(SAVE_DEADLINE, lambda: self._expire(job))

    def busy(self, owner: object) -> bool:
        """Whether the thread still has a job `owner` submitted (answered at its deadline or not)."""
        return self._unfinished.get(owner, 0) > 0

    def report(self, client: CephClient, where: str, result: SaveResult) -> None:
        """Log a failure once per Ceph client, and when it answers again (a client behind a takeover's OSD map: by
        store_osdmap.py)."""
        if isinstance(result, StoreBehind):
            return
        if isinstance(result, StoreFailed):
            if client not in self._failing:
                self._failing.add(client)
                log.error("%s: %s: commands that must save the unit's state fail (NOT READY, LOGICAL UNIT "
                          "COMMUNICATION FAILURE) until it answers (not logged again until then)", where, result)
        elif client in self._failing:
            self._failing.discard(client)
            log.info("%s: the Ceph cluster answers again", where)

    def close(self) -> None:
        """Stop the thread (at most OP_TIMEOUT_SECONDS: one still connecting is left to the process's exit)."""
        self._jobs.put(None)
        self._thread.join(timeout=OP_TIMEOUT_SECONDS)
        if not self._thread.is_alive():
            os.close(self._eventfd)

    def _expire(self, job: _Job) -> None:
        if not job.finished.is_set() and not job.expired:
            self._answer(job, StoreFailed(f"no answer from the Ceph cluster within {SAVE_DEADLINE:.0f} s"))

    @staticmethod
    def _answer(job: _Job, result: object) -> None:
        """The job's `done`, once (the deadline's or the thread's answer, whichever comes first); what it raises is
        logged, and the loop goes on."""
        job.expired = True
        assert job.done is not None
        try:
            job.done(result)
        except Exception:
            log.exception("RADOS unit state: handling the answer %r failed", result)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.result = job.run()
            except NodeFenced as exc:
                job.result = StoreFenced(str(exc))
            except StoreFailed as exc:          # StoreBehind
                job.result = exc
            except (BackstoreError, ValueError) as exc:       # ValueError: a malformed object
                job.result = StoreFailed(str(exc))
            except Exception as exc:        # a bug: this job fails, the thread serves the next ones
                log.exception("RADOS unit state: a job failed")
                job.result = StoreFailed(f"internal error: {exc!r}")
            job.finished.set()
            if job.done is not None:
                self._finished.append(job)
                os.eventfd_write(self._eventfd, 1)
        for conn in self._connections.values():
            if not self._maps.waiting(conn.client):     # else left to the process's exit: librados still waits in it
                conn.close()

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._eventfd)
        except BlockingIOError:
            return
        while self._finished:
            job = self._finished.popleft()
            if (left := self._unfinished.pop(job.owner) - 1) > 0:
                self._unfinished[job.owner] = left
            if not job.expired:
                self._answer(job, job.result)


class RadosStore:
    """The state of one RBD LUN in RADOS (see the module doc). `record` and `sanitize`: what the object holds as far
    as this coordinator knows (`forget` when a peer's state was adopted: the next save then finds out)."""

    deferred = True
    save_deadline = SAVE_DEADLINE

    @property
    def busy(self) -> bool:
        """A read or write of this store is still in the thread (even one answered at its deadline): a write
        behind waits for it, so that a cluster that does not answer does not pile them up."""
        return self._client.busy(self)

    def __init__(self, client: RadosStateClient, rbd: RbdImage, unit: str):
        self._client = client
        self._rbd = rbd
        self.oid = OBJECT_PREFIX + rbd.name
        self.where = f"{unit}: RADOS object {rbd.pool}/{self.oid}"
        self.record: dict | None | object = None
        self.sanitize: dict | None = None
        self._taken: dict = dict(_EMPTY)        # the loop's: per key, what it last took or wrote (`forget` aside)
        self._generation = 0                    # the thread's: the object's generation as last read or written
        self._stored: dict = dict(_EMPTY)       # the thread's: its content then
        self._in_doubt: tuple[int, dict] | None = None     # the thread's: a write that failed, which may still land
        self._written: tuple[int, dict] | None = None       # the thread's: its last write that worked
        self._mine: dict[str, object] = {}      # the thread's: per key, the value it last wrote (or may have)
        self._told: set[str] = set()            # the thread's: what about the object was logged already

    def load(self) -> tuple[dict | None, dict | None]:
        result = self._client.call(self._read, LOAD_DEADLINE)
        if isinstance(result, StoreFailed):
            raise type(result)(f"{self.where}: {result}")
        assert isinstance(result, dict)
        self._take(result)
        return result[UNIT], result[SANITIZE]

    def forget(self) -> None:
        self.record = _UNKNOWN

    def _take(self, content: dict) -> None:
        """(On the loop) the unit has (or takes) `content`'s keys as the object holds them."""
        self._taken.update({key: content[key] for key in _EMPTY if key in content})
        self.record = self._taken[UNIT] if UNIT in content else self.record
        self.sanitize = self._taken[SANITIZE]

    def save(self, key: str, value: dict | None, done: Done | None = None, based_on: object = _UNSET) -> None:
        """Save `value` under `key` (UNIT: a unit record, `based_on` the reservations it was derived from)."""
        expected = _UNSET if based_on is _UNSET else json.loads(json.dumps(based_on))

        def write() -> SaveResult:
            self._client.at_map(self._rbd)          # after a takeover: its OSD map first (StoreBehind: held)
            if key == UNIT and expected is not _UNSET and not self._holds(expected):
                self._read()            # what this thread knows may be old (a peer's state came over the bus)
                if not self._holds(expected) and not self._own():
                    return Stale(self._stored[UNIT], self._stored[SANITIZE])
            for _ in range(SANITIZE_ATTEMPTS):
                content = {**self._stored, key: value, _FORMAT: FORMAT}
                payload = json.dumps(content).encode()
                try:
                    self._generation = write_versioned(self._client.ioctx(self._rbd), self.oid, payload,
                                                       self._generation)
                except StaleObject:
                    self._read()
                    if key == SANITIZE or self._own() or \
                            reservations_of(self._stored[UNIT]) == expected:
                        continue            # our own fact, our own write that landed after all, or what we had
                    return Stale(self._stored[UNIT], self._stored[SANITIZE])
                except BackstoreError:
                    self._in_doubt = (self._generation + 1, json.loads(payload))
                    self._mine[key] = self._in_doubt[1][key]
                    raise
                self._stored, self._in_doubt = content, None
                self._mine[key] = json.loads(payload)[key]
                self._written = (self._generation, json.loads(payload))
                return None
            return Stale(self._stored[UNIT], self._stored[SANITIZE])

        def finished(result: object) -> None:
            assert result is None or isinstance(result, (Stale, StoreFailed))
            if result is None:
                self._take({key: value})
            elif isinstance(result, Stale):
                self._take({UNIT: result.unit, SANITIZE: result.sanitize})
                log.error("%s: written by another coordinator since this one read it: its state is taken (a "
                          "reservation command that would have overwritten it fails: ABORTED COMMAND; a retry runs "
                          "on it)", self.where)
            self._client.report(self._rbd.client, self.where, result)
            if done is not None:
                done(result)

        self._client.submit(write, finished, self)

    def _own(self) -> bool:
        """(In the thread) whether the object, as just read, holds this coordinator's own write: one that timed out
        and landed after all, or its last one, which may have worked after the save's deadline (the loop took it
        for failed). The unit may not have it; its next save writes over it."""
        return (self._generation, self._stored) in (self._in_doubt, self._written)

    def _holds(self, expected: object) -> bool:
        """(In the thread) whether the object, as last read or written, has the reservations a save is based on
        (or nothing of the unit yet): a save queued behind one that found another coordinator's write is refused."""
        stored = self._stored[UNIT]
        return stored is None or reservations_of(stored) == expected

    def refresh(self, done: Callable[[object], None]) -> None:
        """What the object holds that this coordinator's loop has not taken: `done(news)`, news being {UNIT: …,
        SANITIZE: …} with only the keys whose value differs from what the loop last took or wrote (a peer's state
        adopted, `forget`, aside; also taken as `record` and `sanitize`: the unit takes them) and is not a value this
        coordinator wrote itself (a write that failed and landed after all: the next save's); done(None) if none,
        or done(StoreFailed). Compared on the loop, not in the thread: what a read answered after its deadline found
        is still news to the next one. A save queued meanwhile, based on the unit's state before it took that
        content, is refused (`_holds`) unless the reservations are the same."""
        def read() -> tuple[dict, set[str]]:
            content = self._read()
            return content, {key for key in _EMPTY if key in self._mine and self._mine[key] == content[key]}

        def finished(result: object) -> None:
            if isinstance(result, tuple):
                content, ours = result
                news = {key: content[key] for key in _EMPTY if key not in ours and content[key] != self._taken[key]}
                self._take(news)
                result = news or None
            done(result)

        self._client.submit(read, finished, self)

    def _read(self) -> dict:
        """(In the thread) the object's content, remembered with its generation."""
        self._read_at(*read_versioned(self._client.ioctx(self._rbd), self.oid))
        return dict(self._stored)

    def _read_at(self, generation: int, payload: bytes) -> int:
        """(In the thread) remember the object's content read at `generation`; that generation."""
        self._generation, self._stored = generation, self._parse(generation, payload)
        return generation

    def _parse(self, generation: int, payload: bytes) -> dict:
        stored = json.loads(payload) if generation else {}
        if not isinstance(stored, dict):
            raise ValueError(f"{self.oid}: malformed unit state (not an object)")
        version = stored.get(_FORMAT, 1)
        if not isinstance(version, int) or version > FORMAT:
            error = (f"{self.oid}: unit state in format {version!r} (a newer ringtgt's), this ringtgt reads format "
                     f"{FORMAT} at most: not served with it, not written over")
            self._tell(_FORMAT, log.error, error)
            raise ValueError(error)
        old = stored.pop(_OLD_APTPL, None)
        if old is not None and UNIT not in stored:
            stored[UNIT] = {"reservations": old}
        content = dict(_EMPTY, **stored)
        if not all(content[key] is None or isinstance(content[key], dict) for key in _EMPTY):
            raise ValueError(f"{self.oid}: malformed unit state")
        if unknown := sorted(set(content) - {*_EMPTY, _FORMAT}):
            self._tell("unknown", log.warning, f"{self.oid}: unit state with keys unknown to this ringtgt "
                       f"({', '.join(unknown)}): ignored, kept when written")
        return content

    def _tell(self, what: str, logger: Callable[..., None], text: str) -> None:
        """(In the thread) log `text` once per store and `what`."""
        if what not in self._told:
            self._told.add(what)
            logger("%s", text)


def reservations_of(record: dict | None) -> object:
    """What a save's `based_on` is compared with: the reservations of a unit record (None without)."""
    return None if record is None else record.get("reservations")
