"""The worker's cyclic garbage collector, tuned for its event loop.

With CPython's default gen-0 threshold (700 container objects allocated and not yet freed) the objects of the
commands in flight alone cross it at QD32, so a collection ran every few dozen I/Os, each promoting the live
commands to older generations, and every few thousand I/Os a full one walked all the worker's modules: about a
third of a worker's CPU at QD32 on an O_DIRECT LUN. Per-I/O objects form no reference cycles (refcounting frees
them), so the collector need run rarely: what exists once the worker is set up is frozen (never walked again)
and gen 0 waits for many more objects.
"""
from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000     # far above the objects of a full command window; a pass over them is still short


def settle() -> None:
    """Once the worker is set up: collect, freeze the survivors, raise the gen-0 threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
