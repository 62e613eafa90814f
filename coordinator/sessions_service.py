"""The session registry's coordinator handlers (the worker's side is target/session_sync.py).

    SessionLogin    request, worker   a session record without node and origin (the coordinator adds them).
                    Reinstates: an older session with the same initiator, ISID and target on another worker of
                    this node is ended first — pushed SessionEnd {origin, tsih}; the worker that owns it closes
                    that connection and acks, and only then does this reply come. A replaced session on another
                    node is only removed here (its delta tells the cluster bus to end it there). Reply
                    LoginRegistered {replaced: [records]} (the requesting worker closes those that are its own).
    SessionLogout   notify, worker    {tsih}
    SessionResync   request, worker   {sessions: [records]}: the worker's full list after a (re)connect
    ListSessions    request, any      reply SessionListing {node, sessions}: what `ringtgt sessions` prints
(classes of coordinator/messages.py.) A worker that goes away takes its sessions with it.
"""
from __future__ import annotations

from .messages import (ListSessions, LoginRegistered, Nothing, SessionEnd, SessionListing, SessionLogin,
                       SessionLogout, SessionResync)
from .registry import RegistryError, SessionRegistry
from .service import CoordinatorService, Reply


def register_session_handlers(service: CoordinatorService, registry: SessionRegistry, node: str) -> None:
    def located(record: object, origin: str) -> dict:
        if not isinstance(record, dict):
            raise RegistryError(f"a session must be a map, got {record!r:.60}")
        return {**record, "node": node, "origin": origin}

    def login(message: SessionLogin, origin: str) -> Reply:
        replaced = registry.login(located(message.session, origin))
        ends = [SessionEnd(r["origin"], r["tsih"]) for r in replaced if r["node"] == node and r["origin"] != origin]
        return Reply(LoginRegistered(replaced), ends)

    def logout(message: SessionLogout, origin: str) -> Reply:
        registry.logout(node, origin, message.tsih)
        return Reply(Nothing())

    def resync(message: SessionResync, origin: str) -> Reply:
        registry.resync(node, origin, [located(s, origin) for s in message.sessions])
        return Reply(Nothing())

    def listing(message: ListSessions, origin: str) -> Reply:
        return Reply(SessionListing(node, registry.sessions()))

    service.register(SessionLogin, login)
    service.register(SessionLogout, logout)
    service.register(SessionResync, resync)
    service.register(ListSessions, listing)
    service.on_worker_gone(lambda origin: registry.drop_origin(node, origin))
