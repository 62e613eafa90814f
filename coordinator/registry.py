"""The session registry, pure code: every logged-in iSCSI session of the cluster (one connection each).

A session is a plain dict (it travels in msgpack as is) with the fields of `FIELDS`:
    initiator, isid, tsih, target      the session (ISID and TSIH as integers)
    portal, client, client_port        the connection: "host:port" it reached, the initiator's address and port
    node, origin, worker, pid          where it lives: node name, worker origin ("w<index>.<pid>"), index, pid
    login_time                         seconds since the epoch
It is identified by (node, origin, tsih); its reinstatement key is (initiator, isid, target) — RFC 7143
§6.3.5: a login with the key of a live session replaces it, wherever it lives.

Replication (for the cluster bus):
    registry.on_change(hook)        hook(delta) after every change, delta = {"op": "login"|"logout",
                                     "session": record}; a peer applies it with registry.apply(delta)
    registry.snapshot(node=None)    {"version": 1, "<node>/<origin>/<tsih>": record, …}, all nodes or one
                                     node's: one top-level key per session, so a key-by-key diff of two
                                     snapshots is a compact delta
    registry.restore(snap, node)    replace every session of `node` (every session when None) with the
                                     snapshot's; emits no deltas
apply() and restore() are how a peer's state arrives: they neither reinstate nor emit deltas.
"""
from __future__ import annotations

from collections.abc import Callable

SNAPSHOT_VERSION = 1
FIELDS = ("initiator", "isid", "tsih", "target", "portal", "client", "client_port", "node", "origin", "worker",
          "pid", "login_time")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "initiator": str, "isid": int, "tsih": int, "target": str, "portal": str, "client": str,
    "client_port": int, "node": str, "origin": str, "worker": int, "pid": int, "login_time": (int, float)}

Delta = dict
SessionId = tuple[str, str, int]


class RegistryError(ValueError):
    """A session record or snapshot that does not have the registry's shape."""


def session_id(record: dict) -> SessionId:
    return record["node"], record["origin"], record["tsih"]


def reinstatement_key(record: dict) -> tuple[str, int, str]:
    return record["initiator"], record["isid"], record["target"]


def checked(record: object) -> dict:
    """`record` with exactly FIELDS of the right types, or RegistryError naming the first bad field."""
    if not isinstance(record, dict):
        raise RegistryError(f"a session must be a map, got {record!r:.60}")
    for name in FIELDS:
        value = record.get(name)
        if not isinstance(value, _TYPES[name]) or isinstance(value, bool):
            raise RegistryError(f"session field {name!r} missing or of the wrong type: {value!r:.60}")
    extra = set(record) - set(FIELDS)
    if extra:
        raise RegistryError(f"unknown session field(s): {', '.join(sorted(extra))}")
    return {name: record[name] for name in FIELDS}


class SessionRegistry:
    """Sessions by id, with an index by reinstatement key."""

    def __init__(self):
        self._sessions: dict[SessionId, dict] = {}
        self._by_key: dict[tuple[str, int, str], SessionId] = {}
        self._hooks: list[Callable[[Delta], None]] = []

    def on_change(self, hook: Callable[[Delta], None]) -> None:
        self._hooks.append(hook)

    # -- what workers report --------------------------------------------------------------------------------
    def login(self, record: dict) -> list[dict]:
        """Record a new session; returns the sessions it reinstates (removed here; their owners must end them)."""
        record = checked(record)
        old_id = self._by_key.get(reinstatement_key(record))
        replaced = [self._remove(old_id)] if old_id is not None and old_id != session_id(record) else []
        self._add(record)
        return replaced

    def logout(self, node: str, origin: str, tsih: int) -> dict | None:
        """Forget a session that ended; the record, or None if it was not (or no longer) registered."""
        sid = (node, origin, tsih)
        return self._remove(sid) if sid in self._sessions else None

    def drop_origin(self, node: str, origin: str) -> list[dict]:
        """Forget every session of a worker that is gone."""
        return [self._remove(sid) for sid in [s for s in self._sessions if s[:2] == (node, origin)]]

    def resync(self, node: str, origin: str, records: list) -> None:
        """A (re)connected worker's full list of sessions replaces what is recorded for it."""
        fresh = [checked(r) for r in records]
        for record in fresh:
            if (record["node"], record["origin"]) != (node, origin):
                raise RegistryError(f"session of {record['node']}/{record['origin']} in a resync of {node}/{origin}")
        self.drop_origin(node, origin)
        for record in fresh:
            self.login(record)

    # -- reading --------------------------------------------------------------------------------------------
    def sessions(self) -> list[dict]:
        """Every session, ordered by node, worker, login time."""
        return sorted(self._sessions.values(), key=lambda r: (r["node"], r["worker"], r["login_time"], r["tsih"]))

    def find(self, key: tuple[str, int, str]) -> dict | None:
        """The session with this reinstatement key (initiator, ISID, target), if any."""
        sid = self._by_key.get(key)
        return None if sid is None else self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)

    # -- replication ----------------------------------------------------------------------------------------
    def snapshot(self, node: str | None = None) -> dict:
        state: dict = {"version": SNAPSHOT_VERSION}
        for record in self.sessions():
            if node is None or record["node"] == node:
                state["/".join(map(str, session_id(record)))] = dict(record)
        return state

    def restore(self, snapshot: dict, node: str | None = None) -> None:
        if not isinstance(snapshot, dict) or snapshot.get("version") != SNAPSHOT_VERSION:
            raise RegistryError(f"not a version {SNAPSHOT_VERSION} registry snapshot")
        fresh = [checked(r) for key, r in snapshot.items() if key != "version"]
        if node is not None and any(r["node"] != node for r in fresh):
            raise RegistryError(f"a snapshot restored for node {node!r} holds another node's sessions")
        for sid in [s for s in self._sessions if node is None or s[0] == node]:
            self._remove(sid, emit=False)
        for record in fresh:
            self._add(record, emit=False)

    def apply(self, delta: Delta) -> None:
        """A peer's delta, as emitted by its registry's on_change hooks."""
        op, record = delta.get("op"), checked(delta.get("session"))
        if op == "login":
            old_id = self._by_key.get(reinstatement_key(record))
            if old_id is not None:
                self._remove(old_id, emit=False)
            self._add(record, emit=False)
        elif op == "logout":
            if session_id(record) in self._sessions:
                self._remove(session_id(record), emit=False)
        else:
            raise RegistryError(f"unknown registry delta op {op!r:.30}")

    # -- internals ------------------------------------------------------------------------------------------
    def _add(self, record: dict, emit: bool = True) -> None:
        sid = session_id(record)
        previous = self._sessions.get(sid)
        if previous is not None:
            self._by_key.pop(reinstatement_key(previous), None)
        self._sessions[sid] = record
        self._by_key[reinstatement_key(record)] = sid
        if emit:
            self._emit({"op": "login", "session": record})

    def _remove(self, sid: SessionId, emit: bool = True) -> dict:
        record = self._sessions.pop(sid)
        key = reinstatement_key(record)
        if self._by_key.get(key) == sid:
            del self._by_key[key]
        if emit:
            self._emit({"op": "logout", "session": record})
        return record

    def _emit(self, delta: Delta) -> None:
        for hook in self._hooks:
            hook(delta)
