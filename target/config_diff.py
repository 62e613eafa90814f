"""What a reload would change: the difference between two Configs, pure (no I/O).

    diff = config_diff(running, new)
    diff.refused     why it cannot apply to a running node (each message starts with the key, in `new`'s numbering
                     or, for what it removes, `running`'s); empty: it can
    diff.lines()     what it changes, one line each (`ringtgt check-config --diff`, the reload's answer and log)

A running node takes: portals added and removed; targets added and removed; LUNs added, removed, grown (`size`
larger), made readonly or writable; a target's alias, `allowed_initiators` and CHAP, and discovery CHAP (new logins
only); the number of workers (up to MAX_WORKERS: the supervisor forks or stops the difference, target/supervisor.py).
It refuses: a LUN shrunk (the data beyond the new end would go), any other key of a live LUN changed (remove the LUN
in one reload, add it back in the next), a null LUN resized, and every other `[server]` key and `[cluster]` (a
restart: state_dir, limits and timeouts are fixed for the processes' life).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .config import AuthConfig, Config, LunConfig, TargetConfig

LIVE_LUN_KEYS = ("size", "readonly")
LIVE_SERVER_KEYS = ("portals", "workers")
MAX_WORKERS = 256       # what a reload may grow `workers` to: the supervisor's watchdog has a slot for each


@dataclass(frozen=True)
class LunChange:
    """A LUN of a target kept: its new size (None: unchanged) and readonly (None: unchanged)."""
    iqn: str
    lun: int
    size: tuple[int, int] | None = None         # (before, after) in bytes
    readonly: bool | None = None


@dataclass
class ConfigDiff:
    targets_added: list[str] = field(default_factory=list)
    targets_removed: list[str] = field(default_factory=list)
    luns_added: list[tuple[str, int]] = field(default_factory=list)
    luns_removed: list[tuple[str, int]] = field(default_factory=list)
    luns_changed: list[LunChange] = field(default_factory=list)
    portals_added: list[tuple[str, int]] = field(default_factory=list)
    portals_removed: list[tuple[str, int]] = field(default_factory=list)
    access_changed: list[str] = field(default_factory=list)     # lines: alias, ACL, CHAP
    workers: tuple[int, int] | None = None                       # (before, after); None: unchanged
    refused: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.targets_added or self.targets_removed or self.luns_added or self.luns_removed
                    or self.luns_changed or self.portals_added or self.portals_removed or self.access_changed
                    or self.workers or self.refused)

    def luns_moved(self) -> set[str]:
        """The kept targets whose set of LUNs changes: their nexuses get REPORTED LUNS DATA HAS CHANGED."""
        return {iqn for iqn, _ in self.luns_added + self.luns_removed}

    def lines(self) -> list[str]:
        out = [f"~ workers {self.workers[0]} -> {self.workers[1]}"] if self.workers else []
        out += [f"+ portal {_portal(portal)}" for portal in self.portals_added]
        out += [f"- portal {_portal(portal)} (its sessions stay)" for portal in self.portals_removed]
        out += [f"+ target {iqn}" for iqn in self.targets_added]
        out += [f"- target {iqn} (its sessions end)" for iqn in self.targets_removed]
        out += [f"+ LUN {lun} of {iqn}" for iqn, lun in self.luns_added]
        out += [f"- LUN {lun} of {iqn}" for iqn, lun in self.luns_removed]
        for change in self.luns_changed:
            if change.size is not None:
                out.append(f"~ LUN {change.lun} of {change.iqn}: size {change.size[0]} -> {change.size[1]} bytes")
            if change.readonly is not None:
                out.append(f"~ LUN {change.lun} of {change.iqn}: readonly {str(change.readonly).lower()}")
        out += [f"~ {line}" for line in self.access_changed]
        out += [f"! {reason}" for reason in self.refused]
        return out


def config_diff(running: Config, new: Config) -> ConfigDiff:
    """What applying `new` to a node running `running` changes, and what of it a running node refuses."""
    diff = ConfigDiff()
    _server_and_cluster(running, new, diff)
    if running.discovery != new.discovery:
        diff.access_changed.append("discovery CHAP (new logins)")
    old_targets = {t.iqn: (i, t) for i, t in enumerate(running.targets)}
    new_targets = {t.iqn: (i, t) for i, t in enumerate(new.targets)}
    diff.targets_removed = [iqn for iqn in old_targets if iqn not in new_targets]
    diff.targets_added = [iqn for iqn in new_targets if iqn not in old_targets]
    for iqn, (index, target) in new_targets.items():
        if iqn in old_targets:
            _target(old_targets[iqn][1], target, f"target[{index}]", diff)
    return diff


def _server_and_cluster(running: Config, new: Config, diff: ConfigDiff) -> None:
    diff.portals_added = [portal for portal in new.server.portals if portal not in running.server.portals]
    diff.portals_removed = [portal for portal in running.server.portals if portal not in new.server.portals]
    for f in fields(running.server):
        before, after = getattr(running.server, f.name), getattr(new.server, f.name)
        if before != after and f.name not in LIVE_SERVER_KEYS:
            diff.refused.append(f"server.{f.name}: {before!r} -> {after!r} needs a restart "
                                "(of [server] a reload changes the portals and workers only)")
    before, after = running.server.workers, new.server.workers
    if after > MAX_WORKERS and after > before:
        diff.refused.append(f"server.workers: {before} -> {after}: a reload grows it to at most {MAX_WORKERS}; "
                            "more needs a restart")
    elif after != before:
        diff.workers = (before, after)
    if running.cluster != new.cluster:
        diff.refused.append("cluster: changed; [cluster] needs a restart (a reload changes targets, LUNs, "
                            "portals, workers and access only)")


def _target(old: TargetConfig, new: TargetConfig, where: str, diff: ConfigDiff) -> None:
    iqn = new.iqn
    if old.alias != new.alias:
        diff.access_changed.append(f"target {iqn}: alias {new.alias!r} (new logins)")
    if old.allowed_initiators != new.allowed_initiators:
        diff.access_changed.append(f"target {iqn}: allowed_initiators {_acl(old.allowed_initiators, new)}")
    if old.auth != new.auth:
        diff.access_changed.append(f"target {iqn}: {_auth(old.auth, new.auth)} (new logins)")
    old_luns = {lun.id: lun for lun in old.luns}
    new_luns = {lun.id: (i, lun) for i, lun in enumerate(new.luns)}
    diff.luns_removed += [(iqn, lun_id) for lun_id in old_luns if lun_id not in new_luns]
    for lun_id, (index, lun) in new_luns.items():
        if lun_id not in old_luns:
            diff.luns_added.append((iqn, lun_id))
        else:
            _lun(iqn, old_luns[lun_id], lun, f"{where}.lun[{index}]", diff)


def _lun(iqn: str, old: LunConfig, new: LunConfig, where: str, diff: ConfigDiff) -> None:
    for f in fields(old):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name not in LIVE_LUN_KEYS and before != after:
            diff.refused.append(f"{where}.{f.name}: {before!r} -> {after!r} cannot change on a live "
                                f"LUN ({iqn} LUN {new.id}); remove the LUN in one reload and add it back in the next, "
                                "or restart")
    size = None
    if old.size is None or new.size is None:        # an RBD LUN serving its image's size: `rbd resize` grows it
        if old.size != new.size:
            diff.refused.append(f"{where}.size: {old.size!r} -> {new.size!r} cannot change on a live LUN ({iqn} LUN "
                                f"{new.id}); `rbd resize` grows an RBD image")
    elif new.size < old.size:
        diff.refused.append(f"{where}.size: {new.size} is below the LUN's {old.size} bytes ({iqn} LUN {new.id}): "
                            "shrinking would drop the data beyond the new end")
    elif new.size > old.size:
        if new.backstore != "file":
            diff.refused.append(f"{where}.size: a {new.backstore!r} LUN ({iqn} LUN {new.id}) cannot be resized")
        size = (old.size, new.size)
    readonly = new.readonly if new.readonly != old.readonly else None
    if size is not None or readonly is not None:
        diff.luns_changed.append(LunChange(iqn, new.id, size, readonly))


def _portal(portal: tuple[str, int]) -> str:
    host, port = portal
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _acl(before: tuple[str, ...] | None, target: TargetConfig) -> str:
    after = target.allowed_initiators
    if after is None:
        return "removed: every initiator may log in"
    if before is None:
        return f"only {', '.join(after)} (sessions of others end)"
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    changes = [f"+{name}" for name in added] + [f"-{name} (its sessions end)" for name in removed]
    return ", ".join(changes) or "reordered"


def _auth(before: AuthConfig, after: AuthConfig) -> str:
    parts = []
    for key in ("chap", "mutual_chap"):
        old, new = getattr(before, key), getattr(after, key)
        if old != new:
            parts.append(f"{key} {'removed' if new is None else 'added' if old is None else 'changed'}")
    return ", ".join(parts)
