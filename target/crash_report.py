"""How a child's death by an exception reaches the supervisor's log without a traceback per restart.

Each forked child gets the write end of a pipe and the digests of the tracebacks its slot already logged (a copy,
inherited through fork). A child that fails logs its traceback only when its digest is new, then writes the digest
and the traceback's last line to the pipe; the supervisor reads them when it reaps the child, remembers the
digest, and puts the last line in its one restart line. A crash loop thus logs each distinct traceback once and
one line per restart.
"""
from __future__ import annotations

import hashlib
import os

REPORT_BYTES = 512                  # at most PIPE_BUF: written at once, and never blocks on an unread pipe


def digest(text: str) -> str:
    return hashlib.sha256(text.encode(errors="replace")).hexdigest()[:16]


def encode(traceback_text: str) -> bytes:
    """The report of a failure: digest, space, the traceback's last line (the exception), cut to REPORT_BYTES."""
    lines = traceback_text.strip().splitlines()
    return f"{digest(traceback_text)} {lines[-1] if lines else '?'}".encode(errors="replace")[:REPORT_BYTES]


def collect(fd: int) -> tuple[str, str] | None:
    """(digest, last line) a reaped child reported on `fd`, or None if it ended without one; closes fd."""
    try:
        data = os.read(fd, REPORT_BYTES)
    except BlockingIOError:             # nothing written, and a process it forked still holds the write end
        data = b""
    finally:
        os.close(fd)
    if not data:
        return None
    key, _, summary = data.decode(errors="replace").partition(" ")
    return key, summary
