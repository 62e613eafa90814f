"""The supervisor: forks the node's coordinator and one pinned worker per configured CPU slot, restarts the
ones that die, stops them all.

It does no I/O but reading what a dead child reported on its pipe (crash_report.py) and runs no threads: the
signals it cares about are blocked and taken synchronously with sigtimedwait (its timeouts an interval timer's
SIGALRM, see `_wait`), so SIGCHLD, SIGTERM/SIGINT and SIGHUP are handled one at a time in one loop. `serve`
checks the configuration's portals, images and state_dir (preflight.py) before it builds the supervisor.
SIGHUP reloads the configuration file `serve` was started with: the node's coordinator applies it
(coordinator/reload_service.py; `ringtgt reload` asks it the same), a short-lived child of the supervisor asks it and
logs the outcome (the loop goes on meanwhile; a SIGHUP during a reload makes one more after it), and the supervisor
forks every later child with the running configuration the coordinator keeps (target/running_config.py). It looks
at that file on every turn of its loop too: when a reload changed `[server] workers`, it forks the workers added
(pinned as at the start) and stops those dropped, the highest indexes, as at a stop (SIGTERM: they drain, their
initiators reconnect to the others; SIGKILL after stop_timeout), and restarts them no more.
A child that stops turning its loop for `hang_timeout` seconds is killed and restarted (target/watchdog.py, checked
on the sigtimedwait timeout).
Under systemd (Type=notify) it reports READY=1 once every child has turned its loop (a worker's listeners are
made before its loop's first turn), a STATUS= line, RELOADING=1 … READY=1 around a reload and STOPPING=1 at
SIGTERM/SIGINT (target/sdnotify.py).
"""
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from target import affinity, crash_report, logformat
from target.config import Config, ConfigError
from target.config_diff import MAX_WORKERS
from target.running_config import load_running, running_path
from target.sdnotify import notify
from target.watchdog import Watchdog

WorkerFn = Callable[[Config, int, int], None]
CoordinatorFn = Callable[[Config], None]

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL on shutdown
COORDINATOR_STOP = 2.0  # seconds the coordinator gets after the workers to save the units' state and exit
COORDINATOR = "coordinator"
QUICK_DEATH = 1.0  # a child that dies sooner than this after its start is restarted with back-off
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 10.0

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_BLOCKED = _SIGNALS | {signal.SIGALRM}      # SIGALRM: _wait's deadline
_NO_DEADLINE = 365 * 86400.0


def _wait(timeout: float) -> signal.Signals | None:
    """The next of _SIGNALS within `timeout` seconds, or None. The deadline is an interval timer's SIGALRM, taken
    as one of the signals waited for, and sigtimedwait itself gets none that can pass: a supervisor stopped and
    continued (SIGSTOP of a frozen node, a paused VM) has its sigtimedwait interrupted, and CPython's retry, finding
    its deadline passed, would return a siginfo it never filled (a stale number of that stack slot: a SIGTERM once
    taken would stop the node again). A SIGALRM left pending by a wait that ended otherwise ends the next one
    early: one more turn of the loop."""
    signal.setitimer(signal.ITIMER_REAL, max(timeout, 1e-6))
    try:
        info = signal.sigtimedwait(_BLOCKED, _NO_DEADLINE)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return signal.Signals(info.si_signo) if info is not None and info.si_signo in _SIGNALS else None

log = logging.getLogger("ringtgt.supervisor")


@dataclass
class _Child:
    """One supervised slot: what runs in the forked process, and that process's life so far."""

    name: str
    main: Callable[[], None]
    slot: int = 0  # its watchdog counter
    worker: int | None = None  # the worker's index; None for the coordinator
    retiring: float = 0.0  # a worker a reload dropped: when to SIGKILL it if it has not exited (0: not dropped)
    pid: int = 0
    started: float = 0.0
    backoff: float = 0.0
    due: float = 0.0  # when to (re)start it while pid == 0
    report: int = -1  # the read end of the running child's crash report pipe (crash_report.py)
    tracebacks: set[str] = field(default_factory=set)  # digests of the tracebacks this slot's children logged


class Supervisor:
    """Runs coordinator_fn(config) in one child (started first) and worker_fn(config, index, cpu) in
    config.server.workers pinned child processes until stopped."""

    def __init__(self, config: Config, worker_fn: WorkerFn, coordinator_fn: CoordinatorFn | None = None,
                 stop_timeout: float = STOP_TIMEOUT, config_path: str | None = None):
        self._stop_timeout = stop_timeout
        self._child_mask: set[int | signal.Signals] = set()  # the signal mask children run with
        self._config = config
        self._config_path = config_path     # what SIGHUP reloads (None: the embedded configuration)
        self._running_stat: tuple[int, int] | None = None     # of the running.toml self._config was read from
        self._worker_fn = worker_fn
        self._cpus = sorted(os.sched_getaffinity(0))
        self._children = [_Child(COORDINATOR, lambda: coordinator_fn(self._config))] if coordinator_fn else []
        self._first_worker_slot = len(self._children)
        for index in range(config.server.workers):
            self._children.append(self._worker_child(index))
        # one slot per worker a reload may add too: the counters are shared with the children at their fork
        self._watchdog = Watchdog(config.server.hang_timeout,
                                  self._first_worker_slot + max(config.server.workers, MAX_WORKERS))
        self._ready = False
        self._reloader = 0                  # the pid of the child asking the coordinator for a reload (SIGHUP)
        self._reload_again = False          # a SIGHUP came during that reload

    def _worker_child(self, index: int) -> _Child:
        main = _worker_main(self._worker_fn, lambda: self._config, index, self._cpus[index % len(self._cpus)])
        return _Child(f"worker {index}", main, slot=self._first_worker_slot + index, worker=index)

    @property
    def _serving(self) -> str:
        portals = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self._config.server.portals)
        return f"serving {self._config.server.workers} workers on {portals}"

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT, then stop every child; returns the exit status (0)."""
        self._child_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            return self._loop()
        finally:
            if signal.SIGALRM in signal.sigpending():   # a last wait's deadline: unblocked, it would kill us
                signal.sigtimedwait({signal.SIGALRM}, 0)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._child_mask)

    def _loop(self) -> int:
        log.info("supervisor pid %d starting %d children", os.getpid(), len(self._children))
        notify(f"STATUS=starting {len(self._children)} children")
        while True:
            self._current_config()
            self._resize_workers()
            self._start_due()
            self._kill_hung()
            self._check_ready()
            wake = min([c.due for c in self._children if not c.pid and not c.retiring]
                       + [c.retiring for c in self._children if c.retiring], default=float("inf"))
            signo = _wait(max(0.0, min(wake - time.monotonic(), self._watchdog.interval)))
            if signo is None:
                continue
            if signo == signal.SIGCHLD:
                self._reap(restart=True)
            elif signo == signal.SIGHUP:
                self._reload()
            else:
                log.info("%s: stopping children", signo.name)
                notify("STOPPING=1", "STATUS=stopping")
                self._stop()
                return 0

    def _reload(self) -> None:
        """SIGHUP: a short-lived child (so that this loop goes on restarting children and watching them meanwhile)
        asks the coordinator to apply the configuration file, all or nothing, and logs the outcome; `_reloaded`
        follows once it exits. A SIGHUP during a reload asks for one more after it."""
        if self._reloader:
            self._reload_again = True
            log.info("SIGHUP during a reload: reloading again once it has answered")
            return
        name = self._config_path or "the embedded configuration"
        log.info("SIGHUP: reloading %s", name)
        notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
               f"STATUS=reloading {name}")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, self._child_mask)
                status = _ask_reload(self._config.server.state_dir, self._config_path, name)
            finally:
                os._exit(status)
        self._reloader = pid

    def _reloaded(self) -> None:
        """The reload asked for is over: later children get the running configuration, the worker count follows it,
        systemd hears READY=1 whatever the outcome (the node serves either way)."""
        self._current_config()
        self._resize_workers()
        if self._ready:             # else once the workers it added turned their loop (_check_ready)
            notify("READY=1", f"STATUS={self._serving}")
        if self._reload_again:
            self._reload_again = False
            self._reload()

    def _current_config(self) -> None:
        """Take the running configuration, as the last reload left it, for the child about to start."""
        path = running_path(self._config.server.state_dir)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return
        if (stat.st_ino, stat.st_mtime_ns) != self._running_stat:
            try:
                self._config = load_running(self._config.server.state_dir)
            except ConfigError as e:
                log.error("%s: %s; children start with the configuration before it", path, e)
            self._running_stat = (stat.st_ino, stat.st_mtime_ns)

    def _resize_workers(self) -> None:
        """Fork the workers the running configuration adds (READY=1 again once they turned their loop: they listen)
        and SIGTERM those it drops; a dropped worker still draining when its index is added back is restarted once
        it exited (_reap)."""
        self._children = [c for c in self._children if c.pid or not c.retiring]    # the dropped ones that exited
        wanted = self._config.server.workers
        have = {c.worker for c in self._children if c.worker is not None}
        added = [self._worker_child(index) for index in range(wanted) if index not in have]
        if added:
            log.info("workers: %d -> %d: starting %s", len(have), wanted, ", ".join(c.name for c in added))
            self._children += added
            self._ready = False
        now = time.monotonic()
        for child in self._children:
            if child.worker is not None and child.worker >= wanted and not child.retiring:
                child.retiring = now + self._stop_timeout
                if child.pid:
                    log.info("workers: %d -> %d: stopping %s (pid %d)", len(have), wanted, child.name, child.pid)
                    os.kill(child.pid, signal.SIGTERM)
        for child in [c for c in self._children if c.retiring and c.pid and c.retiring <= now]:
            log.warning("%s (pid %d) still running %g s after its SIGTERM: killing it", child.name, child.pid,
                        self._stop_timeout)
            os.kill(child.pid, signal.SIGKILL)
            child.retiring = now + self._stop_timeout      # not killed on every turn while its death is on the way

    def _start_due(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if not child.pid and not child.retiring and child.due <= now:
                self._fork(child)

    def _check_ready(self) -> None:
        """Tell systemd READY=1 once every child runs and has turned its loop: first at the start, again after a
        reload that added workers."""
        if not self._ready and all(c.pid and self._watchdog.turned(c.slot) for c in self._children if not c.retiring):
            self._ready = True
            log.info("ready: %s", self._serving)
            notify("READY=1", f"STATUS={self._serving}")

    def _kill_hung(self) -> None:
        now = time.monotonic()
        by_slot = {c.slot: c for c in self._children if c.pid}
        for slot in self._watchdog.hung(list(by_slot), now):
            child = by_slot[slot]
            log.error("%s (pid %d) hung: no heartbeat for %g s (hang_timeout); killing it", child.name, child.pid,
                      self._watchdog.hang_timeout)
            os.kill(child.pid, signal.SIGKILL)
            self._watchdog.started(slot, now)       # not killed again while its death is on the way

    def _fork(self, child: _Child) -> None:
        self._current_config()
        sys.stdout.flush()
        sys.stderr.flush()
        child.report, report = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._watchdog.started(child.slot, time.monotonic())
        pid = os.fork()
        if pid == 0:
            os.close(child.report)
            self._watchdog.enter(child.slot)
            _run_child(child, self._child_mask, report)
        os.close(report)
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
            if pid == self._reloader:
                self._reloader = 0
                if restart:
                    self._reloaded()
                continue
            child = next(c for c in self._children if c.pid == pid)
            now = time.monotonic()
            child.pid = 0
            how = _describe(status) + _reported(child)
            if not restart:
                log.info("%s (pid %d) %s", child.name, pid, how)
                continue
            if child.retiring:
                log.info("%s (pid %d) %s: a reload dropped it", child.name, pid, how)
                if child.worker is not None and child.worker < self._config.server.workers:
                    child.retiring, child.due = 0.0, now        # its index was added back meanwhile
                continue
            quick = now - child.started < QUICK_DEATH
            child.backoff = min(max(child.backoff * 2, FIRST_BACKOFF), MAX_BACKOFF) if quick else 0.0
            child.due = now + child.backoff
            log.warning("%s (pid %d) %s; restarting in %.2fs", child.name, pid, how, child.backoff)

    def _stop(self) -> None:
        """SIGTERM the workers and wait up to stop_timeout for them to drain, SIGKILL those left; then the same for
        the coordinator with COORDINATOR_STOP (what it saves at its stop must be final: no worker may change the
        state after it). A second SIGTERM/SIGINT cuts the waits short."""
        if self._reloader:
            os.kill(self._reloader, signal.SIGKILL)     # a reload's answer no longer matters (reaped with the others)
        workers = [c for c in self._children if c.name != COORDINATOR]
        coordinator = [c for c in self._children if c.name == COORDINATOR]
        if self._terminate(workers, self._stop_timeout):
            self._kill(workers)
            self._terminate(coordinator, COORDINATOR_STOP)
        self._kill(self._children)
        log.info("supervisor pid %d stopped", os.getpid())

    def _kill(self, children: list[_Child]) -> None:
        """SIGKILL those of `children` still running, and reap them."""
        self._signal_all(signal.SIGKILL, children)
        for child in children:
            if child.pid:
                _, status = os.waitpid(child.pid, 0)
                log.warning("%s (pid %d) %s after the stop timeout", child.name, child.pid,
                            _describe(status) + _reported(child))
                child.pid = 0

    def _terminate(self, children: list[_Child], timeout: float) -> bool:
        """SIGTERM `children` and wait up to `timeout` for them to exit (any child's exit is reaped meanwhile);
        False if a second SIGTERM/SIGINT said not to wait."""
        self._signal_all(signal.SIGTERM, children)
        deadline = time.monotonic() + timeout
        while any(c.pid for c in children) and (remaining := deadline - time.monotonic()) > 0:
            signo = _wait(remaining)
            if signo is None:
                break
            if signo == signal.SIGCHLD:
                self._reap(restart=False)
            elif signo in (signal.SIGTERM, signal.SIGINT):
                log.warning("%s again: killing children now", signo.name)
                return False
        return True

    def _signal_all(self, signo: signal.Signals, children: list[_Child]) -> None:
        for child in [c for c in children if c.pid]:
            log.info("sending %s to %s (pid %d)", signo.name, child.name, child.pid)
            os.kill(child.pid, signo)


def _ask_reload(state_dir: str, config_path: str | None, name: str) -> int:
    """The SIGHUP reload child: ask the coordinator, log its answer; the exit status (0: answered)."""
    from coordinator.control import ControlError, control_request
    from coordinator.messages import ReloadAnswer, ReloadConfig
    from target.reload import RELOAD_TIMEOUT

    try:
        answer = control_request(state_dir, ReloadConfig(config_path or ""), RELOAD_TIMEOUT)
    except ControlError as e:
        log.error("reload of %s failed: %s", name, e)
        return 1
    assert isinstance(answer, ReloadAnswer)
    if answer.refused:
        log.error("reload of %s refused, nothing changed: %s", name, answer.refused)
    else:
        log.info("reload of %s applied: %s", name, "; ".join(answer.changes) or "no change")
    return 0


def _worker_main(worker_fn: WorkerFn, config: Callable[[], Config], index: int, cpu: int) -> Callable[[], None]:
    """What a worker child runs: pin itself to its CPU, then the worker function with the configuration now."""

    def main() -> None:
        affinity.pin(cpu)
        worker_fn(config(), index, cpu)

    return main


def _run_child(child: _Child, mask: set[int | signal.Signals], report: int) -> None:
    """Body of a forked child: default signal set-up, run child.main, exit 0 (or 1 on an exception, reported on
    the `report` pipe, its traceback logged unless this slot logged the same before)."""
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        logformat.set_role("coordinator" if child.worker is None else "worker", child.worker)
        child.main()
        status = 0
    except BaseException:
        text = traceback.format_exc()
        if crash_report.digest(text) not in child.tracebacks:
            log.error("%s (pid %d) failed:\n%s", child.name, os.getpid(), text.rstrip())
        os.write(report, crash_report.encode(text))
    finally:
        os._exit(status)


def _reported(child: _Child) -> str:
    """What the ended child reported of its failure, as text for the line about its end ("" if nothing)."""
    report, child.report = crash_report.collect(child.report), -1
    if report is None:
        return ""
    child.tracebacks.add(report[0])
    return f" ({report[1]})"


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
