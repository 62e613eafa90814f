"""Live reconfiguration, the coordinator's half (the worker's: target/reload.py): the authority that orders a reload.

    ReloadConfig  control (`ringtgt reload`, or the supervisor on SIGHUP): the file at `path` is parsed whole
                  (a config error refuses it, `config_error`), compared with the running configuration
                  (target/config_diff.py; what a running node cannot take refuses it whole), and what could still
                  fail is done before anything changes: an added portal is bound once, an added LUN's image is
                  made or checked and recorded (preflight.py, as `serve` does at its start), a grown LUN's file is
                  extended (target/resize.py). That preparation runs aside (coordinator/aside.py: a Ceph cluster
                  may take seconds to answer), the loop serving other requests meanwhile; a second reload asked
                  then is refused, and a resize that landed meanwhile refuses this one (it was prepared for other
                  sizes).
                  Only then do the units change (UnitAuthority.reconfigure: REPORTED LUNS DATA HAS CHANGED,
                  CAPACITY DATA HAS CHANGED), <state_dir>/running.toml is rewritten (target/running_config.py: the
                  supervisor forks later children with it) and ConfigChanged is pushed to every worker; the answer
                  (ReloadAnswer: the changes, one line each) comes once every worker has applied it. Requests are
                  processed one at a time (service.py), so no worker serves a command of the new configuration
                  while another still answers for the old one once the answer is out.
    FetchConfig   a worker that (re)connected asks for the running configuration (a worker forked just before a
                  reload and connected just after it would miss the push).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from target.config import Config, ConfigError, LunConfig, dump_config, load_config
from target.config_diff import ConfigDiff, config_diff
from target.reload import RELOAD_PREPARE_SECONDS
from target.preflight import PreflightError, check_image, check_portal, check_rbd_image
from target.resize import ResizeError, grow_image
from target.running_config import save_running

from .messages import ConfigChanged, FetchConfig, ReloadAnswer, ReloadConfig
from .aside import Aside
from .service import CoordinatorService, Deferred, Reply
from .unit_service import UnitAuthority

log = logging.getLogger("ringtgt.coordinator")


class RunningConfig:
    """The node's configuration now: what the supervisor started the coordinator with, then each reload's."""

    def __init__(self, config: Config):
        self.config = config


def register_reload_handlers(service: CoordinatorService, running: RunningConfig, authority: UnitAuthority,
                             reloaded: Callable[[], None] | None = None) -> None:
    """`reloaded()` after each reload that changed something (the cluster tells its peers our LUN identities)."""
    aside = Aside(service)
    preparing: list[str] = []       # the file of the reload being prepared aside (one at a time)

    def reload(message: ReloadConfig, origin: str) -> Reply | Deferred:
        name = message.path or "the embedded configuration"
        if preparing:
            return Reply(ReloadAnswer([], f"the reload of {preparing[0]} is still being prepared; nothing changed"))
        try:
            new = load_config(message.path or None)
        except ConfigError as e:
            log.error("reload refused, nothing changed: config error: %s", e)
            return Reply(ReloadAnswer([], f"config error: {e}", True))
        current = _with_grown_sizes(running.config, authority)
        diff = config_diff(current, new)
        if diff.refused:
            return _refuse(name, diff, "; ".join(diff.refused))
        if diff.empty:
            log.info("reload of %s: no change", name)
            return Reply(ReloadAnswer([], None))
        deferred = service.defer()
        preparing.append(name)
        log.info("reload of %s: preparing it (portals bound, images made, files grown)", name)

        def prepared(refused: str, error: BaseException | None) -> None:
            preparing.clear()
            if error is not None:
                log.error("reload of %s: preparing it failed: %r", name, error)
                refused = f"preparing the change failed: {error}"
            elif not refused and config_diff(_with_grown_sizes(running.config, authority), new) != diff:
                refused = "the running configuration changed while the reload was prepared (a resize); reload again"
            if refused:
                deferred.resolve(_refuse(name, diff, refused))
                return
            before = running.config
            try:
                reply = _apply(new, current, diff)
            except Exception as e:      # answered, not left to the client's deadline (Aside only logs)
                log.exception("reload of %s: applying it failed", name)
                running.config = before
                reply = Reply(ReloadAnswer([], f"applying the change failed: {e}"))
            deferred.resolve(reply)
        aside.run(lambda: _prepare(current, new, diff), prepared)
        return deferred

    def _apply(new: Config, current: Config, diff: ConfigDiff) -> Reply:
        save_running(new)           # first: a failure here changes nothing
        lost = [(target.iqn, lun.id) for target in current.targets if target.iqn in diff.targets_removed
                for lun in target.luns]
        gained = [(target.iqn, lun.id) for target in new.targets if target.iqn in diff.targets_added
                  for lun in target.luns]
        running.config = new        # first: the units added find their RBD image there (UnitAuthority's rbd_of)
        attentions = authority.reconfigure(
            gained + diff.luns_added, lost + diff.luns_removed,
            [(change.iqn, change.lun, change.size[1]) for change in diff.luns_changed if change.size is not None],
            diff.luns_moved())
        for line in diff.lines():
            log.info("reload: %s", line)
        if reloaded is not None:
            reloaded()
        return Reply(ReloadAnswer(diff.lines(), None), [ConfigChanged(dump_config(new), attentions)])

    service.register(ReloadConfig, reload)
    service.register(FetchConfig, lambda message, origin: Reply(ConfigChanged(dump_config(running.config), [])))


def _refuse(name: str, diff: ConfigDiff, why: str) -> Reply:
    log.error("reload of %s refused, nothing changed: %s", name, why)
    return Reply(ReloadAnswer([line for line in diff.lines() if not line.startswith("!")], why))


def _with_grown_sizes(config: Config, authority: UnitAuthority) -> Config:
    """`config` with the sizes `ringtgt resize` grew its LUNs to since (the size a LUN is served at now)."""
    targets = []
    for target in config.targets:
        luns = []
        for lun in target.luns:
            grown = authority.unit(target.iqn, lun.id).size
            luns.append(lun if grown is None else dataclasses.replace(lun, size=grown))
        targets.append(dataclasses.replace(target, luns=tuple(luns)))
    return dataclasses.replace(config, targets=tuple(targets))


def _prepare(current: Config, new: Config, diff: ConfigDiff) -> str:
    """Make ready what a worker cannot fail at later: the portals added (no one listens there, we may), the images
    of the LUNs added, the files of those grown, within RELOAD_PREPARE_SECONDS; why the reload cannot go on, or
    ""."""
    luns: dict[tuple[str, int], LunConfig] = {(t.iqn, lun.id): lun for t in new.targets for lun in t.luns}
    added = [key for key in luns if key in diff.luns_added or key[0] in diff.targets_added]
    vips = new.cluster.vip_addresses() if new.cluster is not None else ()
    deadline = time.monotonic() + RELOAD_PREPARE_SECONDS
    try:
        for host, port in diff.portals_added:
            check_portal(host, port, freebind=host in vips)
        for iqn, lun_id in added:
            if luns[iqn, lun_id].backstore == "file":
                check_image(new.server.state_dir, iqn, luns[iqn, lun_id])
            elif luns[iqn, lun_id].backstore == "rbd":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"{iqn} LUN {lun_id}: not checked, the reload's {RELOAD_PREPARE_SECONDS:g} s were spent"
                check_rbd_image(new.server.state_dir, iqn, luns[iqn, lun_id], remaining)
        for change in diff.luns_changed:
            if change.size is not None:
                grow_image(luns[change.iqn, change.lun], change.size[1])
    except (PreflightError, ResizeError) as e:
        return str(e)
    return ""
