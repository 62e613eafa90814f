"""Fencing through Ceph: each worker's librados client is recorded in RADOS, and a takeover blocklists every client
the dead node recorded, so that a node that is only cut off (or frozen, and resumed later) can no longer write.

What is where: in every pool holding an RBD LUN, the object `ringtgt.node.NODE` (NODE: `[cluster] node`) has one
omap key per client a worker of that node opened, `client.WORKER.ADDRESS` → {"pid", "since"}, written when the
worker opens its first image of the pool (`record`); a restarted worker adds its new address beside the old ones.
The coordinator's own client, which writes the units' state objects (coordinator/rados_store.py), is recorded the
same way (`client.coordinator.ADDRESS`) before its first read or write in the pool. Records are only dropped by the
takeover that blocklisted them, never pruned: none is known to be harmless (an op a dead client sent may still wait
at an OSD, behind a PG not active, and land after the next node's writes unless the address is blocklisted; a client
that looks dead from here may only be stopped), and blocklisting an address to drop its record would move the growth
into the OSD map every client carries (README, Ceph RBD, Fencing: the limits).
A takeover (`fence`, run by the coordinator in a process of its own: `python -m target.backstore.fencing SPEC`)
first marks the object `fenced` → {"by", "at"}, then reads every `client.` key, blocklists each address with the
monitor (`osd blocklist add ADDRESS BLOCKLIST_SECONDS`, all at once: one after the other, each would wait for the
monitor's next proposal, about a second), drops the keys it blocklisted and reports the OSD map epoch that has them
all in its blocklist (`blocklist_epoch`, per cluster). The takeover then has every worker of this node bring its
own clients to the latest OSD map before it tickles (coordinator/cluster.py, target/osdmap_sync.py), as librbd
does after it blocklists a lock holder: an op carries its client's map epoch, and an OSD applies an op of a later
epoch than its own only once it has that map, so the surviving node's writes are applied after every OSD that
serves them knows the blocklist, and whatever the fenced client had in flight is either applied before them or
refused. A worker records its
address before it looks for the mark, and a takeover marks before it reads: RADOS orders the two on the one
object, so a worker either is among the clients blocklisted or finds the mark, and then serves the pool's LUNs
offline (a fenced node that restarts does not write again until an operator removes the mark:
`rados -p POOL rmomapkey ringtgt.node.NODE fenced`). A node marked fenced fences no one: cut off and resumed, it
takes its peer for dead in turn, and would otherwise blocklist the node that took over.

Two nodes cut off from each other at the same moment, both still reaching Ceph, may each take the other for dead
and fence it at once: each would read its own object unmarked before the other marks it. So a takeover first claims
the fencing in one object both write, `ringtgt.fencing` in the first of the pools (by ceph.conf, then pool name: the
same on every node serving the same LUNs): one RADOS write op that creates the object if need be, compares this
node's key `fenced.BY` with nothing (a missing key compares as empty, and no key is ever written empty) and sets
`fenced.NODE`. RADOS applies the ops on one object one at a time, so of two such claims the second finds its own
node's key and is refused (ECANCELED): that node fences no one and takes over no one. A claim that fails otherwise
fails the fencing. Unfencing a repaired node also takes its key out of that object:
`rados -p POOL rmomapkey ringtgt.fencing fenced.NODE`.

The fencing client opens no admin socket: librados, finding the socket path ceph.conf gives taken, pings its owner
first, and when the owner is a frozen process of the node being fenced (two nodes on one machine, a ceph.conf with
`admin socket = …/$name.asok`) that ping held the takeover for 10 s.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ._librbd import ffi, lib
from .base import BackstoreError
from .rados import Connection, connection
from .rbd_image import CephClient

OBJECT_PREFIX = "ringtgt.node."
CLAIMS = "ringtgt.fencing"                  # the one object every takeover claims its fencing in (see above)
CLIENT_PREFIX = "client."
FENCED_KEY = "fenced"
BLOCKLIST_SECONDS = 10 * 365 * 24 * 3600    # the monitor's default (an hour) would let a frozen node back in
EPOCH_TIMEOUT = 10.0                        # seconds for the OSD map to list what the monitor said it blocklisted
_OMAP_BATCH = 1024                          # keys read per omap call

_recorded: set[tuple[CephClient, str]] = set()     # this process's clients already recorded, by pool


class NodeFenced(BackstoreError):
    """The node is marked fenced in the pool: nothing of it may write there until an operator unmarks it."""


def object_name(node: str) -> str:
    return OBJECT_PREFIX + node


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise BackstoreError(f"{what}: {os.strerror(-rc)}")


def _set_keys(conn: Connection, pool: str, oid: str, values: dict[str, str]) -> None:
    keys = [ffi.new("char[]", k.encode()) for k in values]
    vals = [ffi.new("char[]", v.encode()) for v in values.values()]
    lens = ffi.new("size_t[]", [len(v.encode()) for v in values.values()])
    op = lib.rados_create_write_op()
    try:
        lib.rados_write_op_omap_set(op, ffi.new("char *[]", keys), ffi.new("char *[]", vals), lens, len(keys))
        _check(lib.rados_write_op_operate(op, conn.ioctx(pool), oid.encode(), ffi.NULL, 0),
               f"writing {pool}/{oid}")
    finally:
        lib.rados_release_write_op(op)


def _remove_keys(conn: Connection, pool: str, oid: str, names: list[str]) -> None:
    keys = [ffi.new("char[]", k.encode()) for k in names]
    op = lib.rados_create_write_op()
    try:
        lib.rados_write_op_omap_rm_keys(op, ffi.new("char *[]", keys), len(keys))
        _check(lib.rados_write_op_operate(op, conn.ioctx(pool), oid.encode(), ffi.NULL, 0),
               f"writing {pool}/{oid}")
    finally:
        lib.rados_release_write_op(op)


def claim(conn: Connection, pool: str, node: str, by: str) -> bool:
    """`by` fences `node`, in `pool`'s CLAIMS object, unless `by` was claimed fenced there first: False then."""
    mine, theirs = f"{FENCED_KEY}.{by}".encode(), f"{FENCED_KEY}.{node}"
    value = ffi.new("char[]", json.dumps({"by": by, "at": time.time()}).encode())
    key = ffi.new("char[]", theirs.encode())
    op = lib.rados_create_write_op()
    try:
        compared = ffi.new("int *")
        lib.rados_write_op_create(op, lib.LIBRADOS_CREATE_IDEMPOTENT, ffi.NULL)
        lib.rados_write_op_omap_cmp(op, mine, lib.LIBRADOS_CMPXATTR_OP_EQ, b"", 0, compared)
        lib.rados_write_op_omap_set(op, ffi.new("char *[]", [key]), ffi.new("char *[]", [value]),
                                    ffi.new("size_t[]", [len(ffi.string(value))]), 1)
        rc = lib.rados_write_op_operate(op, conn.ioctx(pool), CLAIMS.encode(), ffi.NULL, 0)
    finally:
        lib.rados_release_write_op(op)
    if rc == -errno.ECANCELED:
        return False
    _check(rc, f"claiming the fencing of {node} in {pool}/{CLAIMS}")
    return True


def read_keys(conn: Connection, pool: str, oid: str) -> dict[str, str]:
    """Every omap key of `pool`/`oid` and its value ({} when the object does not exist)."""
    found: dict[str, str] = {}
    after = b""
    while True:
        op = lib.rados_create_read_op()
        try:
            it, more, rval = ffi.new("rados_omap_iter_t *"), ffi.new("unsigned char *"), ffi.new("int *")
            lib.rados_read_op_omap_get_vals2(op, after, ffi.NULL, _OMAP_BATCH, it, more, rval)
            rc = lib.rados_read_op_operate(op, conn.ioctx(pool), oid.encode(), 0)
            if rc == -2:            # ENOENT: nothing recorded
                return found
            _check(rc if rc < 0 else rval[0], f"reading {pool}/{oid}")
            key, val, length = ffi.new("char **"), ffi.new("char **"), ffi.new("size_t *")
            try:
                while lib.rados_omap_get_next(it[0], key, val, length) == 0 and key[0] != ffi.NULL:
                    after = ffi.string(key[0])
                    found[after.decode()] = ffi.unpack(val[0], length[0]).decode(errors="replace")
            finally:
                lib.rados_omap_get_end(it[0])
            if not more[0]:
                return found
        finally:
            lib.rados_release_read_op(op)


def record(client: CephClient, pool: str, node: str, who: int | str, conn: Connection | None = None) -> list[str]:
    """This process's client of `client` in `pool`'s record of `node` (once per pool), as `who` (a worker's index,
    or "coordinator": its unit state store's client writes too); `conn`: that client (default: the process's
    shared `connection(client)`). The addresses recorded ([] when they were already). BackstoreError if that
    cannot be written, or if the node is marked fenced (its LUNs in the pool must not be served, nor their state
    written)."""
    if (client, pool) in _recorded:
        return []
    conn = conn or connection(client)
    oid = object_name(node)
    since = json.dumps({"pid": os.getpid(), "since": time.time()})
    recorded = addresses(conn.addresses)
    _set_keys(conn, pool, oid, {f"{CLIENT_PREFIX}{who}.{address}": since for address in recorded})
    mark = read_keys(conn, pool, oid).get(FENCED_KEY)
    if mark is not None:
        raise NodeFenced(f"node {node} was fenced ({mark}): its RADOS clients were blocklisted by a takeover; "
                             f"once it is repaired, `rados -p {pool} rmomapkey {oid} {FENCED_KEY}` (README, Ceph "
                             "RBD, Fencing)")
    _recorded.add((client, pool))
    return recorded


def blocklist(conn: Connection, address: str, seconds: float = BLOCKLIST_SECONDS) -> None:
    """`ceph osd blocklist add ADDRESS SECONDS`, through the monitor (deadline: rados_mon_op_timeout)."""
    conn.mon_command({"prefix": "osd blocklist", "blocklistop": "add", "addr": address, "expire": float(seconds)})


def blocklist_epoch(conn: Connection, blocklisted: list[str], timeout: float = EPOCH_TIMEOUT) -> int:
    """The epoch of the OSD map the monitors have now, once its blocklist has every one of `blocklisted` (the
    monitor answering another question may not have applied the last proposal yet): BackstoreError past
    `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        dump = conn.mon_json({"prefix": "osd dump"})
        listed = dump.get("blocklist", dump.get("blacklist", {}))
        missing = [address for address in blocklisted if address not in listed]
        if not missing:
            return int(dump["epoch"])
        if time.monotonic() > deadline:
            raise BackstoreError(f"the OSD map (epoch {dump['epoch']}) does not list {', '.join(missing)} as "
                                 f"blocklisted {timeout:g} s after the monitor blocklisted them")
        time.sleep(0.1)


def cluster_of(client: CephClient) -> str:
    """The key of a client's cluster in FenceResult.epochs: its ceph.conf."""
    return client.ceph_conf or "default"


def addresses(text: str) -> list[str]:
    """The addresses in rados_getaddrs' text: one (`1.2.3.4:0/NONCE`) or a vector (`[v2:…/N,v1:…/N]`), each
    without its protocol, as the blocklist takes them."""
    found = []
    vector = text.startswith(("[v1:", "[v2:", "[any:")) and text.endswith("]")
    for entry in (text[1:-1] if vector else text).split(","):
        kind, _, rest = entry.partition(":")
        address = rest if kind in ("v1", "v2", "any") else entry
        if address and address not in found:
            found.append(address)
    return found


def _try_blocklist(what: tuple[Connection, str]) -> str:
    """blocklist(*what): "" or what failed."""
    try:
        blocklist(*what)
    except BackstoreError as e:
        return str(e)
    return ""


@dataclass
class FenceResult:
    """What `fence` did: the addresses blocklisted, what failed (empty: the node is fenced), the seconds each step
    took (connect, mark, blocklist, epoch) and, per cluster (`cluster_of`), the OSD map epoch with the blocklist."""

    fenced: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    refused: str = ""           # why nothing was done: the node fencing was fenced itself (a partition's other side)

    def took(self, step: str, since: float) -> float:
        now = time.monotonic()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - since, 3)
        return now


def fence(node: str, by: str, pools: list[tuple[CephClient, str]]) -> FenceResult:
    """Claim the fencing of `node` (in the first pool's CLAIMS object), mark it fenced in each of `pools` ((client,
    pool) pairs), blocklist every client address it recorded there, and drop the records of those blocklisted;
    nothing if `by` (this node) is marked fenced in a pool or was claimed fenced first."""
    result = FenceResult()
    oid = object_name(node)
    recorded: dict[str, list[tuple[Connection, str, str]]] = {}      # address → (conn, pool, key) records
    conns: list[Connection] = []
    try:
        for index, (client, pool) in enumerate(sorted(pools, key=lambda entry: (entry[0].ceph_conf or "", entry[1]))):
            try:
                began = time.monotonic()
                conn = next((c for c in conns if c.client == client), None)
                if conn is None:
                    conn = Connection(client, admin_socket="")     # none: see the module docstring
                    conns.append(conn)
                began = result.took("connect", began)
                mark = read_keys(conn, pool, object_name(by)).get(FENCED_KEY)
                if mark is not None:
                    result.refused = f"node {by} was fenced itself ({mark}): it fences no one"
                    return result
                if index == 0 and not claim(conn, pool, node, by):
                    result.refused = (f"node {by} was fenced itself (claimed first in {pool}/{CLAIMS}: two takeovers "
                                      "at once): it fences no one")
                    return result
                _set_keys(conn, pool, oid, {FENCED_KEY: json.dumps({"by": by, "at": time.time()})})
                keys = read_keys(conn, pool, oid)
                result.took("mark", began)
                for key in keys:
                    if key.startswith(CLIENT_PREFIX):
                        address = key[len(CLIENT_PREFIX):].split(".", 1)[1]
                        recorded.setdefault(address, []).append((conn, pool, key))
            except BackstoreError as e:
                result.errors.append(f"pool {pool} ({client}): {e}")
                if index == 0:
                    return result           # unclaimed: a node fencing this one at the same time might not see it
        began = time.monotonic()
        with ThreadPoolExecutor(min(32, max(1, len(recorded)))) as pool_of_threads:   # one monitor proposal
            outcomes = list(pool_of_threads.map(_try_blocklist, [(records[0][0], address)
                                                                 for address, records in recorded.items()]))
        result.took("blocklist", began)
        blocklisted: dict[Connection, list[str]] = {conn: [] for conn in conns}
        for (address, records), error in zip(recorded.items(), outcomes):
            if error:
                result.errors.append(error)
                continue
            result.fenced.append(address)
            blocklisted[records[0][0]].append(address)
            for conn, pool, key in records:
                try:
                    _remove_keys(conn, pool, oid, [key])
                except BackstoreError:
                    pass            # blocklisted already: blocklisting it again at the next takeover does no harm
        began = time.monotonic()
        for conn, listed in blocklisted.items():     # also with none listed now: a repeated takeover's barrier
            try:
                epoch = blocklist_epoch(conn, listed)
            except BackstoreError as e:
                result.errors.append(f"{conn.client}: {e}")
                continue
            key = cluster_of(conn.client)
            result.epochs[key] = max(epoch, result.epochs.get(key, 0))
        result.took("epoch", began)
    finally:
        for conn in conns:
            conn.close()
    return result


def _fence_from_command_line() -> None:
    """The coordinator's child: SPEC is {"node", "by", "pools": [[ceph_conf, client_name, keyring, pool]…]}; one
    line of JSON out, FenceResult's fields."""
    spec = json.loads(sys.argv[1])
    pools = [(CephClient(conf, name, keyring), pool) for conf, name, keyring, pool in spec["pools"]]
    try:
        result = fence(spec["node"], spec["by"], pools)
    except BackstoreError as e:
        result = FenceResult(errors=[str(e)])
    print(json.dumps({"fenced": result.fenced, "errors": result.errors, "seconds": result.seconds,
                      "refused": result.refused, "epochs": result.epochs}), flush=True)


if __name__ == "__main__":
    _fence_from_command_line()
