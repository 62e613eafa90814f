"""Real processes around the coordinator plumbing, for tests/test_coordinator_service.py.

    python coord_peer.py coordinator STATE_DIR [ACK_TIMEOUT]
        a CoordinatorService with test handlers: "echo" answers {"body", "origin"}; "set" broadcasts
        ("apply", body) and answers {"ok": True}; "fail" raises; "wait" defers its reply until a "wake",
        whose reply says how many it woke; the woken get {"woken": True} and broadcast ("apply", "woken").
        Runs until SIGTERM.
    python coord_peer.py worker STATE_DIR INDEX
        a Reactor on a real ring with a CoordinatorClient. Reads commands from stdin (watched with the same
        io_uring poll op), one per line, and prints events as JSON lines on stdout:
            request KIND JSON    → {"event": "reply", "kind", "body"}
            command OWNER TIMEOUT KIND JSON   a command's request (owner, deadline) → "reply" as above, and
                                 {"event": "late", "kind", "body"} for a reply after it gave up
            withdraw OWNER       → client.withdraw(OWNER)
            hold                 → from now on, "apply" pushes are not acked (until "release"); {"event": "holding"}
            release              → ack every held push
        On every push: {"event": "push", "kind", "body"} (printed before the ack). On every connection to a
        coordinator: {"event": "connected", "epoch"}.
"""
import json
import logging
import os
import select
import signal
import sys

from coordinator.client import CoordinatorClient
from coordinator.messages import Message, message
from coordinator.service import CoordinatorService, Reply
from ioring import Ring
from target.reactor import Reactor


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


@message("echoed")
class Echoed(Message):
    body: dict
    origin: str


@message("echo", Echoed)
class Echo(Message):
    data: dict


@message("done")
class Done(Message):
    ok: bool


@message("woken")
class Woken(Message):
    woken: bool


@message("woke")
class Woke(Message):
    woke: int


@message("set", Done)
class Set(Message):
    value: object


@message("apply")
class Apply(Message):
    value: object


@message("fail", Done)
class Fail(Message):
    pass


@message("wait", Woken)
class Wait(Message):
    pass


@message("wake", Woke)
class Wake(Message):
    pass


@message("nosuchkind", Done)
class NoSuchKind(Message):
    pass


REQUESTS = {cls.KIND: cls for cls in (Echo, Set, Fail, Wait, Wake, NoSuchKind)}


def request_of(kind: str, body: dict) -> Message:
    """The test's JSON command as a message: echo carries the whole JSON, the others their fields."""
    return Echo(body) if kind == "echo" else REQUESTS[kind].from_body(body)


def run_coordinator(state_dir: str, ack_timeout: float) -> None:
    service = CoordinatorService(state_dir, ack_timeout=ack_timeout)
    service.register(Echo, lambda echo, origin: Reply(Echoed(echo.data, origin)))
    service.register(Set, lambda set_, origin: Reply(Done(ok=True), [Apply(set_.value)]))

    def fail(body, origin):
        raise RuntimeError("asked to fail")

    waiting = []

    def wake(body, origin):
        for deferred in waiting:
            deferred.resolve(Reply(Woken(True), [Apply("woken")]))
        woke, waiting[:] = len(waiting), []
        return Reply(Woke(woke))

    service.register(Fail, fail)
    service.register(Wait, lambda body, origin: waiting.append(service.defer()) or waiting[-1])
    service.register(Wake, wake)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    emit(event="listening", epoch=service.epoch)
    service.run(lambda: bool(stopping), tick=0.1)
    service.close()


def answers(kind: str):
    """The reply and failure callbacks of a request: each emits an event."""
    return (lambda reply: emit(event="reply", kind=kind, body=reply.to_body()),
            lambda failure: emit(event="failure", kind=kind, reason=failure.reason, expired=failure.expired))


def run_worker(state_dir: str, index: int) -> None:
    reactor = Reactor(Ring(64))
    client = CoordinatorClient(reactor, state_dir, index)
    held = []
    holding = []

    def on_apply(applied, ack):
        emit(event="push", kind="apply", body=applied.to_body())
        if holding:
            held.append(ack)
        else:
            ack()

    client.subscribe(Apply, on_apply)
    client.on_connect(lambda: emit(event="connected", epoch=client.epoch))
    pending = b""

    def on_stdin(res: int) -> None:
        nonlocal pending
        data = os.read(0, 65536)
        if not data:
            raise SystemExit(0)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            command, _, rest = line.decode().partition(" ")
            if command == "request":
                kind, _, body = rest.partition(" ")
                client.request(request_of(kind, json.loads(body or "{}")), *answers(kind))
            elif command == "command":
                owner, timeout, kind, body = rest.split(" ", 3)
                client.request(request_of(kind, json.loads(body)), *answers(kind), owner=owner,
                               timeout=float(timeout),
                               late=lambda reply, kind=kind: emit(event="late", kind=kind, body=reply.to_body()))
            elif command == "withdraw":
                client.withdraw(rest)
            elif command == "hold":
                holding.append(True)
                emit(event="holding")
            elif command == "release":
                holding.clear()
                while held:
                    held.pop(0)()
        reactor.ring.prep_poll_add(0, select.POLLIN, reactor.token(on_stdin))

    reactor.ring.prep_poll_add(0, select.POLLIN, reactor.token(on_stdin))
    client.start()
    emit(event="started", origin=client.origin)
    while True:
        reactor.run_once(0.5)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    role, state_dir = sys.argv[1], sys.argv[2]
    if role == "coordinator":
        run_coordinator(state_dir, float(sys.argv[3]) if len(sys.argv) > 3 else 60.0)
    else:
        run_worker(state_dir, int(sys.argv[3]))
