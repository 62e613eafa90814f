"""The worker's event loop core: one submit-and-wait per turn, one batch reap, completions to callbacks."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from ioring import Ring

log = logging.getLogger(f"ringtgt.{__name__}")

_NO_ARG: Final = object()       # a deferred call's argument when it takes none


class Reactor:
    """Routes ring completions to callbacks."""

    __slots__ = ("ring", "_callbacks", "_last_token", "_soon", "_after_submit")

    def __init__(self, ring: Ring):
        self.ring = ring
        self._callbacks: dict[int, Callable[[int], None]] = {}
        self._last_token = 0     # (a native int, compiled: cheaper than calling an itertools.count)
        # deferred calls as (function, its one argument or _NO_ARG): one tuple each, called without packing
        self._soon: list[tuple[Callable[..., None], object]] = []
        self._after_submit: list[tuple[Callable[..., None], object]] = []

    def token(self, callback: Callable[[int], None]) -> int:
        """A fresh user_data for one ring op; `callback(res)` runs once when that op completes."""
        token = self._last_token = self._last_token + 1
        self._callbacks[token] = callback
        return token

    def not_queued(self, token: int, res: int | None = None) -> None:
        """The op `token` was made for never reached the ring (queuing it failed): its callback is dropped, or with
        `res` run with it at the end of the turn, as if the ring had completed the op so."""
        callback = self._callbacks.pop(token, None)
        if callback is not None and res is not None:
            self.call_soon(callback, res)

    def call_later(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run `fn()` from the loop once `seconds` have passed (a ring timeout): the one timer of the worker."""
        self.ring.prep_timeout(seconds, self.token(lambda res: fn()))

    def call_soon(self, fn: Callable[..., None], arg: object = _NO_ARG) -> None:
        """Run `fn(arg)`, or `fn()` without `arg`, at the end of the current turn (or the next one), after the
        completions (the argument given here, not a lambda around the call: a completion per I/O is deferred so on a
        null or RBD LUN)."""
        self._soon.append((fn, arg))

    def call_after_submit(self, fn: Callable[..., None], arg: object = _NO_ARG) -> None:
        """Run `fn(arg)`, or `fn()`, at the end of the current turn (or the next one), after its deferred calls and
        the submission of what they queued: for work no answer waits for (the next receive of a connection: at QD1
        its arming went before the response left). The ops it queues go with the next turn's submission."""
        self._after_submit.append((fn, arg))

    def run_once(self, timeout: float | None = None) -> int:
        """One turn: submit, wait for a completion (not when deferred calls are pending) or `timeout`,
        dispatch every ready completion, then the deferred calls. What those queued (a turn's responses, mostly)
        is submitted at once, and what the kernel completed while submitting it (a send the socket took whole)
        is dispatched in this turn too, not in a turn of its own, and so are the deferred calls those completions
        make (what these queue goes with the next turn's submission); then the calls for after the submission.
        Returns the completions handled.

        A callback that raises is logged and the turn goes on: the other completions of the batch are
        already reaped and must not be lost."""
        ring = self.ring
        done = ring.turn(not (self._soon or self._after_submit), timeout)
        handled = len(done)
        self._dispatch(done)
        if self._soon:
            self._run_soon()
            done = ring.submit_and_reap()
            if done:
                handled += len(done)
                self._dispatch(done)
                self._run_soon()
        if self._after_submit:
            after, self._after_submit = self._after_submit, []
            self._run(after)
        return handled // 2

    def _dispatch(self, done: list[Any]) -> None:
        """(`done`'s ints as `Any`: compiled, an `int` would be unboxed and boxed again, a new object, for the lookup
        and the call)"""
        callbacks = self._callbacks
        for i in range(0, len(done), 2):    # (an index, not pairs zipped: native list and dict calls, compiled)
            callback = callbacks.pop(done[i], None)
            if callback is not None:
                try:
                    callback(done[i + 1])
                except Exception:
                    log.exception("completion callback %r failed", callback)

    def _run_soon(self) -> None:
        while self._soon:
            soon, self._soon = self._soon, []
            self._run(soon)

    @staticmethod
    def _run(calls: list[tuple[Callable[..., None], object]]) -> None:
        for fn, arg in calls:
            try:
                if arg is _NO_ARG:
                    fn()
                else:
                    fn(arg)
            except Exception:
                log.exception("deferred call %r failed", fn)
