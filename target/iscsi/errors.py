"""Errors of the sans-I/O iSCSI layer: what the peer did wrong, and the answer it gets."""
from __future__ import annotations


class ProtocolError(Exception):
    """The initiator broke the protocol so badly that the connection must close."""


class LoginFailure(Exception):
    """A login that ends with a non-zero status class/detail (RFC 7143 §11.13.5)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status  # (class << 8) | detail


# Login status codes (class << 8 | detail)
LOGIN_SUCCESS = 0x0000
LOGIN_INITIATOR_ERROR = 0x0200
LOGIN_AUTH_FAILURE = 0x0201
LOGIN_AUTHORIZATION_FAILURE = 0x0202
LOGIN_NOT_FOUND = 0x0203
LOGIN_UNSUPPORTED_VERSION = 0x0205
LOGIN_TOO_MANY_CONNECTIONS = 0x0206
LOGIN_MISSING_PARAMETER = 0x0207
LOGIN_SESSION_TYPE_UNSUPPORTED = 0x0209
LOGIN_SESSION_DOES_NOT_EXIST = 0x020A
LOGIN_INVALID_REQUEST = 0x020B
LOGIN_TARGET_ERROR = 0x0300
LOGIN_OUT_OF_RESOURCES = 0x0302
