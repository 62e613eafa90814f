"""A worker's half of the session registry (the coordinator's half: coordinator/sessions_service.py).

Every normal session is reported at login (SessionLogin) and at its end (SessionLogout); after each (re)connection
to a coordinator the worker's whole list is sent again (SessionResync). The final Login Response of a new session is
held (Connection.hold_output) until the coordinator answers the login: by then an older session with the same
initiator name + ISID + target on another worker has been closed (RFC 7143 §6.3.5 reinstatement across workers). If
the coordinator does not answer within LOGIN_WAIT seconds (it is restarting or stopped, say) the login proceeds
anyway, with a warning: availability first; and while the coordinator is known not to answer (coordinator/client.py
`responsive`) later logins proceed at once, not LOGIN_WAIT seconds each. Either way the session is registered when
the coordinator catches up (the request stays queued: a login is a report, not a command, and its answer closes the
sessions it replaced then). Discovery sessions are not registered.
"""
from __future__ import annotations

import logging
import os
import time

from coordinator.lograte import RateLimitedLog
from coordinator.messages import Failure, LoginRegistered, SessionEnd, SessionLogin, SessionLogout, SessionResync

log = logging.getLogger(f"ringtgt.{__name__}")
unanswered = RateLimitedLog(log)

LOGIN_WAIT = 5.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SessionSync:
    """Reports a worker's sessions to the coordinator and ends those the coordinator says were reinstated."""

    def __init__(self, worker):
        self.worker = worker
        self.coordinator = worker.coordinator
        self.records: dict = {}             # Connection → its session record, while logged in
        self._holding: set = set()          # Connections whose output waits for the coordinator's answer to the login
        self.coordinator.subscribe(SessionEnd, self._end)
        self.coordinator.on_connect(self._resync)

    def started(self, conn) -> None:
        """A login completed (its final response is the connection's last queued output)."""
        if conn.target is None:
            return
        record = self.records[conn] = {
            "initiator": conn.initiator_name, "isid": conn.session_key[1], "tsih": conn.tsih,
            "target": conn.session_key[2], "portal": _address(*conn.local_address),
            "client": conn.peer_address[0], "client_port": conn.peer_address[1],
            "worker": self.worker.index, "pid": os.getpid(), "login_time": time.time(),
        }
        if self.coordinator.responsive:
            self._holding.add(conn)
            conn.hold_output()
        else:
            unanswered.warning("login", "the coordinator does not answer: login of %s proceeds at once (registered "
                               "when it catches up)", conn.initiator_name)

        def registered(reply: LoginRegistered) -> None:
            self._registered(conn, reply)

        def failed(failure: Failure) -> None:       # logged by the client; the login proceeds without it
            if failure.expired:
                unanswered.warning("login", "login of %s proceeds without it", conn.initiator_name)
            self._release(conn)

        self.coordinator.request(SessionLogin(record), registered, failed, late=registered, timeout=LOGIN_WAIT)

    def ended(self, conn) -> None:
        """The connection is gone."""
        self._holding.discard(conn)
        if self.records.pop(conn, None) is not None:
            self.coordinator.notify(SessionLogout(conn.tsih))

    def _registered(self, conn, reply: LoginRegistered) -> None:
        """The coordinator's answer (also a late one, after the login proceeded)."""
        for old in reply.replaced:
            if old.get("origin") == self.coordinator.origin:
                self._close(old.get("tsih"))
        self._release(conn)

    def _release(self, conn) -> None:
        if conn in self._holding:
            self._holding.discard(conn)
            conn.release_output()

    def _end(self, end: SessionEnd, ack) -> None:
        """If the session is ours, close its connection (no further command runs)."""
        if end.origin == self.coordinator.origin:
            self._close(end.tsih)
        ack()

    def _close(self, tsih) -> None:
        for conn in self.records:
            if conn.tsih == tsih and not conn.closing:
                log.info("session reinstatement: closing the old connection of %s (TSIH %d)",
                         conn.initiator_name, tsih)
                conn.close()

    def _resync(self) -> None:
        self.coordinator.request(SessionResync(list(self.records.values())), _nothing, _nothing)


def _nothing(reply_or_failure) -> None:
    """A resync needs no answer; a failure is logged by the client."""
