"""Connections to a Ceph cluster through librados (cffi, target/backstore/_librbd), and the image calls made
outside the data path: open, create, size, features, resize.

A process keeps one connection per (ceph_conf, client_name, keyring) for all its RBD LUNs (`connection`). The
supervisor's checks (`prepare_image_apart`) run in a child process of their own: librados picks the nonce that
tells a client's address apart once per process, so workers forked from a process that had connected would all
connect as the same client and the cluster would drop each in favour of the other, in a loop.
The client's settings that matter to a target are forced whatever ceph.conf says: no librbd cache (every worker is a
client of its own, and one worker's cached writes would be stale reads through another; without it a write is in
RADOS when it completes, so FUA needs no flush) and discards that zero partial objects (UNMAP promises that the
blocks read back as zeros). Two settings save librbd's threads work per I/O (measured with perf/rbd_completion.py
and the bench's rbd suite, see the README's "Ceph RBD"): the worker's thread dispatches its own ops into librbd and
the Objecter (rbd_non_blocking_aio off) instead of handing each to librbd's op thread and waking it, and writes go
out of the worker's buffer (zero-copy: rbd.py keeps it pinned and unchanged until the write completes) instead of a
copy made in the worker's thread. The one place librbd's dispatch can wait is the Objecter's in-flight throttle
(objecter_inflight_ops and _op_bytes, 1024 ops and 100 MiB by default), which would stop the worker's loop while the
cluster is slow (and the watchdog restarts a worker stopped for hang_timeout): it is off (0). What a worker has in
flight is bounded by its sessions' command windows, and the buffers are the worker's own. Connecting and monitor
calls have a deadline, and so has every I/O (OSD_OP_TIMEOUT_SECONDS, as tcmu-runner's default): a cluster that stops
answering fails commands instead of holding them, and the tasks that hold them, forever.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys

from ..affinity import unpinned
from .base import BackstoreError
from .rbd_image import CephClient, RbdImage
from ._librbd import ffi, lib

log = logging.getLogger(f"ringtgt.{__name__}")

CONNECT_TIMEOUT_SECONDS = 10
PREPARE_TIMEOUT_SECONDS = 60        # the supervisor's checks of one image, connecting included
OSD_OP_TIMEOUT_SECONDS = 30         # an I/O the cluster has not done by then fails (ETIMEDOUT: MEDIUM ERROR)
FEATURES = lib.RBD_FEATURE_LAYERING | lib.RBD_FEATURE_DEEP_FLATTEN    # what images we create have: no exclusive-lock
EXCLUSIVE_LOCK = lib.RBD_FEATURE_EXCLUSIVE_LOCK
_FORCED = {
    "rbd_cache": "false",
    "rbd_skip_partial_discard": "false",
    "rbd_non_blocking_aio": "false",
    "rbd_disable_zero_copy_writes": "false",
    "objecter_inflight_ops": "0",
    "objecter_inflight_op_bytes": "0",
    "client_mount_timeout": str(CONNECT_TIMEOUT_SECONDS),
    "rados_mon_op_timeout": str(CONNECT_TIMEOUT_SECONDS),
    "rados_osd_op_timeout": str(OSD_OP_TIMEOUT_SECONDS),
}


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise BackstoreError(f"{what}: {os.strerror(-rc)}")
    return rc


class Connection:
    """One librados client: `ioctx(pool)` for each pool used, `addresses` and `mon_command` for fencing
    (fencing.py)."""

    def __init__(self, client: CephClient, **settings: str):
        """`settings`: librados options beyond the forced ones."""
        self.client = client
        handle = ffi.new("rados_t *")
        _check(lib.rados_create2(handle, b"ceph", (client.client_name or "client.admin").encode(), 0),
               f"ceph client {client}")
        self._cluster = handle[0]
        self._pools: dict[str, object] = {}
        try:
            conf = client.ceph_conf.encode() if client.ceph_conf is not None else ffi.NULL
            _check(lib.rados_conf_read_file(self._cluster, conf), f"ceph client {client}: reading its ceph.conf")
            settings = dict(_FORCED, **settings, **({"keyring": client.keyring} if client.keyring is not None else {}))
            for option, value in settings.items():
                _check(lib.rados_conf_set(self._cluster, option.encode(), value.encode()),
                       f"ceph client {client}: setting {option}")
            with unpinned():            # librados's threads start here: on every CPU, not the worker's only
                _check(lib.rados_connect(self._cluster), f"ceph client {client}: connecting to the cluster")
        except BackstoreError:
            lib.rados_shutdown(self._cluster)
            self._cluster = None
            raise

    def ioctx(self, pool: str):
        io = self._pools.get(pool)
        if io is None:
            handle = ffi.new("rados_ioctx_t *")
            _check(lib.rados_ioctx_create(self._cluster, pool.encode(), handle),
                   f"pool {pool!r} (ceph client {self.client})")
            io = self._pools[pool] = handle[0]
        return io

    @property
    def addresses(self) -> str:
        """The client's own address(es), as `ceph osd blocklist add` takes them."""
        out = ffi.new("char **")
        _check(lib.rados_getaddrs(self._cluster, out), "rados_getaddrs")
        try:
            return ffi.string(out[0]).decode()
        finally:
            lib.rados_buffer_free(out[0])

    def mon_command(self, command: dict) -> str:
        """A monitor command (`command`: its JSON fields, as `ceph … -f json` sends them), at most
        rados_mon_op_timeout: its status text; BackstoreError with the monitor's answer if it failed."""
        return self._mon(command)[0]

    def mon_json(self, command: dict):
        """A monitor command's output, asked for as JSON and parsed (BackstoreError as for mon_command)."""
        output = self._mon({**command, "format": "json"})[1]
        try:
            return json.loads(output)
        except ValueError:
            raise BackstoreError(f"{command['prefix']}: not JSON: {output[:200]!r}") from None

    def _mon(self, command: dict) -> tuple[str, str]:
        cmd = ffi.new("char[]", json.dumps(command).encode())
        outbuf, outbuflen = ffi.new("char **"), ffi.new("size_t *")
        outs, outslen = ffi.new("char **"), ffi.new("size_t *")
        rc = lib.rados_mon_command(self._cluster, ffi.new("char *[]", [cmd]), 1, ffi.NULL, 0, outbuf, outbuflen,
                                   outs, outslen)
        status = ffi.unpack(outs[0], outslen[0]).decode(errors="replace") if outs[0] != ffi.NULL else ""
        output = ffi.unpack(outbuf[0], outbuflen[0]).decode(errors="replace") if outbuf[0] != ffi.NULL else ""
        for buf in (outbuf[0], outs[0]):
            if buf != ffi.NULL:
                lib.rados_buffer_free(buf)
        _check(rc, f"{command['prefix']} ({status})" if status else command["prefix"])
        return status, output

    def wait_for_latest_osdmap(self) -> None:
        """Block until this client has the OSD map the monitors have now (or a later one): its ops from then on
        carry that epoch, and an OSD applies them only once it has that map too (fencing.py). No deadline of its
        own: call it off any loop, and give up waiting on the caller's side."""
        _check(lib.rados_wait_for_latest_osdmap(self._cluster), f"ceph client {self.client}: latest OSD map")

    def close(self) -> None:
        if self._cluster is None:
            return
        for io in self._pools.values():
            lib.rados_ioctx_destroy(io)
        self._pools.clear()
        lib.rados_shutdown(self._cluster)
        self._cluster = None


_connections: dict[CephClient, Connection] = {}


def connections() -> list[Connection]:
    """This process's connections (a worker's: one per client its RBD LUNs use)."""
    return list(_connections.values())


def connection(client: CephClient) -> Connection:
    """This process's connection for `client`, made at first use."""
    found = _connections.get(client)
    if found is None:
        found = _connections[client] = Connection(client)
    return found


def open_image(conn: Connection, rbd: RbdImage):
    """The open image handle; BackstoreError naming pool/image when it does not exist or cannot be opened."""
    handle = ffi.new("rbd_image_t *")
    with unpinned():                    # librbd's threads start at the first open: on every CPU
        rc = lib.rbd_open(conn.ioctx(rbd.pool), rbd.name.encode(), handle, ffi.NULL)
    if rc == -errno.ENOENT:
        raise BackstoreError(f"RBD image {rbd} does not exist (give the LUN a size to have it created)")
    _check(rc, f"RBD image {rbd}")
    return handle[0]


def image_size(image) -> int:
    size = ffi.new("uint64_t *")
    _check(lib.rbd_get_size(image, size), "rbd_get_size")
    return int(size[0])


def image_features(image) -> int:
    features = ffi.new("uint64_t *")
    _check(lib.rbd_get_features(image, features), "rbd_get_features")
    return int(features[0])


def prepare_image(rbd: RbdImage, size: int | None, created: list[RbdImage] | None = None) -> int:
    """The supervisor's check of an RBD LUN before any worker starts: the image exists (created with `size` if it
    does not and a size is given), has no exclusive-lock (every worker writes it: see the README's "Ceph RBD"),
    and is grown to `size` when smaller. The image's size in bytes (and the image appended to `created` if it was
    made); BackstoreError naming the image otherwise. Connects and disconnects."""
    conn = Connection(rbd.client)
    pool, name = rbd.pool, rbd.name
    try:
        if size is not None:
            order = ffi.new("int *")
            rc = lib.rbd_create2(conn.ioctx(pool), name.encode(), size, FEATURES, order)
            if rc != -errno.EEXIST:
                _check(rc, f"creating RBD image {rbd}")
                if created is not None:
                    created.append(rbd)
        image = open_image(conn, rbd)
        try:
            if image_features(image) & EXCLUSIVE_LOCK:
                raise BackstoreError(f"RBD image {rbd} has the exclusive-lock feature, which would move between the "
                                     f"workers at every write: `rbd feature disable {rbd} exclusive-lock` (after "
                                     "object-map and fast-diff if it has them; see the README, Ceph RBD)")
            current = image_size(image)
            if size is not None and current < size:
                _check(lib.rbd_resize(image, size), f"growing RBD image {rbd} to {size} bytes")
                current = size
            return current
        finally:
            lib.rbd_close(image)
    finally:
        conn.close()


def prepare_image_apart(rbd: RbdImage, size: int | None, timeout: float = PREPARE_TIMEOUT_SECONDS) -> int:
    """`prepare_image` in a process of its own (`python -m target.backstore.rados`: see the module docstring; a new
    process rather than a fork, since the coordinator, which checks the LUNs a reload adds, has threads), at most
    `timeout` seconds: the image's size, or the BackstoreError it raised."""
    spec = {"pool": rbd.pool, "image": rbd.name, "size": size, "ceph_conf": rbd.client.ceph_conf,
            "client_name": rbd.client.client_name, "keyring": rbd.client.keyring}
    try:
        proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec)], capture_output=True, text=True,
                              errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackstoreError(f"RBD image {rbd}: no answer from the cluster within {timeout:g} s") \
            from None
    lines = proc.stdout.strip().splitlines()
    kind, _, text = (lines[-1] if lines else "").partition(" ")
    if kind == "created":
        log.info("created RBD image %s of %s bytes", rbd, size)
        kind, _, text = text.partition(" ")
    if kind != "size":
        raise BackstoreError(text or f"RBD image {rbd}: the check exited {proc.returncode}: {proc.stderr[-1000:]}")
    return int(text)


def _check_from_command_line() -> None:
    """The child of prepare_image_apart: one line, `[created ]size BYTES` or `error MESSAGE`."""
    spec = json.loads(sys.argv[1])
    rbd = RbdImage(spec["pool"], spec["image"], CephClient(spec["ceph_conf"], spec["client_name"], spec["keyring"]))
    created: list[RbdImage] = []
    try:
        size = prepare_image(rbd, spec["size"], created)
    except BackstoreError as e:
        print(f"error {e}")
        return
    print(f"{'created ' if created else ''}size {size}")


if __name__ == "__main__":
    _check_from_command_line()
