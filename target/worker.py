"""A worker process: the one place where the io_uring ring meets the sans-I/O iSCSI and SCSI objects.

Single-threaded. Every socket and disk operation is a ring op (the coordinator's ZeroMQ socket too: its FD is
watched with a poll op, see coordinator/client.py; the worker holds the client as `worker.coordinator` and
hands it to every ScsiTarget and LogicalUnit it builds); the loop is `Reactor.run_once()`: one
submit-and-wait, a batch reap, callbacks. Output produced during a turn is gathered per connection and sent
with one sendmsg ring op at the end of the turn (at most one send in flight per connection keeps PDUs whole and
in order). A connection whose unsent output is over its bound (Connection.over_output_bound) is not read until
its output has drained below it: the client's commands wait in the kernel's socket buffers, not in the worker.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from functools import partial
from collections.abc import Callable
from typing import Final

from coordinator.client import CoordinatorClient
from coordinator.lograte import RateLimitedLog
from coordinator.main import supervisor_incarnation
from ioring import Ring, address_of

from . import compiled
from .admission import PreLoginConnections, source_of
from .backstore.fencing import cluster_of
from .gctune import settle
from .image_watch import ImageWatch, rbd_image
from .iscsi.access import AccessPolicy
from .iscsi.connection import Connection
from .iscsi.errors import LOGIN_OUT_OF_RESOURCES, LOGIN_TOO_MANY_CONNECTIONS
from .iscsi.framing import NEGOTIATION_DATA_LIMIT
from .iscsi.pdu import BHS_LEN, Buf
from .iscsi.write_budget import WritePool
from .memtrim import trim_heap
from .osdmap_sync import OsdMapSync
from .metrics.counters import PUBLISH_SECONDS, WorkerCounters
from .reactor import Reactor
from .reload import LiveConfig
from .scsi.lun import LogicalUnit
from .scsi.target import ScsiTarget
from .session_sync import SessionSync
from .unit_sync import UnitSync
from .watchdog import beat

log = logging.getLogger(f"ringtgt.{__name__}")

RECV_BUFFER = 256 * 1024           # a session's receive buffer, from the full feature phase on
LOGIN_RECV_BUFFER = BHS_LEN + NEGOTIATION_DATA_LIMIT   # before: a Login PDU (without AHS) in one recv
# Where a connection's receive goes: its receive buffer; straight into a data segment being gathered
# (Connection.receive_into_segment); a header and on into a segment like the last one (Connection.receive_ahead).
_INTO_BUFFER: Final = 0
_INTO_SEGMENT: Final = 1
_INTO_HEADER_AND_SEGMENT: Final = 2
IOV_MAX: Final = 1024
COALESCE_BELOW: Final = 16384       # output buffers this small are copied together rather than gathered
# held by the module, not looked up on theirs per command (compiled, a `Final` is a C variable)
_now_ns: Final = time.monotonic_ns
_now: Final = time.monotonic
_MSG_NOSIGNAL: Final = socket.MSG_NOSIGNAL
_IPPROTO_TCP: Final = socket.IPPROTO_TCP
_TCP_QUICKACK: Final = socket.TCP_QUICKACK
LISTEN_BACKLOG = 1024
DRAIN_SECONDS = 5.0
ACCEPT_BACKOFF = 0.05               # seconds without accepting after accept failed (out of descriptors, say)
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


def _detached(res: int) -> None:
    """A channel's completion handler while it has none: before the worker sets them, after teardown."""


class Channel:
    """The I/O side of one connection: its socket, receive buffer and send state."""

    __slots__ = ("sock", "fd", "conn", "recv_buf", "recv_view", "recv_start", "receiving", "into", "sending",
                 "sending_bytes", "flush_queued", "dead", "opened", "on_received", "on_sent", "on_linked_sent")

    def __init__(self, sock: socket.socket, conn: Connection, opened: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = conn
        self._receive_into(bytearray(LOGIN_RECV_BUFFER))   # small while anyone can hold it without a login
        self.receiving = False
        self.into = _INTO_BUFFER       # where the recv in flight goes (recv_buf, a segment, or a header on into both)
        self.sending: list[Buf] | None = None    # the buffers of the send in flight
        self.sending_bytes = 0         # and their total size
        self.flush_queued = False      # in the worker's `dirty`: its output goes out at the end of the turn
        # the worker's completion handlers for this channel's recv and send
        self.on_received: Callable[[int], None] = _detached
        self.on_sent: Callable[[int], None] = _detached
        self.on_linked_sent: Callable[[int], None] = _detached
        self.dead = False
        self.opened = opened           # time.monotonic() at accept: the login timeout counts from here

    def use_session_buffer(self) -> None:
        """The full-size receive buffer, for a logged-in session (call it with no recv in flight)."""
        self._receive_into(bytearray(RECV_BUFFER))

    def _receive_into(self, buf: bytearray) -> None:
        self.recv_buf = buf
        self.recv_view = memoryview(buf)           # (held: the buffer cannot be resized under recv_start)
        self.recv_start = address_of(buf)


class Worker:
    """Serves every portal of the configuration on one CPU."""

    def __init__(self, config, index: int, cpu: int | None = None):
        self.config = config
        self.index = index
        self.cpu = cpu                      # the CPU the supervisor pinned it to (for the log)
        self.ring = Ring(1024, busy_poll_us=config.server.busy_poll_us)
        self.reactor = Reactor(self.ring)
        self.coordinator = CoordinatorClient(self.reactor, config.server.state_dir, index)
        self.portal_group_tag = PORTAL_GROUP_TAG
        self.images = ImageWatch(config.server.state_dir, self.reactor.call_later,
                                 (config.cluster.node, index) if config.cluster is not None else None)
        self.osdmap_sync = OsdMapSync(self.coordinator, self.reactor, self._rbd_units)
        self.targets = {t.iqn: self.build_target(t) for t in config.targets}
        self.access = AccessPolicy.from_config(config, PORTAL_GROUP_TAG, self._admit)
        vips = config.cluster.vip_addresses() if config.cluster is not None else ()
        self.listeners = {(host, port): listen_socket(host, port, host in vips)    # by the config's portal
                          for host, port in config.server.portals}
        self.channels: dict[Connection, Channel] = {}
        self.sessions: dict[tuple[str, int, str | None], Connection] = {}    # by (initiator, ISID, target)
        self.dirty: list[Channel] = []      # channels with output to send at the end of the turn, in order
        self._flush_soon: Callable[[], None] = self._flush     # (bound once: output_ready runs per response)
        self._queue_recv_after: Callable[[Channel], None] = self._queue_recv   # (bound once too: per receive)
        self._tsih = 0
        self.session_sync = SessionSync(self)
        self.unit_sync = UnitSync(self.coordinator, self.targets, self._serve, self.reactor.call_later)
        self.live_config = LiveConfig(self)
        self.stopping = False
        self.nop_interval = config.server.nop_interval
        self.login_timeout = config.server.login_timeout
        self.max_connections = config.server.max_connections
        self.max_connections_per_initiator = config.server.max_connections_per_initiator
        self.prelogin: PreLoginConnections[Channel] = PreLoginConnections(config.server.max_prelogin_connections,
                                            config.server.max_prelogin_per_address)
        self.logged_in = 0                         # channels past their login
        self.write_pool = WritePool()              # the R2T budget its connections share
        self.limited_log = RateLimitedLog(log)     # for what a client can make happen again and again
        self.offers = {"InitialR2T": config.server.initial_r2t,      # our values of negotiated keys
                       "ImmediateData": config.server.immediate_data}
        self.counters = WorkerCounters(config.server.state_dir, index, supervisor_incarnation(),
                                       [(t.iqn, lun.id) for t in config.targets for lun in t.luns])

    def build_target(self, target) -> ScsiTarget:
        luns = {lun.id: self.build_unit(target.iqn, lun) for lun in target.luns}
        return ScsiTarget(luns, coordinator=self.coordinator, call_later=self.reactor.call_later)

    def build_unit(self, iqn: str, lun) -> LogicalUnit:
        """The logical unit serving `lun` of target `iqn`, its image opened and watched."""
        store = self.images.open(iqn, lun, self.reactor)
        unit = LogicalUnit(lun.id, store, serial=lun.serial, naa=lun.naa, target_iqn=iqn,
                           portal_group_tag=PORTAL_GROUP_TAG, relative_port=1, thin=lun.thin, read_only=lun.readonly,
                           removable=lun.removable, sanitize_rate=lun.sanitize_rate,
                           physical_block_size=lun.physical_block_size, direct=lun.direct)
        self.images.watch(iqn, lun, unit)
        rbd = rbd_image(lun)
        if rbd is not None and self.osdmap_sync.behind(cluster_of(rbd.client)):   # a reload, during a takeover
            unit.set_becoming_ready(True)
        if hasattr(store, "on_resize"):         # an RBD image's header watch: `rbd resize`, told to the target
            store.on_resize = partial(self._store_resized, iqn, lun.id)
        return unit

    def _rbd_units(self, cluster: str) -> list[LogicalUnit]:
        """This worker's units of the RBD LUNs on `cluster` (fencing.cluster_of of their client)."""
        units = []
        for target in self.config.targets:
            scsi = self.targets.get(target.iqn)
            for lun in target.luns:
                rbd = rbd_image(lun)
                if scsi is not None and lun.id in scsi.luns and rbd is not None and cluster_of(rbd.client) == cluster:
                    units.append(scsi.luns[lun.id])
        return units

    def _store_resized(self, iqn: str, lun_id: int, size: int) -> None:
        target = self.targets.get(iqn)
        if target is not None:
            target.store_resized(lun_id, size)

    # -- host interface used by Connection ------------------------------------------------------------------
    def scsi_target(self, iqn: str) -> ScsiTarget:
        return self.targets[iqn]

    def allocate_tsih(self) -> int:
        """TSIHs are unique per worker: the worker index fills the top bits, a counter the rest."""
        self._tsih = self._tsih % 1023 + 1
        return ((self.index % 63) + 1) << 10 | self._tsih

    def _admit(self, initiator_name: str) -> int:
        """0, or the login status refusing one more connection (caps of `[server]`, counted in this worker
        among the logged-in connections: those still logging in have caps of their own)."""
        if self.logged_in >= self.max_connections:
            self.limited_log.warning("max_connections", "refusing a login from %s: %d connections (max_connections)",
                                     initiator_name, self.logged_in)
            return LOGIN_OUT_OF_RESOURCES
        name = initiator_name.lower()
        sessions = sum(1 for conn in self.channels if conn.login is None and conn.initiator_name.lower() == name)
        if sessions >= self.max_connections_per_initiator:
            self.limited_log.warning("max_connections_per_initiator",
                                     "refusing a login from %s: %d connections (max_connections_per_initiator)",
                                     initiator_name, sessions)
            return LOGIN_TOO_MANY_CONNECTIONS
        return 0

    def session_started(self, conn: Connection) -> None:
        key = conn.session_key
        assert key is not None                  # set as the session starts (Connection._enter_full_feature)
        old = self.sessions.get(key)
        if old is not None and old is not conn:
            log.info("session reinstatement: closing the old connection of %s", key[0])
            old.close()
        self.sessions[key] = conn
        self.session_sync.started(conn)
        channel = self.channels.get(conn)
        if channel is not None:
            self._logged_in(channel)

    def output_ready(self, conn: Connection) -> None:
        """Host.output_ready: `conn`'s output goes out at the end of the turn (a list and a flag, not a set: a set
        made, iterated and freed every turn cost a QD1 read 0.7k instructions more)."""
        channel = self.channels.get(conn)
        if channel is None or channel.flush_queued:
            return
        channel.flush_queued = True
        if not self.dirty:
            self.reactor.call_soon(self._flush_soon)
        self.dirty.append(channel)

    # -- accept -------------------------------------------------------------------------------------------------
    def _arm_accept(self, listener: socket.socket) -> None:
        self.ring.prep_accept(listener.fileno(), self.reactor.token(lambda res: self._accepted(listener, res)))

    def _serve(self) -> None:
        """The coordinator's unit states are applied (target/unit_sync.py): accept on every portal. Until then
        connections wait in the listeners' backlogs, so no command is served before a reservation or a sanitize
        failure the coordinator holds is in force here."""
        if not self.stopping:
            kinds = compiled.loaded().values()
            log.info("worker %d (pid %d) serving on CPU %s; data path %s", self.index, os.getpid(), self.cpu,
                     "compiled" if all(kinds) else "source" if not any(kinds) else "partly compiled")
            for listener in self.listeners.values():
                self._arm_accept(listener)

    def listen(self, host: str, port: int) -> None:
        """Serve one more portal (a reload added it)."""
        vips = self.config.cluster.vip_addresses() if self.config.cluster is not None else ()
        listener = listen_socket(host, port, host in vips)
        self.listeners[(host, port)] = listener
        if self.unit_sync.ready:
            self._arm_accept(listener)

    def stop_listening(self, host: str, port: int) -> None:
        """Accept no more on a portal (a reload removed it; its connections stay). The shutdown ends the accept in
        flight, whose completion closes the socket: closed before, its descriptor could be reused under that op."""
        listener = self.listeners.pop((host, port), None)
        if listener is not None and not self.unit_sync.ready:
            listener.close()                # no accept in flight yet
        elif listener is not None:
            listener.shutdown(socket.SHUT_RDWR)

    def _accepted(self, listener: socket.socket, res: int) -> None:
        if self.stopping or listener not in self.listeners.values():
            if res >= 0:
                os.close(res)
            listener.close()
            return
        if res < 0:
            self._accept_failed(listener, -res)
            return
        self._arm_accept(listener)
        sock = socket.socket(fileno=res)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = Connection(self, sock.getsockname()[:2], sock.getpeername()[:2])
        except OSError:
            sock.close()
            return
        channel = Channel(sock, conn, time.monotonic())
        channel.on_received = lambda res: self._received_before_login(channel, res)
        channel.on_sent = lambda res: self._sent(channel, res)
        channel.on_linked_sent = lambda res: self._linked_sent(channel, res)
        self.channels[conn] = channel
        evicted = self.prelogin.add(channel, source_of(conn.peer_address[0]))
        if evicted is not None:
            idlest, cap = evicted
            self._evict(idlest, f"{cap} = {getattr(self.config.server, cap)}")
        self._arm_recv(channel)

    def _accept_failed(self, listener: socket.socket, err: int) -> None:
        """Accept again at once if the peer gave up first; on any other error (out of descriptors, most
        likely) drop the idlest connection still logging in and accept again ACCEPT_BACKOFF s later."""
        if err in (errno.ECONNABORTED, errno.EINTR, errno.EAGAIN):
            self._arm_accept(listener)
            return
        self.limited_log.warning(("accept", err), "accept on %s:%d failed: %s; accepting again in %g s",
                                 *listener.getsockname()[:2], os.strerror(err), ACCEPT_BACKOFF)
        idlest = self.prelogin.idlest() if err in (errno.EMFILE, errno.ENFILE) else None
        if idlest is not None:
            self._evict(idlest, os.strerror(err))
        self.reactor.call_later(ACCEPT_BACKOFF, lambda: self._accept_again(listener))

    def _accept_again(self, listener: socket.socket) -> None:
        if listener in self.listeners.values():     # not closed by a drain or a reload meanwhile
            self._arm_accept(listener)
        else:
            listener.close()

    def _evict(self, channel: Channel, why: str) -> None:
        """Drop a connection still logging in to make room for another."""
        self.prelogin.discard(channel)
        self.limited_log.warning(("evict", why), "%s:%d: dropping the idlest connection before login (%s)",
                                 *channel.conn.peer_address, why)
        self._shutdown(channel)

    def _received_before_login(self, channel: Channel, res: int) -> None:
        if res > 0:
            self.prelogin.heard_from(channel)
        self._received(channel, res)

    def _logged_in(self, channel: Channel) -> None:
        """Its login completed: off the pre-login books, and a session gets the full-size receive buffer
        (discovery sessions keep the small one: a Text Request fits it)."""
        self.prelogin.discard(channel)
        self.logged_in += 1
        channel.on_received = lambda res: self._received(channel, res)
        if channel.conn.target is not None and not channel.receiving:
            channel.use_session_buffer()

    # -- receive ------------------------------------------------------------------------------------------------
    def _arm_recv(self, channel: Channel) -> None:
        """The channel receives again: so marked now, its recv queued once the turn's answers are submitted
        (teardown meanwhile waits for that recv, which a shut-down socket completes at once)."""
        channel.receiving = True
        self.reactor.call_after_submit(self._queue_recv_after, channel)

    def _queue_recv(self, channel: Channel) -> None:
        """Queue the receive `_arm_recv` promised: into the rest of a big data segment, a header and the segment
        after it, or the receive buffer (up to the next header where the decoder asks so)."""
        conn = channel.conn
        token = self.reactor.token(channel.on_received)
        segment = conn.receive_into_segment()
        if segment is not None:
            channel.into = _INTO_SEGMENT
            self.ring.prep_recv(channel.fd, segment, token)
            return
        header = conn.header_wanted()
        if header:
            ahead = conn.receive_ahead(channel.recv_view)
            if ahead is not None:
                channel.into = _INTO_HEADER_AND_SEGMENT
                self.ring.prep_recv_parts(channel.fd, ahead[0], ahead[1], channel.recv_buf, token)
                return
        channel.into = _INTO_BUFFER
        self.ring.prep_recv_at(channel.fd, channel.recv_start, header if header else len(channel.recv_buf),
                               channel.recv_buf, token)

    def _received(self, channel: Channel, res: int) -> None:
        channel.receiving = False
        if res <= 0 or channel.dead:
            self._teardown(channel)
            return
        conn = channel.conn
        into = channel.into
        if into == _INTO_BUFFER:
            conn.receive_data(channel.recv_view[:res], _now_ns())
        else:
            # (also after a header taken with a segment ahead that was not a big write's: the receive may have
            # brought as much data all the same, and what it brought is known only once the decoder has it)
            _ack_now(channel.sock)
            if into == _INTO_SEGMENT:
                conn.segment_received(res, _now_ns())
            else:
                conn.ahead_received(res, _now_ns())
        if not conn.closing and not conn.over_output_bound:
            self._arm_recv(channel)             # else `_sent` arms it once the output has drained

    # -- send ---------------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for channel in dirty:                       # (first: a send that raises must leave no channel marked queued,
            channel.flush_queued = False            # which output_ready would then never queue again)
        for channel in dirty:
            if channel.sending is None:
                self._send_pending(channel)         # (a channel torn down meanwhile is dead: it sends nothing)

    def _send_pending(self, channel: Channel) -> None:
        conn = channel.conn
        if channel.dead or conn.owes_linked:
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
            self.ring.prep_send(channel.fd, bufs[0], token, _MSG_NOSIGNAL)
        else:
            self.ring.prep_sendmsg(channel.fd, bufs[:IOV_MAX], token, _MSG_NOSIGNAL)

    def send_linked(self, conn: Connection, out: memoryview) -> tuple[int, memoryview, int, int] | None:
        """Host.send_linked: `out` is the connection's next send, which the caller queues linked to a disk read
        (Ring.prep_read_send): the socket, `out`, the send's token and flags; None while a send is in flight."""
        channel = self.channels.get(conn)
        if channel is None or channel.sending is not None or channel.dead:
            return None
        channel.sending = [out]
        channel.sending_bytes = len(out)
        return channel.fd, out, self.reactor.token(channel.on_linked_sent), _MSG_NOSIGNAL

    def _linked_sent(self, channel: Channel, res: int) -> None:
        """A linked send completed; cancelled (its read failed or stopped short), it sent nothing."""
        if res == -errno.ECANCELED and not channel.dead:
            channel.sending = None
            channel.conn.linked_send_completed(cancelled=True)
            self._send_pending(channel)
            return
        if res >= 0:
            channel.conn.linked_send_completed(cancelled=False)
        self._sent(channel, res)

    def _sent(self, channel: Channel, res: int) -> None:
        bufs: list[Buf] = channel.sending  # type: ignore[assignment]   # a send is in flight (_send set it)
        channel.sending = None
        if res < 0 or channel.dead:
            self._teardown(channel)
            return
        if res < channel.sending_bytes:
            self._send(channel, _after(bufs, res), channel.sending_bytes - res)
            return
        conn = channel.conn
        finished = conn.output_sent()
        if finished:
            self.counters.count(conn, finished, _now_ns())
        if not channel.receiving and not conn.closing and not conn.over_output_bound:
            self._arm_recv(channel)             # reading was paused for the output to drain
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
        if conn.login is None:
            self.logged_in -= 1
        else:
            self.prelogin.discard(channel)
        if not conn.closing:
            conn.close()
        if conn.session_key is not None and self.sessions.get(conn.session_key) is conn:
            del self.sessions[conn.session_key]
        self.session_sync.ended(conn)
        self.counters.session_ended(conn)
        channel.sock.close()
        # they refer to the channel: no cycle left behind
        channel.on_received = channel.on_sent = channel.on_linked_sent = _detached

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
                self.limited_log.warning("login_timeout",
                                         "%s:%d: login not finished within %g s (login_timeout), dropping the "
                                         "connection", *conn.peer_address, self.login_timeout)
                self._shutdown(channel)

    def _publish_counters(self) -> None:
        self.counters.publish(len(self.channels), self.logged_in, sum(len(conn.commands) for conn in self.channels))

    def request_stop(self, *_):
        self.stopping = True

    def _begin_drain(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners = {}
        for conn in list(self.channels):
            conn.stop_when_idle()

    def run(self) -> None:
        self.coordinator.start()            # accepting begins once the unit states are here (_serve)
        settle()
        next_keepalive = time.monotonic() + (self.nop_interval or 3600)
        next_login_check = time.monotonic() + 1
        next_publish = 0.0
        drain_deadline = None
        while True:
            self.reactor.run_once(0.5)
            beat()
            now = _now()
            if self.stopping and drain_deadline is None:
                drain_deadline = now + DRAIN_SECONDS
                self._begin_drain()
            if drain_deadline is not None and (not self.channels or now > drain_deadline):
                break
            if now >= next_publish:
                next_publish = now + PUBLISH_SECONDS
                self._publish_counters()
            if now >= next_login_check:
                next_login_check = now + 1
                self._expire_logins(now)
                if self.prelogin.receded():
                    trim_heap()
            if self.nop_interval and now >= next_keepalive:
                next_keepalive = now + self.nop_interval
                self._keepalive()
        for channel in list(self.channels.values()):
            channel.sock.close()
        self._publish_counters()
        self.counters.close()
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


def _ack_now(sock: socket.socket) -> None:
    """Have the kernel acknowledge what `sock` has received at once (TCP_QUICKACK), after a receive straight into a
    big data segment. A request-response connection delays its ACKs to ride on the next response, and a big write's
    response comes only once all of its data is in: the initiator's congestion control (BBR paces by the delivery
    rate the ACKs show) then sees a slow path and paces its sends, its core busy with pacing timers. Acknowledged at
    once, 128k writes ran 20.5k -> 25k IOPS on the null LUN (README, "Big writes acknowledged at once")."""
    try:
        sock.setsockopt(_IPPROTO_TCP, _TCP_QUICKACK, 1)
    except OSError:                     # the connection is going: its receive or send reports why
        pass


def _coalesce(out: list) -> tuple[list, int]:
    """`out` as few pieces for one send, and their total size: runs of buffers below COALESCE_BELOW bytes
    are joined into one (a copy is cheaper than an iovec entry for them); bigger buffers stay as they are,
    uncopied."""
    if len(out) < 2:                    # (a turn's one response: QD1)
        return out, len(out[0]) if out else 0
    size = 0
    biggest = 0
    for buf in out:                     # (a loop, not map/sum/max: those are looked up by name, compiled)
        n = len(buf)
        size += n
        if n > biggest:
            biggest = n
    if biggest < COALESCE_BELOW:        # the usual batch (responses, 4k reads): one piece, without the loop below
        return [b"".join(out)], size
    pieces = []
    run = []
    for buf in out:
        if len(buf) < COALESCE_BELOW:
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
    worker = Worker(config, index, cpu)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    log.info("worker %d (pid %d) started on CPU %d; it serves once the coordinator's unit states are here", index,
             os.getpid(), cpu)
    worker.run()
    log.info("worker %d stopped", index)
