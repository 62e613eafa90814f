"""Small file systems the tests mount (tmpfs with a size, ramfs) to meet what real disks rarely do: a full disk,
fallocate modes refused. Mounting needs root: `mounted` skips the test otherwise."""
from __future__ import annotations

import contextlib
import os
import subprocess

import pytest


@contextlib.contextmanager
def mounted(path, fstype: str, size: str | None = None):
    """`fstype` mounted on the directory `path` (made if missing) for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {fstype} needs root")
    os.makedirs(path, exist_ok=True)
    options = ["-o", f"size={size}"] if size else []
    subprocess.run(["mount", "-t", fstype, *options, fstype, str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)
