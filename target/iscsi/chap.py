"""CHAP authentication in the login's security stage (RFC 7143 §12.1.3, RFC 1994), sans-I/O.

One-way (the initiator proves it knows the target's secret) and mutual (the initiator also sends CHAP_I and
CHAP_C, and the target proves it knows the mutual secret). Algorithms: CHAP_A 5 MD5, 6 SHA-1, 7 SHA-256,
8 SHA3-256 (the values Linux initiators offer). The exchange is a table: each state names the keys that
complete it and the step that answers them. Responses are compared in constant time; a failure never
carries a secret.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import LOGIN_AUTH_FAILURE, LOGIN_INITIATOR_ERROR, LoginFailure

if TYPE_CHECKING:
    from .access import Credentials

ALGORITHMS = {"5": "md5", "6": "sha1", "7": "sha256", "8": "sha3_256"}
DIGEST_SIZES = {a: hashlib.new(name).digest_size for a, name in ALGORITHMS.items()}
MIN_CHALLENGE = 16                  # our challenge: at least 16 bytes, else the digest size
MAX_INITIATOR_CHALLENGE = 1024      # what we accept from an initiator (mutual CHAP)
KEYS = frozenset({"CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})

ALGORITHM = "algorithm"
RESPONSE = "response"
DONE = "done"


def decode_binary(key: str, value: str) -> bytes:
    """A binary value: `0x` hex or `0b` base64 (RFC 7143 §6.1)."""
    prefix, body = value[:2].lower(), value[2:]
    try:
        if prefix == "0x":
            return bytes.fromhex(body if len(body) % 2 == 0 else "0" + body)
        if prefix == "0b":
            return base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        pass
    raise LoginFailure(LOGIN_INITIATOR_ERROR, f"{key}: not a hex (0x) or base64 (0b) value")


def chap_response(algorithm: str, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 §4.1: H(identifier || secret || challenge)."""
    return hashlib.new(ALGORITHMS[algorithm], bytes([identifier]) + secret + challenge).digest()


class Chap:
    """One CHAP exchange: `receive(keys)` takes the CHAP_* keys of a login request, returns the answers."""

    def __init__(self, chap: Credentials, mutual_chap: Credentials | None = None,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.random = random
        self.state = ALGORITHM
        self.keys: dict[str, str] = {}
        self.algorithm = ""
        self.identifier = 0
        self.challenge = b""

    @property
    def complete(self) -> bool:
        return self.state == DONE

    def receive(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        wanted, step, next_state = STEPS.get(self.state, _COMPLETE)
        stray = keys.keys() - wanted - (OPTIONAL.get(self.state, frozenset()))
        if stray:
            raise LoginFailure(LOGIN_AUTH_FAILURE, f"CHAP: unexpected {', '.join(sorted(stray))} in state "
                                                   f"{self.state}")
        self.keys.update(keys)
        if not wanted or not all(k in self.keys for k in wanted):
            return []                   # the step's keys are not all here yet
        answers = step(self)
        self.state = next_state
        return answers

    def _choose_algorithm(self) -> list[tuple[str, str]]:
        offered = self.keys["CHAP_A"].split(",")
        algorithm = next((a for a in offered if a in ALGORITHMS), None)
        if algorithm is None:
            raise LoginFailure(LOGIN_AUTH_FAILURE, f"CHAP: no supported algorithm in CHAP_A={offered}")
        self.algorithm = algorithm
        self.identifier = self.random(1)[0]
        self.challenge = self.random(max(MIN_CHALLENGE, DIGEST_SIZES[algorithm]))
        return [("CHAP_A", algorithm), ("CHAP_I", str(self.identifier)), ("CHAP_C", "0x" + self.challenge.hex())]

    def _verify(self) -> list[tuple[str, str]]:
        keys = self.keys
        name, response = keys["CHAP_N"], decode_binary("CHAP_R", keys["CHAP_R"])
        expected = chap_response(self.algorithm, self.identifier, self.chap.secret.encode(), self.challenge)
        # Compare both name and response, always both, in constant time.
        name_ok = hmac.compare_digest(name.encode(), self.chap.username.encode())
        if not (hmac.compare_digest(response, expected) and name_ok):
            raise LoginFailure(LOGIN_AUTH_FAILURE, f"CHAP: wrong name or response from user {name!r}")
        return self._mutual()

    def _mutual(self) -> list[tuple[str, str]]:
        keys = self.keys
        asked = "CHAP_I" in keys or "CHAP_C" in keys
        if self.mutual_chap is None:
            if asked:
                raise LoginFailure(LOGIN_AUTH_FAILURE, "CHAP: mutual authentication asked for but not configured")
            return []
        if not asked:
            raise LoginFailure(LOGIN_AUTH_FAILURE, "CHAP: this target requires mutual CHAP (CHAP_I, CHAP_C)")
        if "CHAP_I" not in keys or "CHAP_C" not in keys:
            raise LoginFailure(LOGIN_AUTH_FAILURE, "CHAP: mutual authentication needs both CHAP_I and CHAP_C")
        try:
            identifier = int(keys["CHAP_I"], 0)
        except ValueError:
            identifier = -1
        if not 0 <= identifier <= 255:
            raise LoginFailure(LOGIN_INITIATOR_ERROR, "CHAP_I: not a number 0..255")
        challenge = decode_binary("CHAP_C", keys["CHAP_C"])
        if not 0 < len(challenge) <= MAX_INITIATOR_CHALLENGE:
            raise LoginFailure(LOGIN_AUTH_FAILURE, f"CHAP_C: {len(challenge)} bytes")
        if challenge == self.challenge:     # a reflection attack: our own challenge sent back (§12.1.3)
            raise LoginFailure(LOGIN_AUTH_FAILURE, "CHAP: the initiator's challenge repeats the target's")
        response = chap_response(self.algorithm, identifier, self.mutual_chap.secret.encode(), challenge)
        return [("CHAP_N", self.mutual_chap.username), ("CHAP_R", "0x" + response.hex())]


# state -> (keys that complete the state, the step that answers them, the next state)
_Step = tuple[frozenset[str], Callable[[Chap], list[tuple[str, str]]], str]
STEPS: dict[str, _Step] = {
    ALGORITHM: (frozenset({"CHAP_A"}), Chap._choose_algorithm, RESPONSE),
    RESPONSE: (frozenset({"CHAP_N", "CHAP_R"}), Chap._verify, DONE),
}
# Past the last state: every CHAP key is stray
_COMPLETE: _Step = (frozenset(), lambda chap: [], DONE)
# Keys a state also accepts without waiting for them (mutual CHAP's challenge to the target).
OPTIONAL = {RESPONSE: frozenset({"CHAP_I", "CHAP_C"})}
