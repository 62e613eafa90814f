"""The worker's side of the coordinator: a ZeroMQ DEALER on ipc://<state_dir>/coordinator.sock, driven by the
worker's own io_uring loop (no thread).

    client = CoordinatorClient(reactor, state_dir, index)
    client.request(SessionLogin(record), on_reply, on_failure)   # on_reply(LoginRegistered) later, or
                                                                 # on_failure(Failure), from the worker loop
    client.request(ReservationRequest(...), on_reply, on_failure, owner=nexus, late=on_late)   # a command's
    client.withdraw(nexus)                                 # the nexus's connection closed
    client.notify(SessionLogout(tsih))                     # fire and forget
    client.subscribe(SessionEnd, on_push)                  # on_push(message, ack): call ack() once, when applied
                                                           # (ack(body): with what the coordinator's submitter reads)
    client.on_connect(resync)                              # after every (re)connection to a coordinator

Messages are the typed classes of coordinator/messages.py; a reply is rebuilt as the request's REPLY class.

Reaching it: the worker holds it as `worker.coordinator`; the SCSI layer reaches the same object as
`ScsiTarget.coordinator` and `LogicalUnit.coordinator` (set by the worker when it builds them; None in
unit tests that build SCSI objects alone). The iSCSI layer reaches it through its host, the worker.

The socket's ZMQ_FD is watched with a one-shot io_uring poll op. ZMQ_FD is edge-triggered: it only says
"something changed". So every time it fires, and after every send (a send may consume the signal that
announced incoming messages), the client drains: while ZMQ_EVENTS has POLLIN, receive and dispatch; then it
re-arms the poll. A socket monitor (its own FD, watched the same way) reports each connection to a
coordinator; the client then says HELLO {pid, index}. The coordinator answers WELCOME {epoch}; a new epoch
(a restarted coordinator: ZeroMQ reconnects by itself) makes the client resend its unanswered requests and
run the on_connect callbacks, which re-register the worker's state.

One failure path: a request gets exactly one of on_reply(reply) and on_failure(Failure). A Failure is an expiry
(`expired`), an ERROR from the coordinator (unknown kind, malformed body, handler failure, dropped unapplied) or a
reply that does not have its class's shape; the client logs it once, rate-limited per kind, so callers only decide
what it means for them.

Deadlines. Every request is answered within `timeout` seconds (REQUEST_TIMEOUT by default): past it
on_failure gets Failure(expired=True) and the caller answers its command without the
coordinator (BUSY, a rejected task management function, a login that proceeds). The client then counts the
coordinator as unresponsive (`responsive` False) until the next message from it, so callers that would wait for
it (a login) stop waiting at once. A request with an `owner` (the I_T nexus whose command it serves) is a
command: it carries its deadline, the coordinator drops it unapplied once the deadline has passed (the caller
has answered it), and `withdraw(owner)` (its connection closed) takes back the ones still queued at the
coordinator, so a command is never applied long after its initiator has gone. A request without an owner is a
report of the worker's state (a login, a nexus loss): applied whenever the coordinator gets to it. Either way a
reply arriving after the callback gave up goes to `late(reply)`, if given, so a change the coordinator applied
after all still reaches this worker's copy of the state (every other worker has it through the pushes).
"""
from __future__ import annotations

import itertools
import logging
import os
import select
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from .endpoints import SEND_QUEUE, workers_endpoint
from .lograte import RateLimitedLog
from .messages import Failure, Message, reply_class
from .schema import (ACK, BYE, ERROR, HELLO, NOTIFY, PUSH, REPLY, REQUEST, WELCOME, WITHDRAW, SchemaError,
                     decode, encode)

log = logging.getLogger(f"ringtgt.{__name__}")

CLOSE_LINGER_MS = 200           # how long close() lets the goodbye reach the coordinator
REQUEST_TIMEOUT = 5.0           # seconds a request waits for its reply (above the coordinator's ACK_TIMEOUT)
LATE_REMEMBERED = 1024          # given-up requests whose late reply is still applied (the oldest forgotten)

PushHandler = Callable[[Message, Callable[[], None]], None]
ReplyHandler = Callable[[Message], None]
FailureHandler = Callable[[Failure], None]


class _Request:
    """A request waiting for its reply."""

    __slots__ = ("message", "on_reply", "on_failure", "late", "owner", "deadline")

    def __init__(self, message: Message, on_reply: ReplyHandler, on_failure: FailureHandler,
                 late: ReplyHandler | None, owner: str | None, deadline: float):
        self.message = message
        self.on_reply = on_reply
        self.on_failure = on_failure
        self.late = late
        self.owner = owner
        self.deadline = deadline            # sent with a command (owner set), 0 otherwise

    @property
    def kind(self) -> str:
        return self.message.KIND

    def encode(self, request_id: int) -> bytes:
        return encode(REQUEST, request_id, self.message.KIND, self.message.to_body(), self.deadline)


class _Watch:
    """One ZeroMQ socket whose FD is polled through the reactor; `drain()` runs on every readiness edge."""

    __slots__ = ("reactor", "socket", "fd", "on_message", "armed", "scheduled", "closed")

    def __init__(self, reactor, sock: zmq.Socket, on_message: Callable[[list[bytes]], None]):
        self.reactor = reactor
        self.socket = sock
        self.fd = sock.getsockopt(zmq.FD)
        self.on_message = on_message
        self.armed = False
        self.scheduled = False
        self.closed = False

    def arm(self) -> None:
        if not self.armed and not self.closed:
            self.armed = True
            self.reactor.ring.prep_poll_add(self.fd, select.POLLIN, self.reactor.token(self._ready))

    def _ready(self, res: int) -> None:
        self.armed = False
        self.drain()

    def schedule(self) -> None:
        """Drain at the end of this loop turn (after a send)."""
        if not self.scheduled:
            self.scheduled = True
            self.reactor.call_soon(self.drain)

    def drain(self) -> None:
        self.scheduled = False
        sock = self.socket
        while not self.closed and cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                self.on_message(frames)
            except Exception:
                log.exception("coordinator message handling failed")
        self.arm()


class CoordinatorClient:
    """A worker's connection to its node's coordinator."""

    def __init__(self, reactor, state_dir: str, index: int, *, context: zmq.Context | None = None):
        self.index = index
        self.origin = f"w{index}.{os.getpid()}"
        context = context or zmq.Context.instance()
        sock = context.socket(zmq.DEALER)
        sock.routing_id = self.origin.encode()
        sock.sndhwm = SEND_QUEUE
        sock.linger = CLOSE_LINGER_MS
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        sock.connect(workers_endpoint(state_dir))
        self.socket = sock
        self.epoch: str | None = None           # the coordinator incarnation last welcomed by
        self._next_id = itertools.count(1).__next__
        self.reactor = reactor
        self.responsive = True                  # False from a request's expiry to the next message
        self._pending: dict[int, _Request] = {}
        self._late: OrderedDict[int, _Request] = OrderedDict()   # given up, their late reply still applied
        self._failures = RateLimitedLog(log)
        self._subscriptions: dict[str, tuple[type[Message], PushHandler]] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._watch = _Watch(reactor, sock, self._on_message)
        self._monitor = _Watch(reactor, monitor, self._on_monitor_event)

    def start(self) -> None:
        """Begin watching the sockets (call once the reactor runs in this process)."""
        self._monitor.drain()
        self._watch.drain()

    # -- the contract ---------------------------------------------------------------------------------------
    def request(self, message: Message, on_reply: ReplyHandler, on_failure: FailureHandler, *,
                owner: str | None = None, late: ReplyHandler | None = None, timeout: float = REQUEST_TIMEOUT) -> None:
        """Exactly one of on_reply(reply: message.REPLY) and on_failure(Failure), at the latest `timeout` seconds
        from now. `owner`, `late`: see the module docstring."""
        request_id = self._next_id()
        entry = _Request(message, on_reply, on_failure, late, owner,
                         0.0 if owner is None else time.monotonic() + timeout)
        self._pending[request_id] = entry
        self._send(entry.encode(request_id))
        self.reactor.call_later(timeout, lambda: self._expire(request_id, timeout))

    def withdraw(self, owner: str) -> None:
        """The commands of `owner` still waiting are taken back: the coordinator drops those it has not applied
        yet; their callbacks are not called (the connection is gone), `late` still is."""
        for request_id, entry in list(self._pending.items()):
            if entry.owner == owner:
                del self._pending[request_id]
                self._give_up(request_id, entry)
                self._send(encode(WITHDRAW, request_id))

    def notify(self, message: Message) -> None:
        self._send(encode(NOTIFY, 0, message.KIND, message.to_body()))

    def subscribe(self, cls: type[Message], handler: PushHandler) -> None:
        """handler(message: cls, ack) for every push of cls.KIND."""
        if cls.KIND in self._subscriptions:
            raise ValueError(f"{cls.KIND!r} pushes already have a handler")
        self._subscriptions[cls.KIND] = (cls, handler)

    def on_connect(self, callback: Callable[[], None]) -> None:
        """callback() after every connection to a coordinator (first start and each coordinator restart)."""
        self._connect_hooks.append(callback)

    def close(self) -> None:
        """Say goodbye (so the coordinator stops waiting for our acks at once) and close."""
        self._send(encode(BYE))
        self._watch.closed = self._monitor.closed = True
        self.socket.disable_monitor()
        self._monitor.socket.close(0)
        self.socket.close()

    # -- internals ------------------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            self.socket.send(data, zmq.NOBLOCK)
        except zmq.Again:
            log.error("coordinator send queue full (%d messages): message dropped", SEND_QUEUE)
        self._watch.schedule()

    def _expire(self, request_id: int, timeout: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        self.responsive = False
        self._give_up(request_id, entry)
        self._failures.warning((entry.kind, "expired"), "worker %d: no answer from the coordinator to %s within %g "
                               "s: answered without it", self.index, entry.kind, timeout)
        entry.on_failure(Failure(f"no answer from the coordinator within {timeout:g} s", expired=True))

    def _give_up(self, request_id: int, entry: _Request) -> None:
        if entry.late is not None:
            self._late[request_id] = entry
            if len(self._late) > LATE_REMEMBERED:
                self._late.popitem(last=False)

    def _answered(self, entry: _Request, type_: str, body: dict, late: bool) -> None:
        """The coordinator's REPLY or ERROR to `entry`: on_reply (or `late`, after it gave up) with the typed
        reply; on_failure, logged here once, for an error or a reply without its class's shape."""
        reason = body.get("error") if type_ == ERROR else None
        if reason is None:
            try:
                reply = reply_class(entry.message).from_body(body)
            except SchemaError as exc:
                reason = f"malformed reply: {exc}"
            else:
                handler = entry.late if late else entry.on_reply
                if handler is not None:         # `late` is set for every entry given up with a late handler
                    handler(reply)
                return
        self._failures.error((entry.kind, "failed"), "worker %d: the coordinator did not serve %s: %s", self.index,
                             entry.kind, reason)
        if not late:
            entry.on_failure(Failure(str(reason)))

    def _on_monitor_event(self, frames: list[bytes]) -> None:
        if parse_monitor_message(frames)["event"] == zmq.EVENT_CONNECTED:
            self._send(encode(HELLO, body={"pid": os.getpid(), "index": self.index}))

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            message = decode(frames[-1])
        except SchemaError as exc:
            log.warning("dropped a malformed message from the coordinator: %s", exc)
            return
        kind = message.type
        self.responsive = True
        if kind in (REPLY, ERROR):
            entry = self._pending.pop(message.id, None)
            if entry is not None:
                self._answered(entry, kind, message.body, late=False)
            else:
                entry = self._late.pop(message.id, None)
                if entry is not None and kind == REPLY:     # applied after all, after this worker answered
                    self._answered(entry, kind, message.body, late=True)
        elif kind == PUSH:
            self._push(message.id, message.kind, message.body)
        elif kind == WELCOME:
            self._welcome(message.body.get("epoch"))
        else:
            log.warning("dropped a %s message from the coordinator", kind)

    def _push(self, push_id: int, kind: str, body: dict) -> None:
        acked = False

        def ack(body: dict | None = None) -> None:
            nonlocal acked
            if acked:
                log.warning("%s push %d acked twice", kind, push_id)
                return
            acked = True
            self._send(encode(ACK, push_id, body=body or {}))

        subscription = self._subscriptions.get(kind)
        if subscription is None:
            log.warning("no handler for %s pushes; acking it unapplied", kind)
            ack()
            return
        cls, handler = subscription
        try:
            pushed = cls.from_body(body)
        except SchemaError as exc:
            log.warning("dropped a malformed push: %s; acking it unapplied", exc)
            ack()
            return
        try:
            handler(pushed, ack)
        except Exception:
            log.exception("%s push handler failed", kind)
            if not acked:
                ack()

    def _welcome(self, epoch) -> None:
        if epoch == self.epoch:
            return
        restarted = self.epoch is not None
        self.epoch = epoch
        if restarted:
            log.info("worker %d: coordinator restarted; resending %d requests", self.index, len(self._pending))
        for request_id, entry in list(self._pending.items()):
            self._send(entry.encode(request_id))
        for hook in self._connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("coordinator on_connect callback %r failed", hook)
