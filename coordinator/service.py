"""The coordinator's service loop: a ZeroMQ ROUTER for the node's workers, one for control clients, and the
dispatch of their messages to the handlers the domain modules register.

    service = CoordinatorService(state_dir)
    service.register(SessionLogin, handler)      # handler(message, origin) -> Reply(reply message, pushes)
    service.run(lambda: stopping)

Requests (and notifications) are processed one at a time, in arrival order. A handler's broadcasts are pushed to
every connected worker except the origin; the reply goes to the origin only once every one of them has acked, and
the next request waits until then. So a reply means "every worker has applied the change" (linearizable for a
client that waits for its reply). An ACK may carry a body, what the worker reports about the push (an
OsdMapBarrier's: the clusters it is behind on), which `submit`'s `then` gets (`Acks`). Messages are the classes of
coordinator/messages.py: a request's body is rebuilt as the registered class before its handler runs. A handler
that raises, a body without its class's shape, or a kind nobody registered answers an ERROR (the client's failure
callback gets the reason); a message that breaks the wire schema is logged and dropped. Neither stops the loop.

Workers. A worker says HELLO {pid, index} on every connection (origin = its ZeroMQ routing id,
"w<index>.<pid>") and gets WELCOME {epoch}, after what the `on_worker_joined` hooks sent it alone (`push_to`:
outside the pipeline, not waited for) when it connects for the first time. The coordinator then watches the
worker's process through a pidfd (`os.pidfd_open`, readable once the process has exited): a worker that dies
— even by SIGKILL — is dropped at once, its pending acks are no longer awaited, and the `on_worker_gone` hooks
run (e.g. the session registry forgets its sessions). A worker that stops cleanly says BYE, which does the same.
A worker that is alive but does not ack within `ack_timeout` seconds is logged as an error and not waited for, then or
for later pushes, until it sends something again (a stopped worker costs one request `ack_timeout`, not every
request; the supervisor's watchdog kills and restarts it after `hang_timeout`).
Requests a restarted worker resends (after a coordinator restart) are recognised by (origin, id) and answered
from a small reply cache instead of being applied twice.

Deadlines and withdrawal (see coordinator/client.py): a request carrying a deadline (a command) that is still
queued when its deadline passes is dropped, not applied: its worker has answered the command without us. A
WITHDRAW from a worker (the command's connection closed) drops the request if it is still queued (applied
already, it stays applied, as a command whose response was lost). Either way the worker gets an ERROR
{"dropped": True}, and the drop is logged (rate-limited).

Control clients (`ringtgt sessions` …) send REQUESTs on control.sock; their origin is "control", and their
broadcasts go to every worker. The coordinator's own parts (the cluster bus) `submit` work the same way.

A handler that cannot answer at once (a lock held by someone else, a question to a peer node) returns
`service.defer()` and later calls `.resolve(Reply(...))` on it, from any callback of this loop. Meanwhile the
pipeline goes on with other requests; the resolved reply then takes its turn in the queue like a new request
(its broadcasts are pushed and acked before the origin gets the body).

Other loops (the cluster bus, timers) plug in with `watch(socket_or_fd, callback)` and
`call_later(seconds, fn)`; everything runs in this one thread.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

import zmq

from .endpoints import SEND_QUEUE, control_endpoint, workers_endpoint
from .lograte import RateLimitedLog
from .messages import Message
from .schema import ACK, BYE, ERROR, HELLO, NOTIFY, PUSH, REPLY, REQUEST, WELCOME, WITHDRAW, SchemaError, decode, encode
from .schema import Message as Envelope

log = logging.getLogger("ringtgt.coordinator")

ACK_TIMEOUT = 3.0           # below the workers' REQUEST_TIMEOUT: a stuck worker's peers still answer in time
REPLY_CACHE = 256           # answered request ids remembered per worker, for resent duplicates
CONTROL_ORIGIN = "control"
INTERNAL_ORIGIN = "coordinator"


@dataclass
class Reply:
    """What a handler returns: the reply for the origin (of the request's REPLY class), and pushes for every
    other worker."""
    body: Message
    broadcasts: Sequence[Message] = field(default_factory=list)


Handler = Callable[[Message, str], "Reply | Deferred"]
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class WorkerInfo:
    origin: str
    routing_id: bytes
    pid: int
    index: int
    pidfd: int


@dataclass
class _Queued:
    socket: zmq.Socket | None            # None: submitted by the coordinator itself
    routing_id: bytes
    origin: str
    message: Envelope
    resolved: Reply | None = None           # a deferred request's reply, once resolved
    then: Callable[[Acks], object] | None = None    # submitted by the coordinator: run once its pushes are acked


class Deferred:
    """The promise of a later reply: what a handler returns after `service.defer()`."""

    __slots__ = ("_service", "_request", "done")

    def __init__(self, service: CoordinatorService, request: _Queued):
        self._service = service
        self._request = request
        self.done = False

    def time_left(self) -> float:
        """Seconds until the request's deadline (its worker answers the command without us then); inf without one."""
        deadline = self._request.message.deadline
        return deadline - time.monotonic() if deadline else float("inf")

    def drop(self, why: str, detail: str) -> None:
        """Answer it unapplied, as a request dropped from the queue is (an ERROR with `dropped`, logged)."""
        if self.done:
            raise RuntimeError(f"{self._request.message.kind} from {self._request.origin} resolved twice")
        self.done = True
        self._service._drop(self._request, why, detail)

    def resolve(self, reply: Reply) -> None:
        if self.done:
            raise RuntimeError(f"{self._request.message.kind} from {self._request.origin} resolved twice")
        self.done = True
        request = self._request
        self._service._enqueue(_Queued(request.socket, request.routing_id, request.origin, request.message, reply))


@dataclass
class Acks:
    """What the workers answered to the pushes of a message the coordinator submitted: the bodies of the acks that
    carried one, by worker (origin), and the workers whose acks were not had (past the ack deadline, or already not
    waited for)."""
    said: dict[str, dict] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


@dataclass
class _Awaiting:
    """A processed request whose broadcasts are not acked yet."""
    request: _Queued
    answer: bytes | None                    # None for a NOTIFY
    acks: set[tuple[str, int]]              # (origin, push id)
    deadline: float
    outcome: Acks                           # what the acks said so far


class HandlerTable:
    """The registration table every coordinator has (this module's, and the in-process one of coordinator/
    in_process.py): a handler per message kind, and the hooks run when a worker goes."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[type[Message], Handler]] = {}
        self._gone_hooks: list[Callable[[str], object]] = []

    def register(self, cls: type[M], handler: Callable[[M, str], Reply | Deferred]) -> None:
        """handler(message: cls, origin) for every request or notification of cls.KIND."""
        if cls.KIND in self._handlers:
            raise ValueError(f"a handler for {cls.KIND!r} is already registered")
        self._handlers[cls.KIND] = (cls, cast(Handler, handler))    # from_body(cls.KIND) makes it a cls

    def on_worker_gone(self, hook: Callable[[str], object]) -> None:
        """hook(origin) runs when a worker exits or says goodbye."""
        self._gone_hooks.append(hook)


class CoordinatorService(HandlerTable):
    """The node's coordinator endpoints and the request pipeline behind them."""

    def __init__(self, state_dir: str, *, context: zmq.Context | None = None, ack_timeout: float = ACK_TIMEOUT):
        super().__init__()
        self.context = context or zmq.Context.instance()
        self.ack_timeout = ack_timeout
        self.epoch = os.urandom(8).hex()
        self.workers: dict[str, WorkerInfo] = {}
        self._lagging: set[str] = set()          # workers that missed an ack deadline: not waited for
        self._joined_hooks: list[Callable[[str], object]] = []
        self._dropped = RateLimitedLog(log)
        self._queue: deque[_Queued] = deque()
        self._current: _Queued | None = None     # the request whose handler runs right now
        self._awaiting: _Awaiting | None = None
        self._answered: dict[str, OrderedDict[int, bytes | None]] = {}
        self._push_id = itertools.count(int.from_bytes(os.urandom(5), "big") + 1).__next__
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count().__next__
        self._poller = zmq.Poller()
        self._readers: dict[object, Callable[[], None]] = {}
        self.worker_socket = self._router(workers_endpoint(state_dir))
        self.control_socket = self._router(control_endpoint(state_dir))
        self.watch(self.worker_socket, self._read_workers)
        self.watch(self.control_socket, self._read_control)

    def _router(self, endpoint: str) -> zmq.Socket:
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = SEND_QUEUE            # a ROUTER drops what exceeds it: pushes must not be lost
        sock.bind(endpoint)
        return sock

    # -- extension points (and register, on_worker_gone) -----------------------------------------------------
    def submit(self, message: Message, then: Callable[[Acks], object] | None = None) -> None:
        """Run the handler of `message` for the coordinator itself (the cluster bus, a timer): it takes its turn in
        the pipeline like a worker's notification, and its broadcasts reach every worker; no one is answered, but
        `then(acks)` runs once every worker has acked them (or was not waited for: the ack deadline), `acks` saying
        what the acks said and whose were missing."""
        self._enqueue(_Queued(None, b"", INTERNAL_ORIGIN, Envelope(NOTIFY, 0, message.KIND, message.to_body()),
                              then=then))

    def on_worker_joined(self, hook: Callable[[str], object]) -> None:
        """hook(origin) runs when a worker connects for the first time, before its WELCOME: what the hook sends it
        with `push_to` reaches it before the WELCOME (one ZeroMQ pipe, in order), whatever the queue holds."""
        self._joined_hooks.append(hook)

    def push_to(self, origin: str, message: Message) -> None:
        """Push `message` to that worker alone, now, outside the pipeline: its ack is not waited for (nor its
        absence logged)."""
        info = self.workers.get(origin)
        if info is not None:
            self.worker_socket.send_multipart([info.routing_id, encode(PUSH, self._push_id(), message.KIND,
                                                                       message.to_body())])

    def defer(self) -> Deferred:
        """For the handler running now: return this, call its resolve(Reply) later."""
        if self._current is None:
            raise RuntimeError("defer() is only for the handler of the request being processed")
        return Deferred(self, self._current)

    def watch(self, source, callback: Callable[[], None]) -> None:
        """callback() whenever `source` (a ZeroMQ socket or a file descriptor) is readable."""
        self._poller.register(source, zmq.POLLIN)
        self._readers[source] = callback

    def unwatch(self, source) -> None:
        self._poller.unregister(source)
        del self._readers[source]

    def call_later(self, seconds: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + seconds, self._timer_seq(), fn))

    # -- loop -----------------------------------------------------------------------------------------------
    def run(self, stopping: Callable[[], bool], tick: float = 0.5, heartbeat: Callable[[], None] = lambda: None
            ) -> None:
        """Turn the loop until `stopping()`; `heartbeat()` after every turn (the supervisor's watchdog,
        target/watchdog.py, given by the process that runs the service)."""
        while not stopping():
            self.run_once(tick)
            heartbeat()

    def run_once(self, timeout: float) -> None:
        now = time.monotonic()
        deadline = now + timeout
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if self._awaiting is not None:
            deadline = min(deadline, self._awaiting.deadline)
        for source, _ in self._poller.poll(max(0, int((deadline - now) * 1000))):
            reader = self._readers.get(source)
            if reader is not None:
                reader()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            _guarded(fn)
        awaiting = self._awaiting
        if awaiting is not None and now >= awaiting.deadline:
            late = sorted({origin for origin, _ in awaiting.acks})
            log.error("%s from %s: no ack from %s within %.1f s; replying without them (and not waiting for them "
                      "again until they answer)", awaiting.request.message.kind, awaiting.request.origin,
                      ", ".join(late), self.ack_timeout)
            self._lagging.update(late)
            awaiting.outcome.missing.extend(late)
            self._finish()

    def close(self) -> None:
        for info in self.workers.values():
            os.close(info.pidfd)
        self.workers.clear()
        self.worker_socket.close()
        self.control_socket.close()

    # -- input ----------------------------------------------------------------------------------------------
    def _receive(self, sock: zmq.Socket):
        """Every (routing id, message) waiting on a ROUTER socket; malformed ones logged and skipped."""
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            routing_id = frames[0]
            try:
                if len(frames) != 2:
                    raise SchemaError(f"expected one message frame, got {len(frames) - 1}")
                yield routing_id, decode(frames[1])
            except SchemaError as exc:
                log.warning("dropped a malformed message from %r: %s", routing_id, exc)

    def _read_workers(self) -> None:
        for routing_id, message in self._receive(self.worker_socket):
            origin = routing_id.decode("ascii", "replace")
            kind = message.type
            if origin in self._lagging:
                self._lagging.discard(origin)
                log.info("worker %s answers again", origin)
            if kind == ACK:
                self._acked(origin, message.id, message.body)
            elif kind in (REQUEST, NOTIFY):
                if kind == REQUEST and self._duplicate(origin, message.id):
                    continue
                self._queue.append(_Queued(self.worker_socket, routing_id, origin, message))
            elif kind == HELLO:
                self._hello(routing_id, origin, message.body)
            elif kind == WITHDRAW:
                self._withdraw(origin, message.id)
            elif kind == BYE:
                self._gone(origin, "said goodbye")
            else:
                log.warning("dropped a %s message from worker %s: workers may not send it", kind, origin)
        self._process()

    def _read_control(self) -> None:
        for routing_id, message in self._receive(self.control_socket):
            if message.type == REQUEST:
                self._queue.append(_Queued(self.control_socket, routing_id, CONTROL_ORIGIN, message))
            else:
                log.warning("dropped a %s message on the control socket: only requests are served", message.type)
        self._process()

    def _duplicate(self, origin: str, request_id: int) -> bool:
        """Whether this request was seen before (a worker resends its open requests after a reconnect);
        the cached answer goes out again if there is one."""
        answered = self._answered.setdefault(origin, OrderedDict())
        if request_id in answered:
            answer = answered[request_id]
            info = self.workers.get(origin)
            if answer is not None and info is not None:
                self.worker_socket.send_multipart([info.routing_id, answer])
            return True
        answered[request_id] = None
        if len(answered) > REPLY_CACHE:
            answered.popitem(last=False)
        return False

    def _withdraw(self, origin: str, request_id: int) -> None:
        """A worker takes back a request (its connection closed): dropped if still queued; too late otherwise."""
        for request in self._queue:
            if (request.origin == origin and request.message.id == request_id and request.resolved is None
                    and request.message.type == REQUEST):
                self._queue.remove(request)
                self._drop(request, "withdrawn", "its connection closed")
                return

    def _drop(self, request: _Queued, why: str, detail: str) -> None:
        message = request.message
        self._dropped.warning((message.kind, why), "dropped %s %d from %s unapplied: %s (%s)", message.kind,
                              message.id, request.origin, why, detail)
        self._answer(request, encode(ERROR, message.id, message.kind, {"error": f"{why}: {detail}", "dropped": True}))

    # -- workers coming and going ---------------------------------------------------------------------------
    def _hello(self, routing_id: bytes, origin: str, body: dict) -> None:
        pid, index = body.get("pid"), body.get("index")
        if type(pid) is not int or type(index) is not int:
            log.warning("dropped a hello from %s without integer pid and index: %r", origin, body)
            return
        if origin not in self.workers:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as exc:
                log.warning("worker %s (pid %d) is already gone: %s", origin, pid, exc)
                return
            self.workers[origin] = WorkerInfo(origin, routing_id, pid, index, pidfd)
            self.watch(pidfd, lambda: self._gone(origin, "exited"))
            log.info("worker %d (pid %d) connected as %s", index, pid, origin)
            for hook in self._joined_hooks:
                _guarded(hook, origin)
        self.worker_socket.send_multipart([routing_id, encode(WELCOME, body={"epoch": self.epoch})])

    def _gone(self, origin: str, how: str) -> None:
        info = self.workers.pop(origin, None)
        self._answered.pop(origin, None)
        self._lagging.discard(origin)
        if info is None:
            return
        self.unwatch(info.pidfd)
        os.close(info.pidfd)
        log.info("worker %d (pid %d) %s", info.index, info.pid, how)
        for hook in self._gone_hooks:
            _guarded(hook, origin)
        awaiting = self._awaiting
        if awaiting is not None:
            awaiting.acks = {ack for ack in awaiting.acks if ack[0] != origin}
            if not awaiting.acks:
                self._finish()

    def _acked(self, origin: str, push_id: int, body: dict) -> None:
        awaiting = self._awaiting
        if awaiting is None or (origin, push_id) not in awaiting.acks:
            return                          # late, duplicate, of a `push_to`, or for a coordinator restarted since
        awaiting.acks.discard((origin, push_id))
        if body:
            awaiting.outcome.said.setdefault(origin, {}).update(body)
        if not awaiting.acks:
            self._finish()

    # -- the request pipeline -------------------------------------------------------------------------------
    def _enqueue(self, request: _Queued) -> None:
        self._queue.append(request)
        if self._current is None:           # not from inside a handler: that loop picks it up
            self._process()

    def _process(self) -> None:
        """Handle queued requests until one has broadcasts to wait for (or the queue is empty)."""
        while self._awaiting is None and self._queue and self._current is None:
            request = self._queue.popleft()
            deadline = request.message.deadline
            if deadline and request.resolved is None and (late := time.monotonic() - deadline) >= 0:
                self._drop(request, "expired", f"its deadline passed {late:.1f} s ago; its worker has answered it")
                continue
            self._current = request
            try:
                handled = self._handle(request)
            finally:
                self._current = None
            if handled is None:
                continue                    # deferred
            answer, pushes = handled
            targets = [info.routing_id for origin, info in self.workers.items() if origin != request.origin]
            awaited = [origin for origin in self.workers
                       if origin != request.origin and origin not in self._lagging]
            acks: set[tuple[str, int]] = set()
            for push_id, data in pushes if targets else ():
                for routing_id in targets:
                    self.worker_socket.send_multipart([routing_id, data])
                acks.update((origin, push_id) for origin in awaited)
            outcome = Acks(missing=sorted(self._lagging & set(self.workers)) if pushes else [])
            if acks:
                self._awaiting = _Awaiting(request, answer, acks, time.monotonic() + self.ack_timeout, outcome)
            else:
                self._answer(request, answer, outcome)

    def _handle(self, request: _Queued) -> tuple[bytes | None, list[tuple[int, bytes]]] | None:
        """Run the handler: (the encoded answer, or None for a notification; the encoded pushes), or None
        when the handler deferred its reply."""
        message = request.message
        registered = self._handlers.get(message.kind)
        if registered is None and request.resolved is None:
            reason = f"no handler for {message.kind!r}"
            log.warning("%s from %s: %s", message.type, request.origin, reason)
        else:
            try:
                reply = request.resolved or self._run(registered, message, request.origin)
                if isinstance(reply, Deferred):
                    return None
                pushes = []
                for push in reply.broadcasts:
                    push_id = self._push_id()
                    pushes.append((push_id, encode(PUSH, push_id, push.KIND, push.to_body())))
                answer = (encode(REPLY, message.id, message.kind, reply.body.to_body()) if message.type == REQUEST
                          else None)
                return answer, pushes
            except SchemaError as exc:
                log.warning("%s from %s refused: %s", message.kind, request.origin, exc)
                reason = str(exc)
            except Exception as exc:
                log.exception("handler for %s from %s failed", message.kind, request.origin)
                reason = f"{message.kind} failed: {exc}"
        if message.type != REQUEST:
            return None, []
        return encode(ERROR, message.id, message.kind, {"error": reason}), []

    @staticmethod
    def _run(registered: tuple[type[Message], Handler] | None, message: Envelope, origin: str) -> Reply | Deferred:
        assert registered is not None           # a request without a handler is refused before it gets here
        cls, handler = registered
        return handler(cls.from_body(message.body), origin)

    def _answer(self, request: _Queued, answer: bytes | None, acks: Acks | None = None) -> None:
        if request.then is not None:
            _guarded(request.then, acks or Acks())
        if answer is None or request.socket is None:
            return
        request.socket.send_multipart([request.routing_id, answer])
        answered = self._answered.get(request.origin)
        if answered is not None and request.message.id in answered:
            answered[request.message.id] = answer

    def _finish(self) -> None:
        awaiting, self._awaiting = self._awaiting, None
        assert awaiting is not None             # _finish runs for the request awaited
        self._answer(awaiting.request, awaiting.answer, awaiting.outcome)
        self._process()


def _guarded(fn: Callable, *args) -> None:
    """Run a hook or timer; log (not raise) what it raises, so the loop goes on."""
    try:
        fn(*args)
    except Exception:
        log.exception("%r failed", fn)
