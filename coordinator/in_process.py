"""A coordinator inside one process: the real handlers (UnitAuthority, …) behind the same registration table as
CoordinatorService, run synchronously, for SCSI objects built without worker processes (the unit tests). So a
test of a SCSI command runs the code production runs: the worker's half of the unit state and the authority's.

    hub = InProcessCoordinator()
    register_unit_handlers(hub, UnitAuthority(units))       # as coordinator/main.py does with the service
    worker = hub.client("w0.1")                              # what a worker holds as its CoordinatorClient
    other = hub.client("w1.2")                               # a second worker: it gets the first one's pushes

Every message goes through to_body/from_body as on the wire. A request is handled at once: its pushes reach every
other client's subscriptions, and its reply comes once they have all acked, as with the service; a handler that
raises, or a body without its class's shape, is the requester's failure. Nothing expires here, and no request
stays queued (`withdraw` has nothing to take back).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .messages import Failure, Message, reply_class
from .service import HandlerTable, Reply

log = logging.getLogger("ringtgt.coordinator")


class InProcessCoordinator(HandlerTable):
    """The registration table and the clients of one process."""

    def __init__(self) -> None:
        super().__init__()
        self.clients: list[InProcessClient] = []

    def client(self, origin: str = "w0.1") -> InProcessClient:
        client = InProcessClient(self, origin)
        self.clients.append(client)
        return client

    def gone(self, client: InProcessClient) -> None:
        """The client's worker is gone (its process died): the hooks run, as with the service's pidfds."""
        self.clients.remove(client)
        for hook in self._gone_hooks:
            hook(client.origin)

    def run(self, message: Message, origin: str) -> Reply:
        """The handler's reply to `message`, as the service gets it; what it raises is the requester's failure."""
        registered = self._handlers.get(message.KIND)
        if registered is None:
            raise LookupError(f"no handler for {message.KIND!r}")
        cls, handler = registered
        reply = handler(cls.from_body(message.to_body()), origin)
        if not isinstance(reply, Reply):
            raise TypeError(f"{message.KIND}: the in-process coordinator runs no deferred handler")
        return reply

    def broadcast(self, pushes: Sequence[Message], origin: str, then: Callable[[], None]) -> None:
        """Every push to every client but the origin's; `then()` once they have all acked."""
        stopped = [1]

        def ack() -> None:
            stopped[0] -= 1
            if not stopped[0]:
                then()

        for push in pushes:
            for client in [client for client in self.clients if client.origin != origin]:
                stopped[0] += 1
                client.pushed(push, _once(ack))
        ack()


class InProcessClient:
    """A worker's view of the in-process coordinator: CoordinatorClient's interface."""

    def __init__(self, hub: InProcessCoordinator, origin: str):
        self.hub = hub
        self.origin = origin
        self.responsive = True
        self._subscriptions: dict[str, tuple[type[Message], Callable]] = {}

    def request(self, message: Message, on_reply: Callable[[Message], None], on_failure: Callable[[Failure], None],
                *, owner: str | None = None, late: Callable[[Message], None] | None = None,
                timeout: float = 0.0) -> None:
        reply = self._run(message)
        if reply is None:
            on_failure(Failure(f"{message.KIND} failed"))
            return
        self.hub.broadcast(reply.broadcasts, self.origin,
                           lambda: on_reply(reply_class(message).from_body(reply.body.to_body())))

    def notify(self, message: Message) -> None:
        reply = self._run(message)
        if reply is not None:
            self.hub.broadcast(reply.broadcasts, self.origin, _nothing)

    def _run(self, message: Message) -> Reply | None:
        try:
            return self.hub.run(message, self.origin)
        except Exception:
            log.exception("%s from %s failed", message.KIND, self.origin)
            return None

    def subscribe(self, cls: type[Message], handler: Callable) -> None:
        if cls.KIND in self._subscriptions:
            raise ValueError(f"{cls.KIND!r} pushes already have a handler")
        self._subscriptions[cls.KIND] = (cls, handler)

    def withdraw(self, owner: str) -> None:
        """Nothing is ever queued here."""

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Connected from the start: `callback()` runs at once."""
        callback()

    def pushed(self, push: Message, ack: Callable[[], None]) -> None:
        subscription = self._subscriptions.get(push.KIND)
        if subscription is None:
            ack()
            return
        cls, handler = subscription
        handler(cls.from_body(push.to_body()), ack)


def _nothing() -> None:
    pass


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    called: list[bool] = []

    def once(body: dict | None = None) -> None:     # (an ack's body: only the service reads one)
        if not called:
            called.append(True)
            fn()
    return once
