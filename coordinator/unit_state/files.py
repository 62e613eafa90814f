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
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
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
