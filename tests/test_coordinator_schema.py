"""coordinator.schema: round trips, and every malformed message rejected with a SchemaError naming why."""
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.schema import (PUSH, REQUEST, SCHEMA_VERSION, TYPES, Message, SchemaError, decode, encode)


def test_round_trip():
    body = {"initiator": "iqn.x", "isid": 0x23D000000001, "nested": {"list": [1, "a", None, b"\x00"]}}
    assert decode(encode(REQUEST, 7, "session.login", body)) == Message(REQUEST, 7, "session.login", body)
    assert decode(encode(PUSH)) == Message(PUSH, 0, "", {})
    assert decode(encode(REQUEST, 8, "pr.request", body, 1234.5)) == Message(REQUEST, 8, "pr.request", body, 1234.5)


def packed(*fields) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


@pytest.mark.parametrize("data, reason", [
    (b"\xc1", "not a msgpack message"),
    (b"", "not a msgpack message"),
    (encode(REQUEST, 1, "k", {"a": 1})[:-1], "not a msgpack message"),
    (encode(REQUEST) + b"\x00", "not a msgpack message"),
    (packed({"v": 1}), "expected an array [version"),
    (packed(SCHEMA_VERSION, REQUEST, 1, "k"), "expected an array [version"),
    (packed(2, REQUEST, 1, "k", {}), "schema version 2 is not the supported version 1"),
    (packed(True, REQUEST, 1, "k", {}), "schema version True"),
    (packed("1", REQUEST, 1, "k", {}), "schema version '1'"),
    (packed(SCHEMA_VERSION, "shout", 1, "k", {}), "unknown message type 'shout'"),
    (packed(SCHEMA_VERSION, REQUEST, -1, "k", {}), "message id must be an unsigned integer"),
    (packed(SCHEMA_VERSION, REQUEST, "1", "k", {}), "message id must be an unsigned integer"),
    (packed(SCHEMA_VERSION, REQUEST, 1, 5, {}), "message kind must be a string"),
    (packed(SCHEMA_VERSION, REQUEST, 1, "k", []), "message body must be a map with string keys"),
    (packed(SCHEMA_VERSION, REQUEST, 1, "k", {b"raw": 1}), "message body must be a map with string keys"),
    (packed(SCHEMA_VERSION, REQUEST, 1, "k", {}, "soon"), "message deadline must be a finite time"),
    (packed(SCHEMA_VERSION, REQUEST, 1, "k", {}, -1.0), "message deadline must be a finite time"),
    (packed(SCHEMA_VERSION, REQUEST, 1, "k", {}, 1.0, 2), "expected an array [version"),
    (msgpack.packb([SCHEMA_VERSION, REQUEST, 1, "k", {1: 2}], strict_types=False), "not a msgpack message"),
])
def test_malformed_messages_are_rejected_with_a_reason(data, reason):
    with pytest.raises(SchemaError, match=reason.replace("(", r"\(").replace("[", r"\[")):
        decode(data)


def test_oversized_message_rejected_before_parsing():
    with pytest.raises(SchemaError, match="exceeds"):
        decode(b"\x00" * ((16 << 20) + 1))


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_schema_error(data):
    try:
        message = decode(data)
    except SchemaError:
        return
    assert message.type in TYPES and isinstance(message.body, dict)
