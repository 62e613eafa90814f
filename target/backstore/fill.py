"""Writing one chunk over and over across a range (WRITE SAME's pattern, zeros where fallocate is refused)."""
from __future__ import annotations

from collections.abc import Callable


def fill(write, offset: int, length: int, chunk: bytes, done: Callable[[OSError | None], None]) -> None:
    """`write(offset, data, fua, callback)` `chunk` (or the start of it, at the end) over the range, one write
    after the other; `done` gets the first error, or None."""
    end = offset + length

    def next_chunk(error) -> None:
        nonlocal offset
        if error is not None or offset >= end:
            done(error)
            return
        piece = memoryview(chunk)[:min(len(chunk), end - offset)]
        at, offset = offset, offset + len(piece)
        write(at, piece, False, next_chunk)
    next_chunk(None)
