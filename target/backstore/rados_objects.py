"""Versioned objects in RADOS: small documents that several clients may rewrite, where a writer that has not seen
the last write is refused instead of overwriting it (a compare-and-swap on a generation number).

An object holds `<generation>\\n<payload>`, and the same generation in its xattr `ringtgt.generation`. A write names
the generation it last read or wrote (0: the object must not exist yet) and makes the next one: one RADOS write op
compares the xattr (or creates the object exclusively), sets the xattr and replaces the data, so the OSD applies it
whole or not at all, and a writer behind the times gets StaleObject. A read is one op on the data alone, so the
generation and the payload it returns are those of one write.
"""
from __future__ import annotations

import errno

from ._librbd import ffi, lib
from .base import BackstoreError
from .rados import _check

GENERATION_XATTR = b"ringtgt.generation"
MAX_BYTES = 1 << 20             # a unit's state is a few KiB; larger is not an object of ours


class StaleObject(BackstoreError):
    """Another client wrote (or removed) the object since the generation the writer named."""


def read_versioned(io, oid: str) -> tuple[int, bytes]:
    """(generation, payload) of object `oid` in the pool of ioctx `io`; (0, b"") when it does not exist."""
    buf = ffi.new("char[]", MAX_BYTES)
    rc = lib.rados_read(io, oid.encode(), buf, MAX_BYTES, 0)
    if rc == -errno.ENOENT:
        return 0, b""
    _check(rc, f"reading RADOS object {oid}")
    if rc == MAX_BYTES:
        raise BackstoreError(f"RADOS object {oid}: larger than {MAX_BYTES} bytes, not a versioned object of ours")
    head, newline, payload = ffi.buffer(buf, rc)[:].partition(b"\n")
    if not newline or not head.isdigit():
        raise BackstoreError(f"RADOS object {oid}: no generation line, not a versioned object of ours")
    return int(head), payload


def write_versioned(io, oid: str, payload: bytes, generation: int) -> int:
    """Replace object `oid` with `payload` if its generation is still `generation` (0: it must not exist); the new
    generation. StaleObject if another write came first, BackstoreError if RADOS failed (ETIMEDOUT: no answer within
    the connection's op timeout; the write may still land, and a later write then finds the object stale)."""
    new = generation + 1
    expected, written = str(generation).encode(), str(new).encode()
    data = b"%d\n%s" % (new, payload)
    op = lib.rados_create_write_op()
    try:
        if generation == 0:
            lib.rados_write_op_create(op, lib.LIBRADOS_CREATE_EXCLUSIVE, ffi.NULL)
        else:
            lib.rados_write_op_cmpxattr(op, GENERATION_XATTR, lib.LIBRADOS_CMPXATTR_OP_EQ, expected, len(expected))
        lib.rados_write_op_setxattr(op, GENERATION_XATTR, written, len(written))
        lib.rados_write_op_write_full(op, data, len(data))
        rc = lib.rados_write_op_operate(op, io, oid.encode(), ffi.NULL, 0)
    finally:
        lib.rados_release_write_op(op)
    if rc in (-errno.ECANCELED, -errno.EEXIST, -errno.ENOENT):
        raise StaleObject(f"RADOS object {oid}: written by another client since generation {generation}")
    _check(rc, f"writing RADOS object {oid}")
    return new
