"""Text key negotiation (RFC 7143 §6, §13) from one table.

Each key has a rule (declarative, boolean AND/OR, numeric min/max, list), a default, our own value and a
range. `Negotiator.answer()` turns the initiator's offers into responses and updates `SessionParams`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import LOGIN_INITIATOR_ERROR, LoginFailure

MAX_KEY_LEN = 63
MAX_VALUE_LEN = 8192

REJECT = "Reject"
CRC32C = "CRC32C"                   # the one digest there is (digests.py); the initiator's list order decides
IRRELEVANT = "Irrelevant"
NOT_UNDERSTOOD = "NotUnderstood"

# Values this target offers (what it would choose if the initiator did not limit it).
OUR_MAX_RECV_DATA_SEGMENT_LENGTH = 262144
OUR_MAX_BURST_LENGTH = 16776192
OUR_FIRST_BURST_LENGTH = 262144
OUR_MAX_OUTSTANDING_R2T = 16
# No immediate data: write data travels in Data-Out PDUs, where every PDU carries a DataSN the target can
# check. With ImmediateData=Yes a DataSN error injected by an initiator would go unseen for single-PDU writes
# (libiscsi's iSCSIDataSnInvalid).
OUR_IMMEDIATE_DATA = False
# InitialR2T is the configuration's `server.initial_r2t` (Negotiator's `offers`); the default below is Yes.
# ImmediateData likewise follows `server.immediate_data` (default No, the value below).


@dataclass
class SessionParams:
    """Operational parameters in force for a session/connection (RFC 7143 defaults until negotiated)."""
    header_digest: str = "None"
    data_digest: str = "None"
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_data_segment_length: int = 8192      # the initiator's: caps every PDU we send
    target_max_recv_data_segment_length: int = 8192  # ours: caps every PDU we accept
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    declared: dict[str, str] = field(default_factory=dict)   # declared keys: InitiatorName, TargetName, …


@dataclass(frozen=True)
class Key:
    name: str
    rule: str            # "declare", "and", "or", "min", "max", "list", "answer"
    attr: str | None     # SessionParams attribute the result lands in
    ours: Any = None     # our value (bool, int, tuple of supported list values, or fixed answer text): per rule
    low: int = 0
    high: int = 0


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("HeaderDigest", "list", "header_digest", (CRC32C, "None")),
    Key("DataDigest", "list", "data_digest", (CRC32C, "None")),
    Key("MaxConnections", "min", "max_connections", 1, 1, 65535),
    Key("InitialR2T", "or", "initial_r2t", True),
    Key("ImmediateData", "and", "immediate_data", OUR_IMMEDIATE_DATA),
    Key("MaxRecvDataSegmentLength", "declare-number", "max_recv_data_segment_length", None, 512, 2**24 - 1),
    Key("MaxBurstLength", "min", "max_burst_length", OUR_MAX_BURST_LENGTH, 512, 2**24 - 1),
    Key("FirstBurstLength", "min", "first_burst_length", OUR_FIRST_BURST_LENGTH, 512, 2**24 - 1),
    Key("DefaultTime2Wait", "max", "default_time2wait", 2, 0, 3600),
    Key("DefaultTime2Retain", "min", "default_time2retain", 0, 0, 3600),
    Key("MaxOutstandingR2T", "min", "max_outstanding_r2t", OUR_MAX_OUTSTANDING_R2T, 1, 65535),
    Key("DataPDUInOrder", "or", "data_pdu_in_order", True),
    Key("DataSequenceInOrder", "or", "data_sequence_in_order", True),
    Key("ErrorRecoveryLevel", "min", "error_recovery_level", 0, 0, 2),
    Key("IFMarker", "and", None, False),
    Key("OFMarker", "and", None, False),
    Key("IFMarkInt", "answer", None, IRRELEVANT),
    Key("OFMarkInt", "answer", None, IRRELEVANT),
    Key("InitiatorName", "declare", None),
    Key("InitiatorAlias", "declare", None),
    Key("TargetName", "declare", None),
    Key("SessionType", "declare", None),
    Key("AuthMethod", "list", None, ("None",)),
    Key("TargetAlias", "answer", None, IRRELEVANT),
    Key("TargetAddress", "answer", None, IRRELEVANT),
    Key("TargetPortalGroupTag", "answer", None, IRRELEVANT),
)}

# Keys valid only while logging in (the rest may also come in Text requests of the full feature phase).
LOGIN_ONLY = frozenset(KEYS) - {"MaxRecvDataSegmentLength", "SendTargets"}


def parse_text(data: bytes) -> list[tuple[str, str]]:
    """Split a Login/Text data segment into (key, value) pairs (NUL-separated `key=value`)."""
    pairs = []
    for item in bytes(data).split(b"\0"):
        if not item:
            continue
        key, sep, value = item.partition(b"=")
        if not sep or not key or len(key) > MAX_KEY_LEN or len(value) > MAX_VALUE_LEN:
            raise LoginFailure(LOGIN_INITIATOR_ERROR, f"malformed text key {item[:80]!r}")
        try:
            pairs.append((key.decode("utf-8"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise LoginFailure(LOGIN_INITIATOR_ERROR, f"text key is not UTF-8: {item[:80]!r}") from None
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def _number(value: str, key: Key) -> int | None:
    try:
        number = int(value, 0)
    except ValueError:
        return None
    return number if key.low <= number <= key.high else None


def _boolean(value: str) -> bool | None:
    return {"Yes": True, "No": False}.get(value)


class Negotiator:
    """Answers offered keys for one login (or text exchange), updating `params` as it goes."""

    def __init__(self, params: SessionParams, offers: Mapping[str, object] | None = None) -> None:
        self.params = params
        self.offers = offers or {}          # key name -> our value, overriding the table's (from the config)
        self.seen: set[str] = set()

    def answer(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        responses = []
        for name, value in pairs:
            key = KEYS.get(name)
            if key is None:
                if name != "SendTargets":
                    responses.append((name, NOT_UNDERSTOOD))
                continue
            self.seen.add(name)
            reply = self.negotiate(key, value)
            if reply is not None:
                responses.append((name, reply))
        return responses

    def negotiate(self, key: Key, value: str) -> str | None:
        """The answer to one offered key (None: nothing to answer), updating `params`."""
        params = self.params
        rule = key.rule
        if rule == "declare":
            params.declared[key.name] = value
            return None
        if rule == "answer":
            answer: str = key.ours
            return answer
        if rule == "declare-number":
            number = _number(value, key)
            if number is None:
                return REJECT
            assert key.attr is not None         # every number key lands in SessionParams (the table above)
            setattr(params, key.attr, number)
            return None
        if rule == "list":
            chosen = next((v for v in value.split(",") if v in key.ours), None)
            if chosen is None:
                return REJECT
            if key.attr:
                setattr(params, key.attr, chosen)
            return chosen
        if rule in ("and", "or"):
            offered = _boolean(value)
            if offered is None:
                return REJECT
            ours = self.offers.get(key.name, key.ours)
            result = offered and ours if rule == "and" else offered or ours
            if key.attr:
                setattr(params, key.attr, result)
            return "Yes" if result else "No"
        number = _number(value, key)
        if number is None:
            return REJECT
        result = min(number, key.ours) if rule == "min" else max(number, key.ours)
        assert key.attr is not None
        setattr(params, key.attr, result)
        return str(result)

    def finish(self) -> None:
        """Settle cross-key constraints once the exchange is over."""
        params = self.params
        params.first_burst_length = min(params.first_burst_length, params.max_burst_length)
