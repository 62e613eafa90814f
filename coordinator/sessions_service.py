"""The session registry's coordinator handlers (the worker's side is target/session_sync.py).

    session.login   request, worker   body: a session record without node and origin (the coordinator adds them).
                    Reinstates: an older session with the same initiator, ISID and target on another worker of
                    this node is ended first — broadcast "session.end" {origin, tsih}; the worker that owns it
                    closes that connection and acks, and only then does this reply come. A replaced session on
                    another node is only removed here (its delta tells the cluster bus to end it there).
                    Reply {"replaced": [records]} (the requesting worker closes those that are its own).
    session.logout  notify, worker   body {"tsih"}
    session.resync  request, worker  body {"sessions": [records]}: the worker's full list after a (re)connect
    sessions.list   request, any     reply {"node", "sessions": [records]}: what `ringtgt sessions` prints
A worker that goes away takes its sessions with it.
"""
from __future__ import annotations

from .registry import RegistryError, SessionRegistry
from .service import CoordinatorService, Reply

SESSION_END = "session.end"


def register_session_handlers(service: CoordinatorService, registry: SessionRegistry, node: str) -> None:
    def located(body: dict, origin: str) -> dict:
        if not isinstance(body, dict):
            raise RegistryError(f"a session must be a map, got {body!r:.60}")
        return {**body, "node": node, "origin": origin}

    def login(body: dict, origin: str) -> Reply:
        replaced = registry.login(located(body, origin))
        ends = [(SESSION_END, {"origin": r["origin"], "tsih": r["tsih"]})
                for r in replaced if r["node"] == node and r["origin"] != origin]
        return Reply({"replaced": replaced}, ends)

    def logout(body: dict, origin: str) -> Reply:
        tsih = body.get("tsih")
        if type(tsih) is not int:
            raise RegistryError(f"session.logout needs an integer tsih, got {tsih!r:.40}")
        registry.logout(node, origin, tsih)
        return Reply({})

    def resync(body: dict, origin: str) -> Reply:
        sessions = body.get("sessions")
        if not isinstance(sessions, list):
            raise RegistryError("session.resync needs a list of sessions")
        registry.resync(node, origin, [located(s, origin) for s in sessions])
        return Reply({})

    def listing(body: dict, origin: str) -> Reply:
        return Reply({"node": node, "sessions": registry.sessions()})

    service.register("session.login", login)
    service.register("session.logout", logout)
    service.register("session.resync", resync)
    service.register("sessions.list", listing)
    service.on_worker_gone(lambda origin: registry.drop_origin(node, origin))
