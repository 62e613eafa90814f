"""Control clients' side of the coordinator (`ringtgt sessions` …): one blocking request on control.sock. The
request carries its deadline: a coordinator that gets to it only after the client gave up drops it unapplied."""
from __future__ import annotations

import os
import time

import zmq

from .endpoints import control_endpoint
from .messages import Message, reply_class
from .schema import ERROR, REQUEST, SchemaError, decode, encode

CONTROL_TIMEOUT = 5.0


class ControlError(Exception):
    """No coordinator answered, or it answered with an error; the text says which."""


def control_request(state_dir: str, message: Message, timeout: float = CONTROL_TIMEOUT) -> Message:
    """Send one request (coordinator/messages.py) to the node's coordinator and return its reply."""
    kind = message.KIND
    endpoint = control_endpoint(state_dir)
    if not os.path.exists(endpoint[len("ipc://"):]):
        raise ControlError(f"no coordinator socket at {endpoint}: is `ringtgt serve` running with this config?")
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(endpoint)
        sock.send(encode(REQUEST, 1, kind, message.to_body(), time.monotonic() + timeout))
        if not sock.poll(int(timeout * 1000)):
            raise ControlError(f"no answer from the coordinator at {endpoint} within {timeout:g} s")
        try:
            reply = decode(sock.recv())
            if reply.type == ERROR:
                raise ControlError(f"the coordinator refused {kind}: {reply.body.get('error')}")
            return reply_class(message).from_body(reply.body)
        except SchemaError as exc:
            raise ControlError(f"malformed answer from the coordinator: {exc}") from None

