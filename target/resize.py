"""`ringtgt resize TARGET LUN [--size SIZE]`: grow a LUN of the running node.

With a size, the LUN's file is extended to it first (sparse, never truncated: a size below the file's leaves the
file as it is); a block device cannot be grown by us, so a size beyond the device's is refused (a reload growing a
LUN uses the same). Without a size, the size its file or device has now (rounded down to whole blocks) is picked
up, e.g. after `truncate -s` or an lvextend. The node's coordinator then decides (coordinator/unit_service.py
`resize`): a smaller size than the LUN's is refused, otherwise every worker serves the new size and every nexus of
the unit gets CAPACITY DATA HAS CHANGED before the answer comes. Only a running `serve` (it holds the state_dir
lock) has LUNs to resize.
"""
from __future__ import annotations

import fcntl
import os
import stat
from typing import cast

from coordinator.control import ControlError, control_request
from coordinator.messages import ResizeAnswer, ResizeLun

from .config import Config, LunConfig, parse_size
from .preflight import LOCK_FILE


class ResizeError(Exception):
    """The LUN was not resized; the message says why."""


def resize(config: Config, iqn: str, lun_id: int, size_text: str | None) -> tuple[int, int]:
    """Grow the LUN (see the module doc); (its size before, its size now) in bytes, or ResizeError."""
    lun = _configured_lun(config, iqn, lun_id)
    if lun.backstore != "file" or lun.path is None:
        raise ResizeError(f"LUN {lun_id} of {iqn} is a {lun.backstore!r} backstore: only file and block device "
                          "LUNs can be resized")
    assert lun.size is not None                 # a file LUN's size is known (config.py)
    _require_serve(config.server.state_dir)
    size = grow_image(lun, None if size_text is None else parse_size(size_text, "--size"))
    try:
        answer = cast(ResizeAnswer, control_request(config.server.state_dir, ResizeLun(iqn, lun_id, size, lun.size)))
    except ControlError as e:
        raise ResizeError(str(e)) from None
    if answer.refused is not None:
        raise ResizeError(f"refused: {answer.refused}")
    return answer.previous, answer.size


def _configured_lun(config: Config, iqn: str, lun_id: int) -> LunConfig:
    for target in config.targets:
        if target.iqn == iqn:
            for lun in target.luns:
                if lun.id == lun_id:
                    return lun
            raise ResizeError(f"target {iqn} has no LUN {lun_id} in the configuration")
    raise ResizeError(f"no target {iqn} in the configuration")


def _require_serve(state_dir: str) -> None:
    """A `serve` of this state_dir runs (it holds the lock), or ResizeError."""
    path = os.path.join(state_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise ResizeError(f"no `ringtgt serve` runs with state_dir {state_dir}: only a running node's LUN can be "
                          "resized") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return                                      # held: serve runs
    finally:
        os.close(fd)
    raise ResizeError(f"no `ringtgt serve` runs with state_dir {state_dir} (nobody holds {path}): only a running "
                      "node's LUN can be resized")


def grow_image(lun: LunConfig, size: int | None) -> int:
    """The size to serve: `size`, the file extended to it if shorter (a device must have grown to it already);
    without one the file's or device's size now."""
    path = cast(str, lun.path)
    if size is not None and (size <= 0 or size % lun.block_size):
        raise ResizeError(f"--size must be a positive multiple of the block size {lun.block_size}, got {size}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise ResizeError(f"cannot open {path}: {e.strerror}") from None
    try:
        device = stat.S_ISBLK(os.fstat(fd).st_mode)
        available = os.lseek(fd, 0, os.SEEK_END)
        if size is None:
            return available - available % lun.block_size
        if device and size > available:
            raise ResizeError(f"{path} is a block device: ringtgt cannot grow it; grow the device, then run "
                              "`ringtgt resize` without --size")
        if size > available:
            os.ftruncate(fd, size)                  # sparse: no blocks allocated
            os.fsync(fd)
        return size
    except OSError as e:
        raise ResizeError(f"cannot extend {path}: {e.strerror}") from None
    finally:
        os.close(fd)
