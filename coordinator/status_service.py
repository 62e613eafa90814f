"""The coordinator's answer to `ringtgt status` (FetchStatus, reply NodeStatus of coordinator/messages.py): the
state of the running node, gathered where each fact already is.

    supervisor   {pid, uptime}                      the coordinator's parent; uptimes: coordinator/procinfo.py
    coordinator  {pid, uptime, restarts}            restarts: its starts under this supervisor, less one (counted in
                                                    <state_dir>/coordinator.starts, keyed by the supervisor incarnation)
    workers      [{index, pid, cpus, uptime, restarts, connections, sessions}]
                 the connected workers (their HELLO), by index; cpus their affinity ("0", "2-3"); restarts the new
                 pids seen for the index since this coordinator started; connections their established TCP
                 connections; sessions their logged-in sessions in the registry
    peers        [{name, state, heartbeat_age}]     with [cluster]: unknown/alive/dead, seconds since the last
                                                    heartbeat (None: never heard)
    luns         [{target, lun, backstore, path, size, state, reason, sanitizing, ejected}]
                 state "online" or "offline" (the offline marker of target/backstore/images.py, its text the reason);
                 sanitizing and ejected from the unit's medium (coordinator/unit_state/medium.py); path an RBD
                 image's pool/image; size None for an RBD LUN that takes its image's
    sessions     this node's logged-in sessions
"""
from __future__ import annotations

import logging
import os
import time

from target.backstore.images import offline_reason

from . import procinfo
from .messages import FetchStatus, NodeStatus
from .registry import SessionRegistry
from .service import CoordinatorService, Reply
from .unit_service import UnitAuthority
from .unit_state.files import load_state, save_state
from .unit_state.medium import SANITIZING

log = logging.getLogger(f"ringtgt.{__name__}")

STARTS_FILE = "coordinator.starts"


class WorkerRestarts:
    """Restarts per worker index: each new pid seen for an index after the first. A worker is seen when it goes
    (its origin "w<index>.<pid>") and when the status is asked (the connected ones), so a death between two
    questions counts too; only the last pid per index is kept."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self.restarts: dict[int, int] = {}

    def seen(self, index: int, pid: int) -> None:
        if self._last.setdefault(index, pid) != pid:
            self._last[index] = pid
            self.restarts[index] = self.restarts.get(index, 0) + 1

    def gone(self, origin: str) -> None:
        index, _, pid = origin.removeprefix("w").partition(".")
        if index.isdigit() and pid.isdigit():
            self.seen(int(index), int(pid))


def count_start(state_dir: str, incarnation: str) -> int:
    """Record this coordinator's start; the restarts under the same supervisor before it."""
    path = os.path.join(state_dir, STARTS_FILE)
    try:
        record = load_state(path)
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): counting this coordinator's starts from here", path, exc)
        record = None
    starts = record.get("starts") if isinstance(record, dict) and record.get("supervisor") == incarnation else 0
    starts = starts if type(starts) is int else 0       # none yet, or another supervisor's: its first coordinator
    try:
        save_state(path, {"supervisor": incarnation, "starts": starts + 1})
    except OSError as exc:
        log.warning("%s: cannot count this coordinator's start (its next restart will show 0): %s", path, exc)
    return starts


def register_status_handlers(service: CoordinatorService, running, registry: SessionRegistry,
                             authority: UnitAuthority, node: str, incarnation: str, peers=None) -> None:
    """`running`: the node's configuration as the last reload left it (reload_service.RunningConfig); `peers`: the
    cluster's coordinator/peers.py Peers, or None without [cluster]."""
    state_dir = running.config.server.state_dir
    restarts = count_start(state_dir, incarnation)
    workers = WorkerRestarts()
    service.on_worker_gone(workers.gone)

    def status(message: FetchStatus, origin: str) -> Reply:
        sessions = [s for s in registry.sessions() if s["node"] == node]
        per_origin: dict[str, int] = {}
        for record in sessions:
            per_origin[record["origin"]] = per_origin.get(record["origin"], 0) + 1
        established = procinfo.established_tcp()
        for info in service.workers.values():
            workers.seen(info.index, info.pid)
        worker_rows = [{"index": info.index, "pid": info.pid, "cpus": procinfo.cpus(info.pid),
                        "uptime": procinfo.uptime(info.pid), "restarts": workers.restarts.get(info.index, 0),
                        "connections": _count(procinfo.sockets(info.pid), established),
                        "sessions": per_origin.get(info.origin, 0)}
                       for info in sorted(service.workers.values(), key=lambda info: info.index)]
        now = time.monotonic()
        peer_rows = [] if peers is None else [
            {"name": peer.name, "state": peer.state,
             "heartbeat_age": round(now - peer.last_heard, 1) if peer.last_heard else None}
            for peer in peers.peers.values()]
        luns = []
        for target in running.config.targets:
            for lun in target.luns:
                reason = offline_reason(state_dir, target.iqn, lun.id)
                medium = authority.unit(target.iqn, lun.id).medium
                path = f"{lun.pool}/{lun.image}" if lun.backstore == "rbd" else lun.path     # an RBD image's name
                luns.append({"target": target.iqn, "lun": lun.id, "backstore": lun.backstore, "path": path,
                             "size": lun.size, "state": "offline" if reason else "online", "reason": reason,
                             "sanitizing": medium.sanitize == SANITIZING, "ejected": not medium.loaded})
        supervisor, coordinator = os.getppid(), os.getpid()
        return Reply(NodeStatus(
            node, {"pid": supervisor, "uptime": procinfo.uptime(supervisor)},
            {"pid": coordinator, "uptime": procinfo.uptime(coordinator), "restarts": restarts},
            worker_rows, peer_rows, luns, len(sessions)))

    service.register(FetchStatus, status)


def _count(sockets: set[str] | None, established: set[str]) -> int | None:
    return None if sockets is None else len(sockets & established)
