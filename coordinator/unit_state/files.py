"""APTPL state files: a unit's registrations and persistent reservation, written atomically (temp file, fsync,
rename, fsync of the directory) so a power loss leaves the old or the new state, never a torn one."""
from __future__ import annotations

import json
import os


def save_state(path: str, state: dict | None) -> None:
    """Write `state` to `path`, or with None remove the file (APTPL cleared, or nothing registered)."""
    directory = os.path.dirname(path)
    if state is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
    else:
        os.makedirs(directory, exist_ok=True)
        temp = f"{path}.tmp"
        with open(temp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temp, path)
    sync_directory(directory)


def sync_directory(path: str) -> None:
    """Make the names in directory `path` durable (a file just created, renamed or removed there)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_state(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
