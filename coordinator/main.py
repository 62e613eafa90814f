"""The coordinator process of a node: builds the service, lets each domain register its handlers, runs the
loop until SIGTERM. The supervisor starts it before the workers, restarts it like a worker if it dies, and stops it
after them (so the units' state it saves at a clean stop is final); workers reconnect by themselves (ZeroMQ) and
re-register their state (see coordinator/client.py)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from .bus import ClusterBusError
from .cluster import Cluster
from .fencer import Fencer, rbd_pools
from .lun_identities import lun_identities
from .registry import SessionRegistry
from .reload_service import RunningConfig, register_reload_handlers
from .unit_service import UnitAuthority, register_unit_handlers
from .service import CoordinatorService
from .sessions_service import register_session_handlers
from .status_service import register_status_handlers
from .unit_store import StoreFailed
from target.backstore.rbd_image import RbdImage
from target.image_watch import rbd_image
from target.metrics.prometheus import serve_metrics

log = logging.getLogger("ringtgt.coordinator")

WORKERS_STOP = 6.0      # seconds a stopping coordinator waits for workers still draining (their drain: 5 s at most)


def node_name(config) -> str:
    """This node's name in the session table: `[cluster] node`, else the host name."""
    return config.cluster.node if config.cluster is not None else socket.gethostname()


def supervisor_incarnation() -> str:
    """The supervisor this coordinator belongs to, unique across crashes and reboots: its pid, its start time
    (clock ticks after boot: a reused pid has another) and the boot id. A coordinator restarted by the same
    supervisor resumes its live state; a `serve` after a crash or a power loss never does."""
    supervisor = os.getppid()
    with open(f"/proc/{supervisor}/stat") as f:
        started = f.read().rsplit(")", 1)[1].split()[19]
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    return f"{supervisor}-{started}-{boot}"


def rbd_of(config, iqn: str, lun_id: int) -> RbdImage | None:
    """The RBD image of LUN `lun_id` of target `iqn` in `config`: its state is kept in RADOS (unit_store.py)."""
    for target in config.targets:
        for lun in target.luns:
            if target.iqn == iqn and lun.id == lun_id:
                return rbd_image(lun)
    return None


def stopped(service: CoordinatorService, sigterm: list[float]) -> bool:
    """Whether the loop ends: after SIGTERM, once no worker is left to change the state it saves (the supervisor
    stops the workers first; `systemctl stop` signals every process at once, and their drain still needs
    answers), or WORKERS_STOP seconds after it in any case."""
    return bool(sigterm) and (not service.workers or time.monotonic() > sigterm[0] + WORKERS_STOP)


def coordinator_main(config, heartbeat: Callable[[], None] = lambda: None) -> None:
    """Entry point of the coordinator process; `heartbeat()` on every turn of its loop (the supervisor's watchdog)."""
    service = CoordinatorService(config.server.state_dir)
    registry = SessionRegistry()
    register_session_handlers(service, registry, node_name(config))
    units = [(target.iqn, lun.id) for target in config.targets for lun in target.luns]
    incarnation = supervisor_incarnation()
    running = RunningConfig(config)
    try:
        authority = UnitAuthority(units, config.server.state_dir, incarnation=incarnation,
                                  rbd_of=lambda target, lun: rbd_of(running.config, target, lun), heartbeat=heartbeat,
                                  node=config.cluster.node if config.cluster is not None else None)
    except StoreFailed as exc:
        log.error("the units' saved state cannot be read: %s", exc)
        service.close()
        raise SystemExit(1) from None
    register_unit_handlers(service, authority)
    authority.attach_loop(service)
    try:
        cluster = (Cluster(service, config.cluster, registry, authority,
                           lambda: lun_identities(running.config, lambda target, lun: authority.unit(target, lun).size),
                           Fencer(service, config.cluster.node, lambda: rbd_pools(running.config)))
                   if config.cluster is not None else None)
    except ClusterBusError as exc:
        log.error("cluster bus: %s", exc)
        authority.close()
        service.close()
        raise SystemExit(1) from None
    register_reload_handlers(service, running, authority, cluster.announce_identities if cluster is not None else None)
    register_status_handlers(service, running, registry, authority, node_name(config), incarnation,
                             cluster.peers if cluster is not None else None)
    metrics = serve_metrics(config)     # the Prometheus endpoint: a thread reading the workers' counter files
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(time.monotonic()))
    log.info("coordinator (pid %d) listening under %s", os.getpid(), config.server.state_dir)
    try:
        service.run(lambda: stopped(service, stopping), heartbeat=heartbeat)
        authority.save_at_stop()            # a clean stop: the next `serve` resumes the units' state
    finally:
        if metrics is not None:
            metrics.close()
        if cluster is not None:
            cluster.close()
        authority.close()
        service.close()
    log.info("coordinator stopped")
