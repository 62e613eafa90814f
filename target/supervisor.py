"""The supervisor: forks the node's coordinator and one pinned worker per configured CPU slot, restarts the
ones that die, stops them all.

It does no I/O and runs no threads: the signals it cares about are blocked and taken synchronously with
sigtimedwait, so SIGCHLD, SIGTERM/SIGINT and SIGHUP are handled one at a time in one loop.
SIGHUP is logged and ignored (configuration reload is not supported yet). A child that stops turning its loop
for `hang_timeout` seconds is killed and restarted (target/watchdog.py, checked on the sigtimedwait timeout).
"""
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from target.config import Config
from target.watchdog import Watchdog

WorkerFn = Callable[[Config, int, int], None]
CoordinatorFn = Callable[[Config], None]

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL on shutdown
QUICK_DEATH = 1.0  # a child that dies sooner than this after its start is restarted with back-off
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 10.0

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

log = logging.getLogger("ringtgt.supervisor")


@dataclass
class _Child:
    """One supervised slot: what runs in the forked process, and that process's life so far."""

    name: str
    main: Callable[[], None]
    pid: int = 0
    started: float = 0.0
    backoff: float = 0.0
    due: float = 0.0  # when to (re)start it while pid == 0


class Supervisor:
    """Runs coordinator_fn(config) in one child (started first) and worker_fn(config, index, cpu) in
    config.server.workers pinned child processes until stopped."""

    def __init__(self, config: Config, worker_fn: WorkerFn, coordinator_fn: CoordinatorFn | None = None,
                 stop_timeout: float = STOP_TIMEOUT):
        self._stop_timeout = stop_timeout
        self._child_mask: set[signal.Signals] = set()  # the signal mask children run with
        cpus = sorted(os.sched_getaffinity(0))
        coordinator = [_Child("coordinator", lambda: coordinator_fn(config))] if coordinator_fn else []
        self._children = coordinator + [
            _Child(f"worker {i}", _worker_main(worker_fn, config, i, cpus[i % len(cpus)]))
            for i in range(config.server.workers)
        ]
        self._watchdog = Watchdog(config.server.hang_timeout, len(self._children))

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT, then stop every child; returns the exit status (0)."""
        self._child_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            return self._loop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._child_mask)

    def _loop(self) -> int:
        log.info("supervisor pid %d starting %d children", os.getpid(), len(self._children))
        while True:
            self._start_due()
            self._kill_hung()
            wake = min([c.due for c in self._children if not c.pid], default=float("inf"))
            info = signal.sigtimedwait(_SIGNALS, max(0.0, min(wake - time.monotonic(), self._watchdog.interval)))
            if info is None:
                continue
            if info.si_signo == signal.SIGCHLD:
                self._reap(restart=True)
            elif info.si_signo == signal.SIGHUP:
                log.warning("SIGHUP: configuration reload is not supported yet; ignored")
            else:
                log.info("%s: stopping children", signal.Signals(info.si_signo).name)
                self._stop()
                return 0

    def _start_due(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if not child.pid and child.due <= now:
                self._fork(child)

    def _kill_hung(self) -> None:
        now = time.monotonic()
        for slot in self._watchdog.hung([i for i, c in enumerate(self._children) if c.pid], now):
            child = self._children[slot]
            log.error("%s (pid %d) hung: no heartbeat for %g s (hang_timeout); killing it", child.name, child.pid,
                      self._watchdog.hang_timeout)
            os.kill(child.pid, signal.SIGKILL)
            self._watchdog.started(slot, now)       # not killed again while its death is on the way

    def _fork(self, child: _Child) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        slot = self._children.index(child)
        self._watchdog.started(slot, time.monotonic())
        pid = os.fork()
        if pid == 0:
            self._watchdog.enter(slot)
            _run_child(child, self._child_mask)
        child.pid, child.started = pid, time.monotonic()
        log.info("%s (pid %d) started", child.name, pid)

    def _reap(self, restart: bool) -> None:
        """Collect every exited child; log how it ended and, if restart, schedule its restart."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next(c for c in self._children if c.pid == pid)
            now = time.monotonic()
            child.pid = 0
            if not restart:
                log.info("%s (pid %d) %s", child.name, pid, _describe(status))
                continue
            quick = now - child.started < QUICK_DEATH
            child.backoff = min(max(child.backoff * 2, FIRST_BACKOFF), MAX_BACKOFF) if quick else 0.0
            child.due = now + child.backoff
            log.warning("%s (pid %d) %s; restarting in %.2fs", child.name, pid, _describe(status), child.backoff)

    def _stop(self) -> None:
        """SIGTERM every child, wait up to stop_timeout (a second SIGTERM/SIGINT cuts it short), then SIGKILL."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        while self._alive() and (remaining := deadline - time.monotonic()) > 0:
            info = signal.sigtimedwait(_SIGNALS, remaining)
            if info is None:
                break
            if info.si_signo == signal.SIGCHLD:
                self._reap(restart=False)
            elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.warning("%s again: killing children now", signal.Signals(info.si_signo).name)
                break
        if self._alive():
            self._signal_all(signal.SIGKILL)
            for child in self._alive():
                _, status = os.waitpid(child.pid, 0)
                log.warning("%s (pid %d) %s after the stop timeout", child.name, child.pid, _describe(status))
                child.pid = 0
        log.info("supervisor pid %d stopped", os.getpid())

    def _alive(self) -> list[_Child]:
        return [c for c in self._children if c.pid]

    def _signal_all(self, signo: signal.Signals) -> None:
        for child in self._alive():
            log.info("sending %s to %s (pid %d)", signo.name, child.name, child.pid)
            os.kill(child.pid, signo)


def _worker_main(worker_fn: WorkerFn, config: Config, index: int, cpu: int) -> Callable[[], None]:
    """What a worker child runs: pin itself to its CPU, then the worker function."""

    def main() -> None:
        os.sched_setaffinity(0, {cpu})
        worker_fn(config, index, cpu)

    return main


def _run_child(child: _Child, mask: set[signal.Signals]) -> None:
    """Body of a forked child: default signal set-up, run child.main, exit 0 (or 1 on an exception)."""
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.main()
        status = 0
    except BaseException:
        log.exception("%s (pid %d) failed", child.name, os.getpid())
    finally:
        os._exit(status)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
