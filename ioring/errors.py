"""Errors of the ring: negative errno results become OSError here and nowhere else."""
from __future__ import annotations

import os


class IoringUnavailable(RuntimeError):
    """The kernel refuses to create an io_uring instance; ringtgt cannot run without one."""


def error_for(res: int, what: str = "") -> OSError:
    """The OSError (the errno's own subclass, e.g. FileNotFoundError) for a negative kernel result."""
    err = -res
    message = os.strerror(err)
    return OSError(err, f"{what}: {message}" if what else message)


def _check_rc(rc: int, what: str) -> int:
    """rc itself when it is not negative; otherwise raise the matching OSError."""
    if rc < 0:
        raise error_for(rc, what)
    return rc
