"""What `ringtgt serve` checks before it forks anything: a mistake no restart can mend is one line and exit 1,
never workers crash-looping on it.

    state_dir   made if missing, and locked (`<state_dir>/serve.lock`, flock) for the supervisor's life: one
                instance per state_dir. The forked children inherit the lock's open file, so it stays held while
                any of them lives, even after a supervisor killed with SIGKILL left them running.
    portals     bound once without SO_REUSEPORT (IP_FREEBIND for a cluster VIP), then closed: a listener of
                another process on the address, SO_REUSEPORT or not, makes that bind fail, so the workers'
                SO_REUSEPORT listeners never join a foreign one.
    images      each file LUN's image created at most once, then required to be the recorded file
                (backstore/images.py); an encryption key made once, here, not by each worker.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket

from .backstore import BackstoreError
from .backstore import images
from .backstore.encrypted import _read_key
from .config import Config
from .image_watch import rbd_image

LOCK_FILE = "serve.lock"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


class PreflightError(Exception):
    """A permanent reason `serve` cannot start; the message names the portal or path and the reason."""


def preflight(config: Config) -> int:
    """Check everything before the supervisor forks; the fd of the held state_dir lock (keep it open)."""
    lock = lock_state_dir(config.server.state_dir)
    try:
        vips = config.cluster.vip_addresses() if config.cluster is not None else ()
        for host, port in config.server.portals:
            check_portal(host, port, freebind=host in vips)
        for target in config.targets:
            for lun in target.luns:
                if lun.backstore == "file":
                    check_image(config.server.state_dir, target.iqn, lun)
                elif lun.backstore == "rbd":
                    check_rbd_image(config.server.state_dir, target.iqn, lun)
    except BaseException:
        os.close(lock)
        raise
    return lock


def lock_state_dir(state_dir: str) -> int:
    """Make state_dir if missing and take its lock, writing our pid into it; the lock's fd."""
    path = os.path.join(state_dir, LOCK_FILE)
    try:
        os.makedirs(state_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise PreflightError(f"state_dir {state_dir}: not a directory") from None
    except OSError as e:
        raise PreflightError(f"state_dir {state_dir}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PreflightError(f"state_dir {state_dir} is in use by another `ringtgt serve` (pid {holder}, "
                             f"holding {path})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_portal(host: str, port: int, freebind: bool = False) -> None:
    """PreflightError unless this process may listen on host:port and no other process listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # TIME_WAIT leftovers do not count
        if freebind:
            probe.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            portal = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            if e.errno == errno.EADDRINUSE:
                raise PreflightError(f"portal {portal}: another process listens on it") from None
            raise PreflightError(f"portal {portal}: cannot listen: {e.strerror}") from None


def check_rbd_image(state_dir: str, iqn: str, lun, timeout: float | None = None) -> None:
    """The LUN's RBD image made if missing (with a size), without exclusive-lock (also for a LUN a reload adds),
    within `timeout` seconds (None: the check's own deadline)."""
    from .backstore.rados import PREPARE_TIMEOUT_SECONDS, prepare_image_apart  # librados only for RBD LUNs

    image = rbd_image(lun)
    assert image is not None                    # config.py requires pool and image for backstore "rbd"
    try:
        prepare_image_apart(image, lun.size, PREPARE_TIMEOUT_SECONDS if timeout is None else timeout)
        images.clear_offline(state_dir, iqn, lun.id)     # a worker could not open it in an earlier run
    except BackstoreError as e:
        raise PreflightError(f"{iqn} LUN {lun.id}: {e}") from None
    except OSError as e:
        raise PreflightError(f"{iqn} LUN {lun.id}: {e.filename}: {e.strerror}") from None


def check_image(state_dir: str, iqn: str, lun) -> None:
    """The LUN's image made if missing and required to be the recorded one (also for a LUN a reload adds)."""
    try:
        images.prepare(state_dir, iqn, lun.id, lun.path, lun.size, lun.block_size, lun.direct)
        if lun.encryption_key is not None:
            _read_key(lun.encryption_key)       # made here once: workers making it would each make their own
    except BackstoreError as e:
        raise PreflightError(f"{iqn} LUN {lun.id}: {e}") from None
