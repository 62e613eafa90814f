"""The coordinator's messages, one frozen class per kind: its fields are the body's keys. The wire stays
coordinator/schema.py's msgpack array [version, type, id, kind, body]; `kind` is the class's KIND, `body`
`to_body()`, and the receiver rebuilds the object with `from_body()`, which checks every field's presence and
type and raises SchemaError naming the kind and the field (the service answers it as an ERROR, the client
hands it to the request's failure callback), so a handler only ever sees a well-formed message.

A request class names its reply's class (REPLY); a push or a notification has none. Nexuses are I_T nexus names
("iqn,i,0xISID,target,t,0xTPGT"), `target` an iSCSI target name, `lun` a LUN; conflict views and outcomes travel
as the dicts of ConflictView.to_dict / Outcome.to_dict. Who sends what, and what the authority does with it:
coordinator/sessions_service.py, coordinator/unit_service.py; the worker's halves: target/session_sync.py,
target/unit_sync.py.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .schema import SchemaError

M = TypeVar("M", bound="Message")


class Message:
    """Base of every message class (each a frozen dataclass)."""

    KIND: ClassVar[str]
    REPLY: ClassVar[type[Message] | None] = None
    _FIELDS: ClassVar[tuple[tuple[str, Any, bool], ...]]       # (name, type, required), filled in by `message`

    def to_body(self) -> dict:
        return {name: _plain(getattr(self, name)) for name, _, _ in self._FIELDS}

    @classmethod
    def from_body(cls: type[M], body: dict) -> M:
        """The message `body` carries, or SchemaError."""
        known = {name for name, _, _ in cls._FIELDS}
        extra = set(body) - known
        if extra:
            raise SchemaError(f"{cls.KIND}: unknown field(s) {', '.join(sorted(extra))}")
        values = {}
        for name, hint, required in cls._FIELDS:
            if name not in body:
                if required:
                    raise SchemaError(f"{cls.KIND}: field {name!r} missing")
                continue
            values[name] = _typed(cls.KIND, name, body[name], hint)
        return cls(**values)


T = TypeVar("T")


@typing.dataclass_transform(frozen_default=True)
def message(kind: str, reply: type[Message] | None = None) -> typing.Callable[[type[T]], type[T]]:
    """Class decorator: a frozen dataclass message of `kind` (replying `reply`, for a request)."""
    def make(cls: Any) -> Any:
        cls = dataclass(frozen=True)(cls)
        hints = typing.get_type_hints(cls)
        cls.KIND = kind
        cls.REPLY = reply
        cls._FIELDS = tuple((f.name, hints[f.name], f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING) for f in dataclasses.fields(cls))
        return cls
    return make



def reply_class(request: Message) -> type[Message]:
    """The class of the reply to `request`; SchemaError for a message that is not a request."""
    if request.REPLY is None:
        raise SchemaError(f"{request.KIND} is not a request: it has no reply")
    return request.REPLY

def _plain(value):
    """A field's value as it travels: nested messages as their bodies."""
    if isinstance(value, Message):
        return value.to_body()
    if isinstance(value, list) and value and isinstance(value[0], Message):
        return [item.to_body() for item in value]
    return value


def _typed(kind: str, name: str, value, hint):
    """A received field's value checked against its type, nested messages rebuilt (their own fields checked)."""
    args = typing.get_args(hint)
    nested = next((arg for arg in (hint, *args) if isinstance(arg, type) and issubclass(arg, Message)), None)
    if nested is not None and isinstance(value, dict):
        return nested.from_body(value)
    if typing.get_origin(hint) is list and args and issubclass(args[0], Message) and isinstance(value, list):
        return [_typed(kind, name, item, args[0]) for item in value]
    if (nested is not None and not (value is None and type(None) in args)) or not _fits(value, hint):
        raise SchemaError(f"{kind}: field {name!r} must be {_name(hint)}, got {value!r:.60}")
    return value


def _fits(value, hint) -> bool:
    if hint is Any or hint is object:
        return True
    if isinstance(hint, type) and issubclass(hint, Message):
        return False                        # a nested message travels as a map: rebuilt by _typed
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        hint = origin
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    return isinstance(value, hint)


def _name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint)


@message("nothing")
class Nothing(Message):
    """An empty body: the reply of requests whose answer is only "done"."""


@dataclass(frozen=True)
class Failure:
    """Why a request got no reply: `expired` — no answer within the client's deadline (the caller answers
    without the coordinator: BUSY, a rejected task management function, a login that proceeds); otherwise the
    coordinator refused or failed it (unknown kind, malformed, handler error, dropped unapplied), or its reply
    was malformed. The client logs each failure once; callbacks only decide what it means for their caller."""
    reason: str
    expired: bool = False


# -- sessions (coordinator/sessions_service.py, target/session_sync.py) ------------------------------------------
@message("session.login.reply")
class LoginRegistered(Message):
    replaced: list             # session records this login reinstated (the requester closes its own)


@message("session.login", LoginRegistered)
class SessionLogin(Message):
    session: dict               # a session record without node and origin (coordinator/registry.py)


@message("session.logout")
class SessionLogout(Message):
    tsih: int


@message("session.resync", Nothing)
class SessionResync(Message):
    sessions: list              # the worker's every session record, after a (re)connection


@message("session.end")
class SessionEnd(Message):
    """Push: the session (origin, tsih) was reinstated elsewhere; its worker closes its connection."""
    origin: str
    tsih: int


@message("sessions.list.reply")
class SessionListing(Message):
    node: str
    sessions: list


@message("sessions.list", SessionListing)
class ListSessions(Message):
    pass


# -- unit state: reservations, unit attentions, mode, medium (coordinator/unit_service.py, target/unit_sync.py) --
@message("pr.change")
class ReservationChange(Message):
    """A unit's new conflict view, the unit attentions the change establishes and the nexuses whose tasks it
    aborts (PREEMPT AND ABORT): pushed, and carried by answers."""
    target: str
    lun: int
    view: dict
    attentions: list = field(default_factory=list)      # [[nexus, asc/ascq]…]
    aborts: list = field(default_factory=list)          # [nexus…]


@message("pr.request.reply")
class ReservationAnswer(Message):
    outcome: dict               # Outcome.to_dict()
    change: ReservationChange | None        # when the state changed


@message("pr.request", ReservationAnswer)
class ReservationRequest(Message):
    """PERSISTENT RESERVE IN/OUT or SPC-2 RESERVE/RELEASE on a unit."""
    target: str
    lun: int
    kind: str                   # out | in | reserve | release
    nexus: str
    cdb: bytes
    parameters: bytes


@message("unit.reset")
class UnitReset(Message):
    """LUN reset or target warm/cold reset: the request, and (with `views`, each unit's after) its reply and push.
    SPC-2 reservations and medium preventions go; every nexus of the units gets the unit attention `asc`."""
    target: str
    luns: list
    nexus: str
    asc: int
    cold: bool
    views: list = field(default_factory=list)           # [[lun, view]…]


UnitReset.REPLY = UnitReset


@message("unit.clear_task_set")
class ClearTaskSet(Message):
    """CLEAR TASK SET: the request, its reply and its push."""
    target: str
    lun: int
    nexus: str


ClearTaskSet.REPLY = ClearTaskSet


@message("ua.attach.reply")
class NexusAttentions(Message):
    attentions: list            # [[lun, [asc…]]…]: what the nexus has pending
    views: list                 # [[lun, view]…]


@message("ua.attach", NexusAttentions)
class AttachNexus(Message):
    """A session of the nexus started on the requesting worker."""
    target: str
    nexus: str


@message("ua.consumed")
class AttentionReported(Message):
    """Notification: a worker reported (and cleared) a unit attention."""
    target: str
    lun: int
    nexus: str
    asc: int


@message("unit.nexus_lost.reply")
class NexusLostChanges(Message):
    changes: list[ReservationChange]        # each also pushed


@message("unit.nexus_lost", NexusLostChanges)
class NexusLost(Message):
    """I_T nexus loss: its SPC-2 reservation and medium preventions go."""
    target: str
    nexus: str


@message("mode.change")
class ModeChange(Message):
    """MODE SELECT changed a unit's write cache or software write protect (reply and push); every other nexus gets
    MODE PARAMETERS CHANGED."""
    target: str
    lun: int
    wce: bool
    swp: bool
    attentions: list            # [[nexus, asc]…]


@message("mode.select", ModeChange)
class ModeSelect(Message):
    target: str
    lun: int
    nexus: str
    wce: bool
    swp: bool


@message("medium.change")
class MediumChange(Message):
    """Push: a removable medium loaded or ejected, or a sanitize begun or ended (coordinator/unit_state/medium.py)."""
    target: str
    lun: int
    loaded: bool
    sanitize: int               # IDLE, SANITIZING, SANITIZE_FAILURE (coordinator/unit_state/medium.py)


@message("medium.request.reply")
class MediumAnswer(Message):
    target: str
    lun: int
    loaded: bool
    sanitize: int               # IDLE, SANITIZING, SANITIZE_FAILURE (coordinator/unit_state/medium.py)
    refused: list | None        # [sense key, asc/ascq], or None


@message("medium.request", MediumAnswer)
class MediumRequest(Message):
    """START STOP UNIT, PREVENT ALLOW, a sanitize beginning, ending or failing, EXIT FAILURE MODE."""
    target: str
    lun: int
    nexus: str                  # "" for a sanitize's end
    action: str


@message("unit.state.reply")
class UnitStates(Message):
    units: list                 # [[target, lun, view]…]
    modes: list                 # [[target, lun, wce, swp]…], the units whose mode a MODE SELECT changed
    media: list                 # [[target, lun, loaded, sanitize]…]
    sizes: list = field(default_factory=list)   # [[target, lun, bytes]…], the units `ringtgt resize` grew


@message("unit.state", UnitStates)
class FetchUnitStates(Message):
    """Every unit's state, for a worker that (re)connected."""


# -- the cluster's requests (coordinator/cluster.py) ------------------------------------------------------------
@message("cluster.takeover.reply")
class TakeoverReport(Message):
    peer: str
    peer_state: str
    sessions: int
    tickled: int
    rounds: int
    not_local: int
    fenced: list = field(default_factory=list)  # the peer's RADOS client addresses blocklisted (coordinator/fencer.py)
    fence_error: str = ""                       # why fencing failed ("": it did not, or nothing to fence)
    taken: bool = True                          # False: refused, fencing failed (nothing tickled, sessions kept)
    epochs: dict = field(default_factory=dict)  # per cluster: the OSD map epoch with the blocklist, every worker has
    behind: dict = field(default_factory=dict)  # but these (by worker: why), whose RBD LUNs are NOT READY until then


@message("cluster.takeover", TakeoverReport)
class Takeover(Message):
    """Control: fence a dead peer through Ceph (RBD LUNs), then take over its sessions; `unfenced`: even if
    fencing fails (the operator knows the peer is dead)."""
    peer: str
    unfenced: bool = False


@message("cluster.osdmap")
class OsdMapBarrier(Message):
    """Push, before a takeover tickles: every worker brings its RADOS clients to the latest OSD map, which has the
    fenced peer's blocklist (target/osdmap_sync.py), and acks once they have it, or past its deadline with
    {"behind": {cluster: epoch}} (those clusters' RBD LUNs NOT READY until they have it); `epochs`: that map's
    epoch per cluster (its ceph.conf, fencing.cluster_of); `sent`: when (CLOCK_MONOTONIC, one clock for the host's
    processes), so that a worker that gets it late counts its deadline from then (0: from its arrival); `again`:
    pushed again, to that worker alone, for a worker that connected after it (coordinator/cluster.py: its process
    started before it), before its WELCOME; `sent` the last takeover's push time."""
    epochs: dict
    sent: float = 0.0
    again: bool = False


@message("cluster.adopted", Nothing)
class StateAdopted(Message):
    """Internal: a peer's unit state was adopted; every worker gets every unit's state pushed."""


@message("unit.stored_taken", Nothing)
class StoredStateTaken(Message):
    """Internal: a unit took the state another coordinator saved in its RADOS object; every worker gets it pushed."""
    target: str
    lun: int


@message("cluster.end_sessions", Nothing)
class EndSessions(Message):
    """Internal: a peer's logins reinstated these sessions of this node ([{origin, tsih}…])."""
    sessions: list


# -- online resize (`ringtgt resize`; coordinator/unit_service.py, target/unit_sync.py) ------------------------
@message("lun.resized")
class LunResized(Message):
    """Push: the unit's new size in bytes; every nexus in `attentions` gets CAPACITY DATA HAS CHANGED."""
    target: str
    lun: int
    size: int
    attentions: list            # [[nexus, asc]…]


@message("lun.resize.reply")
class ResizeAnswer(Message):
    previous: int               # the size before, in bytes
    size: int                   # the size now
    refused: str | None         # why nothing changed (a shrink), or None


@message("lun.resize", ResizeAnswer)
class ResizeLun(Message):
    """Control: the unit grew to `size` bytes (its file was extended, its device grew); `configured` is the size
    the configuration gives it, its size unless an earlier resize grew it."""
    target: str
    lun: int
    size: int
    configured: int


# -- live reconfiguration (`ringtgt reload`, SIGHUP; coordinator/reload_service.py, target/reload.py) -------------
@message("config.changed")
class ConfigChanged(Message):
    """Push: serve this configuration (dump_config's TOML) from now on; each worker applies the difference to its
    own between two commands. The nexuses in `attentions` get the unit attentions the change established."""
    config: str
    attentions: list            # [[target, lun, nexus, asc]…]


@message("config.fetch", ConfigChanged)
class FetchConfig(Message):
    """The running configuration (replied as a ConfigChanged without attentions), for a worker that (re)connected:
    one forked just before a reload and connected just after it serves the reloaded configuration too."""


@message("config.reload.reply")
class ReloadAnswer(Message):
    changes: list               # what changed (or would have), one line each (target/config_diff.py)
    refused: str | None         # why nothing changed, or None
    config_error: bool = False  # refused because the file is not a valid configuration


@message("config.reload", ReloadAnswer)
class ReloadConfig(Message):
    """Control: apply the configuration file at `path` ("": the embedded default) to the running node."""
    path: str


# -- the node's status (coordinator/status_service.py, `ringtgt status`) -----------------------------------------
@message("node.status.reply")
class NodeStatus(Message):
    """What `ringtgt status --json` prints; the keys of each map are listed in coordinator/status_service.py."""
    node: str
    supervisor: dict            # {pid, uptime}
    coordinator: dict           # {pid, uptime, restarts}
    workers: list               # [{index, pid, cpus, uptime, restarts, connections, sessions}…], by index
    peers: list                 # [{name, state, heartbeat_age}…]; empty without [cluster]
    luns: list                  # [{target, lun, backstore, path, size, state, reason, sanitizing, ejected}…]
    sessions: int               # this node's logged-in sessions


@message("node.status", NodeStatus)
class FetchStatus(Message):
    """Control: the state of the running node."""
