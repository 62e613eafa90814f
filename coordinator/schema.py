"""The coordinator's wire format: one msgpack array per ZeroMQ message, with an explicit schema version.

    [SCHEMA_VERSION, type, id, kind, body]            or, for a request with a deadline,
    [SCHEMA_VERSION, type, id, kind, body, deadline]

`type` is one of the message types below, `id` an unsigned integer (the request or push it belongs to; 0
when unused), `kind` names the domain operation (e.g. "session.login"; "" when unused), `body` a map with
string keys, `deadline` (a request's, optional) the CLOCK_MONOTONIC time (time.monotonic(): one clock for every
process of the host) after which the requester has answered its command without the coordinator, so the
coordinator must not apply it any more. `decode` accepts exactly that shape and raises `SchemaError` (with a
reason) for anything else — bytes that are not msgpack, another schema version, a missing field, a field of
the wrong type — so a malformed message is logged and dropped, never crashes a loop.

Message types and who sends them:
    HELLO    worker → coordinator   on every (re)connection; body {pid, index}
    WELCOME  coordinator → worker   answer to HELLO; body {epoch}: changes when the coordinator restarts
    BYE      worker → coordinator   the worker is stopping
    REQUEST  worker/control → coordinator   id, kind, body; answered by REPLY or ERROR with the same id
    REPLY    coordinator → requester
    ERROR    coordinator → requester   body {"error": reason}
    WITHDRAW worker → coordinator   id: the request is withdrawn (its connection closed); not applied if still queued
    NOTIFY   worker → coordinator   kind, body; no answer
    PUSH     coordinator → worker   id, kind, body; the worker answers ACK with the same id once applied
    ACK      worker → coordinator   id of the push; body: what the worker reports about it ({} mostly), given to the
                                    coordinator part that submitted the push (service.py's `Acks`)
"""
from __future__ import annotations

from typing import NamedTuple

import msgpack

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 16 << 20

HELLO = "hello"
WELCOME = "welcome"
BYE = "bye"
REQUEST = "request"
REPLY = "reply"
ERROR = "error"
NOTIFY = "notify"
PUSH = "push"
ACK = "ack"
WITHDRAW = "withdraw"
TYPES = frozenset((HELLO, WELCOME, BYE, REQUEST, REPLY, ERROR, NOTIFY, PUSH, ACK, WITHDRAW))

_EMPTY: dict = {}


class SchemaError(ValueError):
    """A message that does not follow the schema; the text says why."""


class Message(NamedTuple):
    type: str
    id: int = 0
    kind: str = ""
    body: dict = _EMPTY
    deadline: float = 0.0           # 0: none


def encode(type_: str, id_: int = 0, kind: str = "", body: dict = _EMPTY, deadline: float = 0.0) -> bytes:
    """The wire bytes of one message (a body that msgpack cannot encode raises TypeError at the caller)."""
    fields = [SCHEMA_VERSION, type_, id_, kind, body]
    if deadline:
        fields.append(float(deadline))
    return msgpack.packb(fields, use_bin_type=True)


def decode(data: bytes) -> Message:
    """The message in `data`, or SchemaError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:        # msgpack raises several unrelated types for bad input
        raise SchemaError(f"not a msgpack message: {exc}") from None
    if not isinstance(fields, list) or len(fields) not in (5, 6):
        raise SchemaError(f"expected an array [version, type, id, kind, body(, deadline)], got {fields!r:.80}")
    version, type_, id_, kind, body, *rest = fields
    deadline = rest[0] if rest else 0.0
    if version != SCHEMA_VERSION or type(version) is not int:
        raise SchemaError(f"schema version {version!r:.20} is not the supported version {SCHEMA_VERSION}")
    if type_ not in TYPES:
        raise SchemaError(f"unknown message type {type_!r:.40}")
    if type(id_) is not int or id_ < 0:
        raise SchemaError(f"message id must be an unsigned integer, got {id_!r:.40}")
    if not isinstance(kind, str):
        raise SchemaError(f"message kind must be a string, got {kind!r:.40}")
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise SchemaError(f"message body must be a map with string keys, got {body!r:.80}")
    if type(deadline) not in (int, float) or not 0 <= deadline < float("inf"):
        raise SchemaError(f"message deadline must be a finite time >= 0, got {deadline!r:.40}")
    return Message(type_, id_, kind, body, float(deadline))
