"""One image per LUN: each file LUN's image is created at most once, and its identity kept in the node's state.

    <state_dir>/images/<target iqn>-<lun>.json      {"path", "block", "device", "inode", "generation"}: which file
    <state_dir>/images/<target iqn>-<lun>.offline   the reason the LUN went offline, while it is

The supervisor (`prepare`, before it forks) creates a missing image only when no record exists (the first start
of the LUN, or a path changed in the configuration), adopts an existing file that has no record, and otherwise
requires the path to hold the recorded file: an image that is gone or was replaced is refused (ImageError), never
made again empty behind the initiators' back. Workers open the recorded file only (FileBackstore `image`) and
check it once a second (target/image_watch.py); the first that finds it gone writes the offline marker, so the
LUN stays offline on every worker, restarted ones too, until `serve` starts again with the image in place.
"""
from __future__ import annotations

import errno
import json
import logging
import os

from coordinator.unit_state.files import save_state, sync_directory

from .base import BackstoreError
from .file import ImageGone, ImageIdentity, _open, identify

log = logging.getLogger(f"ringtgt.{__name__}")

IMAGES_DIR = "images"


class ImageError(BackstoreError):
    """A LUN's image cannot be served: missing, replaced, or it cannot be created or opened. Names the path."""


def record_path(state_dir: str, iqn: str, lun: int) -> str:
    return os.path.join(state_dir, IMAGES_DIR, f"{iqn}-{lun}.json")


def marker_path(state_dir: str, iqn: str, lun: int) -> str:
    return os.path.join(state_dir, IMAGES_DIR, f"{iqn}-{lun}.offline")


def recorded(state_dir: str, iqn: str, lun: int, path: str) -> ImageIdentity | None:
    """The identity recorded for the LUN's image at `path`; None without a record (or one for another path)."""
    record = record_path(state_dir, iqn, lun)
    try:
        with open(record, "rb") as f:
            data = json.load(f)
        if data["path"] != path:
            return None
        return ImageIdentity(bool(data["block"]), int(data["device"]), int(data["inode"]), int(data["generation"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ImageError(f"image record {record}: unreadable ({e}); remove it to adopt {path} as it is") from None


def prepare(state_dir: str, iqn: str, lun: int, path: str, size: int, block_size: int, direct: bool) -> ImageIdentity:
    """The supervisor's check of one file LUN before any worker starts: create the image if it never was, extend
    it to `size`, open it as a worker will, check it is the recorded file, record it; its identity. ImageError
    naming the path when it cannot be served."""
    identity = recorded(state_dir, iqn, lun, path)
    record = record_path(state_dir, iqn, lun)
    if identity is None and not os.path.lexists(path):
        create(path, size)
    try:
        fd, _ = _open(path, size, block_size, direct, identity)
    except BackstoreError as e:
        hint = f"; restore it, or remove {record} to start the LUN on a new empty image"
        raise ImageError(f"{e}{hint if isinstance(e, ImageGone) else ''}") from None
    try:
        found = identify(fd)
        available = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if available - available % block_size > size:
        log.warning("image %s is %d bytes, %s LUN %d is configured for %d: served at %d (after `ringtgt resize`, "
                    "raise the LUN's `size` too)", path, available, iqn, lun, size, size)
    try:
        if identity is None:
            save_state(record, {"path": path, "block": found.block, "device": found.device, "inode": found.inode,
                           "generation": found.generation})
        if clear_offline(state_dir, iqn, lun):
            log.info("image %s is in place again: %s LUN %d online", path, iqn, lun)
    except OSError as e:
        raise ImageError(f"image record {e.filename or record}: {e.strerror}") from None
    return found


def clear_offline(state_dir: str, iqn: str, lun: int) -> bool:
    """The LUN is online again (checked by the supervisor before its workers start): True if it was marked
    offline."""
    marker = marker_path(state_dir, iqn, lun)
    if not os.path.exists(marker):
        return False
    os.unlink(marker)
    return True


def create(path: str, size: int) -> None:
    """A new sparse image of `size` bytes (and its parent directories); none is left behind when it cannot be.
    One made meanwhile by another process (the peer node of a cluster, starting at the same time) is left as
    it is, for the caller to adopt."""
    if os.path.abspath(path).startswith("/dev/"):
        raise ImageError(f"image {path}: missing (a device node is never created)")
    fd = -1
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            os.unlink(path)
            raise
        sync_directory(parent or ".")
        log.info("created the image %s (%d bytes, sparse)", path, size)
    except OSError as e:
        raise ImageError(f"image {path}: cannot be created with {size} bytes: {e.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)


_CANNOT_TELL = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR, errno.EAGAIN})


def gone(path: str, identity: ImageIdentity) -> str | None:
    """Why `path` no longer holds the image `identity`, or None while it does (a worker's periodic check: a stat,
    and for a regular file on the recorded inode number an open to read its generation; closing that descriptor
    drops no lock: the images' locks are OFD locks, held by the worker's own open file description). OSError when
    it cannot tell now for want of a resource (out of descriptors or memory): that says nothing of the image; any
    other error that keeps it from looking is a reason, as the path no longer leads to the image."""
    try:
        found = ImageIdentity.of(os.stat(path))
        if not found.block and (found.device, found.inode) == (identity.device, identity.inode):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                found = identify(fd)
            finally:
                os.close(fd)
    except OSError as e:
        if e.errno in _CANNOT_TELL:
            raise
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"image {path} is missing ({e.strerror})"
        return f"image {path}: {e.strerror}"
    if found != identity:
        return f"image {path} was replaced: it is now {found}, the LUN's was {identity}"
    return None


def mark_offline(state_dir: str, iqn: str, lun: int, reason: str) -> bool:
    """Record that the LUN is offline; True for the caller that recorded it first."""
    try:
        fd = os.open(marker_path(state_dir, iqn, lun), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    except OSError:
        return True             # not recorded (the state_dir is unusable): this worker tells it in the log
    with os.fdopen(fd, "w") as f:
        f.write(reason + "\n")
    return True


def offline_reason(state_dir: str, iqn: str, lun: int) -> str | None:
    """Why another worker took the LUN offline, or None while it is online."""
    try:
        with open(marker_path(state_dir, iqn, lun)) as f:
            return f.read().strip() or "offline"
    except OSError:             # none; or unreadable, which tells nothing of the image (the caller checks it)
        return None

