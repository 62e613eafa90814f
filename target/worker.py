"""A worker process: the one place where the io_uring ring meets the sans-I/O iSCSI and SCSI objects.

Single-threaded. Every socket and disk operation is a ring op (the coordinator's ZeroMQ socket too: its FD is
watched with a poll op, see coordinator/client.py; the worker holds the client as `worker.coordinator` and
hands it to every ScsiTarget and LogicalUnit it builds); the loop is `Reactor.run_once()`: one
submit-and-wait, a batch reap, callbacks. Output produced during a turn is gathered per connection and sent
with one sendmsg at the end of the turn (at most one send in flight per connection keeps PDUs whole and in
order).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time

from coordinator.client import CoordinatorClient
from ioring import Ring
from .backstore import open_backstore
from .iscsi.access import AccessPolicy
from .iscsi.connection import Connection
from .iscsi.errors import LOGIN_OUT_OF_RESOURCES, LOGIN_TOO_MANY_CONNECTIONS
from .reactor import Reactor
from .reservation_sync import ReservationSync
from .scsi.lun import LogicalUnit
from .scsi.target import ScsiTarget
from .session_sync import SessionSync
from .watchdog import beat

log = logging.getLogger(__name__)

RECV_BUFFER = 256 * 1024
IOV_MAX = 1024
COALESCE_BELOW = 16384              # output buffers this small are copied together rather than gathered
LISTEN_BACKLOG = 1024
DRAIN_SECONDS = 5.0
PORTAL_GROUP_TAG = 1
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def listen_socket(host: str, port: int, freebind: bool = False) -> socket.socket:
    """A SO_REUSEPORT listener: every worker binds its own and the kernel spreads connections among them.
    `freebind` (a cluster VIP): listen before the address is local, so a standby node is ready for a takeover."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if freebind:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


class Channel:
    """The I/O side of one connection: its socket, receive buffer and send state."""

    __slots__ = ("sock", "fd", "conn", "recv_buf", "recv_view", "receiving", "sending", "sending_bytes", "dead",
                 "opened", "on_received", "on_sent")

    def __init__(self, sock: socket.socket, conn: Connection, opened: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = conn
        self.recv_buf = bytearray(RECV_BUFFER)
        self.recv_view = memoryview(self.recv_buf)
        self.receiving = False
        self.sending = None            # the buffers of the send in flight
        self.sending_bytes = 0         # and their total size
        self.on_received = None        # the worker's completion handlers for this channel's recv and send
        self.on_sent = None
        self.dead = False
        self.opened = opened           # time.monotonic() at accept: the login timeout counts from here


class Worker:
    """Serves every portal of the configuration on one CPU."""

    def __init__(self, config, index: int):
        self.config = config
        self.index = index
        self.ring = Ring(1024, busy_poll_us=config.server.busy_poll_us)
        self.reactor = Reactor(self.ring)
        self.coordinator = CoordinatorClient(self.reactor, config.server.state_dir, index)
        self.portal_group_tag = PORTAL_GROUP_TAG
        self.targets = {t.iqn: self._build_target(t) for t in config.targets}
        self.access = AccessPolicy.from_config(config, PORTAL_GROUP_TAG, self._admit)
        vips = config.cluster.vip_addresses() if config.cluster is not None else ()
        self.listeners = [listen_socket(host, port, host in vips) for host, port in config.server.portals]
        self.channels: dict[Connection, Channel] = {}
        self.sessions: dict[tuple, Connection] = {}
        self.dirty: set[Connection] = set()
        self._tsih = 0
        self.session_sync = SessionSync(self)
        self.reservation_sync = ReservationSync(self.coordinator, self.targets)
        self.stopping = False
        self.nop_interval = config.server.nop_interval
        self.login_timeout = config.server.login_timeout
        self.max_connections = config.server.max_connections
        self.max_connections_per_initiator = config.server.max_connections_per_initiator
        self.offers = {"InitialR2T": config.server.initial_r2t,      # our values of negotiated keys
                       "ImmediateData": config.server.immediate_data}

    def _build_target(self, target) -> ScsiTarget:
        luns = {}
        for lun in target.luns:
            store = open_backstore(lun.backstore, self.reactor, path=lun.path, size=lun.size,
                                   block_size=lun.block_size, direct=lun.direct, write_cache=lun.write_cache,
                                   encryption_key=lun.encryption_key)
            luns[lun.id] = LogicalUnit(lun.id, store, serial=lun.serial, naa=lun.naa, target_iqn=target.iqn,
                                       portal_group_tag=PORTAL_GROUP_TAG, relative_port=1,
                                       coordinator=self.coordinator, thin=lun.thin, read_only=lun.readonly,
                                       removable=lun.removable, sanitize_rate=lun.sanitize_rate,
                                       physical_block_size=lun.physical_block_size)
        return ScsiTarget(luns, coordinator=self.coordinator, call_later=self.call_later)

    def call_later(self, seconds: float, fn) -> None:
        """fn() after `seconds`, from the loop (a ring timeout)."""
        self.ring.prep_timeout(seconds, self.reactor.token(lambda res: fn()))

    # -- host interface used by Connection ------------------------------------------------------------------
    def scsi_target(self, iqn: str) -> ScsiTarget:
        return self.targets[iqn]

    def allocate_tsih(self) -> int:
        """TSIHs are unique per worker: the worker index fills the top bits, a counter the rest."""
        self._tsih = self._tsih % 1023 + 1
        return ((self.index % 63) + 1) << 10 | self._tsih

    def _admit(self, initiator_name: str) -> int:
        """0, or the login status refusing one more connection (caps of `[server]`, counted in this worker)."""
        if len(self.channels) > self.max_connections:
            log.warning("refusing a login from %s: %d connections (max_connections)", initiator_name,
                        len(self.channels))
            return LOGIN_OUT_OF_RESOURCES
        name = initiator_name.lower()
        sessions = sum(1 for conn in self.channels if conn.login is None and conn.initiator_name.lower() == name)
        if sessions >= self.max_connections_per_initiator:
            log.warning("refusing a login from %s: %d connections (max_connections_per_initiator)",
                        initiator_name, sessions)
            return LOGIN_TOO_MANY_CONNECTIONS
        return 0

    def session_started(self, conn: Connection) -> None:
        old = self.sessions.get(conn.session_key)
        if old is not None and old is not conn:
            log.info("session reinstatement: closing the old connection of %s", conn.session_key[0])
            old.close()
        self.sessions[conn.session_key] = conn
        self.session_sync.started(conn)

    def output_ready(self, conn: Connection) -> None:
        if not self.dirty:
            self.reactor.call_soon(self._flush)
        self.dirty.add(conn)

    # -- accept -------------------------------------------------------------------------------------------------
    def _arm_accept(self, listener: socket.socket) -> None:
        self.ring.prep_accept(listener.fileno(), self.reactor.token(lambda res: self._accepted(listener, res)))

    def _accepted(self, listener: socket.socket, res: int) -> None:
        if self.stopping:
            if res >= 0:
                os.close(res)
            return
        self._arm_accept(listener)
        if res < 0:
            if -res not in (errno.ECONNABORTED, errno.EINTR, errno.EAGAIN):
                log.warning("accept failed: %s", os.strerror(-res))
            return
        if len(self.channels) >= 2 * self.max_connections:
            os.close(res)                   # far past the cap: not even a login reject (logins get one)
            return
        sock = socket.socket(fileno=res)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = Connection(self, sock.getsockname()[:2], sock.getpeername()[:2])
        except OSError:
            sock.close()
            return
        channel = Channel(sock, conn, time.monotonic())
        channel.on_received = lambda res: self._received(channel, res)
        channel.on_sent = lambda res: self._sent(channel, res)
        self.channels[conn] = channel
        self._arm_recv(channel)

    # -- receive ------------------------------------------------------------------------------------------------
    def _arm_recv(self, channel: Channel) -> None:
        channel.receiving = True
        self.ring.prep_recv(channel.fd, channel.recv_buf, self.reactor.token(channel.on_received))

    def _received(self, channel: Channel, res: int) -> None:
        channel.receiving = False
        if res <= 0 or channel.dead:
            self._teardown(channel)
            return
        channel.conn.receive_data(channel.recv_view[:res])
        if not channel.conn.closing:
            self._arm_recv(channel)

    # -- send ---------------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            channel = self.channels.get(conn)
            if channel is not None and channel.sending is None:
                self._send_pending(channel)

    def _send_pending(self, channel: Channel) -> None:
        conn = channel.conn
        if channel.dead:
            return
        if not conn.out:
            if conn.closing:
                self._shutdown(channel)
            return
        bufs, size = _coalesce(conn.take_output())
        self._send(channel, bufs, size)

    def _send(self, channel: Channel, bufs: list, size: int) -> None:
        channel.sending = bufs
        channel.sending_bytes = size
        token = self.reactor.token(channel.on_sent)
        if len(bufs) == 1:
            self.ring.prep_send(channel.fd, bufs[0], token, socket.MSG_NOSIGNAL)
        else:
            self.ring.prep_sendmsg(channel.fd, bufs[:IOV_MAX], token, socket.MSG_NOSIGNAL)

    def _sent(self, channel: Channel, res: int) -> None:
        bufs = channel.sending
        channel.sending = None
        if res < 0 or channel.dead:
            self._teardown(channel)
            return
        if res < channel.sending_bytes:
            self._send(channel, _after(bufs, res), channel.sending_bytes - res)
        else:
            self._send_pending(channel)

    # -- close --------------------------------------------------------------------------------------------------
    def _shutdown(self, channel: Channel) -> None:
        """Stop both directions; the pending recv completes with 0 and tears the channel down."""
        channel.dead = True
        try:
            channel.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if not channel.receiving:
            self._teardown(channel)

    def _teardown(self, channel: Channel) -> None:
        channel.dead = True
        if channel.receiving or channel.sending is not None:
            try:
                channel.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return                          # the op in flight completes and calls back here
        conn = channel.conn
        if self.channels.pop(conn, None) is None:
            return
        if not conn.closing:
            conn.close()
        self.dirty.discard(conn)
        if self.sessions.get(conn.session_key) is conn:
            del self.sessions[conn.session_key]
        self.session_sync.ended(conn)
        channel.sock.close()
        channel.on_received = channel.on_sent = None     # they refer to the channel: no cycle left behind

    # -- keepalive and shutdown -----------------------------------------------------------------------------------
    def _keepalive(self) -> None:
        for conn, channel in list(self.channels.items()):
            if conn.activity:
                conn.activity = False
            elif conn.ping_ttt is not None:
                log.warning("%s:%d: no answer to NOP-In, dropping the connection", *conn.peer_address)
                self._shutdown(channel)
            else:
                conn.ping()

    def _expire_logins(self, now: float) -> None:
        """Drop connections still logging in `login_timeout` seconds after their accept."""
        deadline = now - self.login_timeout
        for conn, channel in list(self.channels.items()):
            if conn.login is not None and channel.opened < deadline and not channel.dead:
                log.warning("%s:%d: login not finished within %g s (login_timeout), dropping the connection",
                            *conn.peer_address, self.login_timeout)
                self._shutdown(channel)

    def request_stop(self, *_):
        self.stopping = True

    def _begin_drain(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        for conn in list(self.channels):
            conn.stop_when_idle()

    def run(self) -> None:
        self.coordinator.start()
        for listener in self.listeners:
            self._arm_accept(listener)
        next_keepalive = time.monotonic() + (self.nop_interval or 3600)
        next_login_check = time.monotonic() + 1
        drain_deadline = None
        while True:
            self.reactor.run_once(0.5)
            beat()
            now = time.monotonic()
            if self.stopping and drain_deadline is None:
                drain_deadline = now + DRAIN_SECONDS
                self._begin_drain()
            if drain_deadline is not None and (not self.channels or now > drain_deadline):
                break
            if now >= next_login_check:
                next_login_check = now + 1
                self._expire_logins(now)
            if self.nop_interval and now >= next_keepalive:
                next_keepalive = now + self.nop_interval
                self._keepalive()
        for channel in list(self.channels.values()):
            channel.sock.close()
        self.coordinator.close()
        self.ring.close()


def _after(bufs: list, sent: int) -> list:
    """The part of `bufs` not yet sent after `sent` bytes went out."""
    for i, buf in enumerate(bufs):
        size = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
        if sent < size:
            return [memoryview(buf)[sent:]] + bufs[i + 1:]
        sent -= size
    return []


def _coalesce(out: list) -> tuple[list, int]:
    """`out` as few pieces for one send, and their total size: runs of buffers below COALESCE_BELOW bytes
    are joined into one (a copy is cheaper than an iovec entry for them); bigger buffers stay as they are,
    uncopied."""
    pieces = []
    run = []
    size = 0
    for buf in out:
        n = len(buf)
        size += n
        if n < COALESCE_BELOW:
            run.append(buf)
        else:
            if run:
                pieces.append(b"".join(run) if len(run) > 1 else run[0])
                run = []
            pieces.append(buf)
    if run:
        pieces.append(b"".join(run) if len(run) > 1 else run[0])
    return pieces, size


def worker_main(config, index: int, cpu: int) -> None:
    """Entry point of a worker process (the supervisor has already pinned it to `cpu`)."""
    worker = Worker(config, index)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    log.info("worker %d (pid %d) serving on CPU %d", index, os.getpid(), cpu)
    worker.run()
    log.info("worker %d stopped", index)
