"""The `ringtgt` command line: serve, check-config, reload, sessions, status, stats, resize, takeover, keygen,
--version."""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from importlib.metadata import version

from target.config import Config, ConfigError, dump_config, load_config
from target.fdlimit import raise_open_files_limit
from target.logformat import configure as configure_logging
from target.supervisor import Supervisor

if TYPE_CHECKING:
    from coordinator.messages import Message


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"ringtgt: config error: {e}", file=sys.stderr)
        return 2
    return args.command(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringtgt", description="High-throughput iSCSI target on io_uring.")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for name, func, text in (
        ("serve", _serve, "run the target: a supervisor, the node's coordinator and one worker per CPU"),
        ("check-config", _check_config, "validate the configuration and print it resolved, as TOML (--diff: what a "
                                        "reload would change)"),
        ("reload", _reload, "apply the configuration to the running node: targets, LUNs, sizes, readonly, ACLs, CHAP"),
        ("sessions", _sessions, "list the logged-in iSCSI sessions, asking the running node's coordinator"),
        ("status", _status, "show the running node: supervisor, workers, coordinator, cluster peers, LUNs, sessions"),
        ("stats", _stats, "per LUN and per session: IOPS, MiB/s and p50/p99 service time over an interval, "
                          "command, byte and error counts; per worker its gauges (from the workers' counter files)"),
        ("resize", _resize, "grow a LUN of the running node: extend its file to --size, or pick up the size its "
                            "file or block device has now; every initiator gets CAPACITY DATA HAS CHANGED"),
        ("takeover", _takeover, "tell this node's coordinator that PEER is dead and its VIPs are here: blocklist "
                                "PEER's RADOS clients (RBD LUNs), then tickle every connection PEER held"),
        ("keygen", _keygen, "write a CURVE key pair for the cluster bus: NAME.key (public) and NAME.key_secret"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", metavar="FILE",
                             help="TOML configuration; it also locates the node (state_dir). Default: the embedded one")
        command.set_defaults(command=func)
        if name == "check-config":
            command.add_argument("--diff", action="store_true", help="print what a reload with this configuration "
                                 "would change on the running node (or against --against), not the configuration")
            command.add_argument("--against", metavar="OLD", help="with --diff: compare with this file instead of "
                                 "the running node's configuration")
        elif name in ("sessions", "status", "stats"):
            command.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "stats":
            command.add_argument("--watch", type=float, metavar="SECONDS",
                                 help="print again every SECONDS, each over the interval since the previous; "
                                      "default: once, over one second")
        elif name == "resize":
            command.add_argument("target", metavar="TARGET", help="the target's iqn")
            command.add_argument("lun", metavar="LUN", type=int, help="the LUN's id")
            command.add_argument("--size", help="the new size, as the config's `size` (e.g. 2GiB); a file is "
                                                "extended to it. Default: the file's or device's size now")
        elif name == "takeover":
            command.add_argument("peer", metavar="PEER", help="the dead peer's node name")
            command.add_argument("--unfenced", action="store_true", help="take over even if blocklisting PEER's "
                                 "RADOS clients fails (RBD LUNs): only once PEER is known to be dead")
        elif name == "keygen":
            command.add_argument("name", metavar="NAME", help="path and name of the key files, e.g. keys/a")
    return parser


class _Version(argparse.Action):
    """--version, looked up from the installed package only when asked for."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(message=f"ringtgt {version('ringtgt')}\n")


def _serve(config: Config, args) -> int:
    from coordinator.main import coordinator_main
    from target.watchdog import beat
    from target.preflight import PreflightError, preflight
    from target.running_config import save_running
    from target.worker import worker_main  # here: these need the compiled ring, check-config does not

    configure_logging(config.server.log_level, config.server.log_format)
    try:
        lock = preflight(config)        # held until this process exits, and by the children it forks
    except PreflightError as e:
        print(f"ringtgt: {e}", file=sys.stderr)
        return 1
    raise_open_files_limit()                # before the fork: every child inherits it
    save_running(config)                    # what the children start with, until a reload changes it
    try:
        return Supervisor(config, worker_main, functools.partial(coordinator_main, heartbeat=beat),
                          config_path=os.path.abspath(args.config) if args.config else None).run()
    finally:
        os.close(lock)


def _check_config(config: Config, args) -> int:
    if not args.diff:
        sys.stdout.write(dump_config(config))
        return 0
    from target.config_diff import config_diff
    from target.running_config import load_running

    try:
        running = load_config(args.against) if args.against else load_running(config.server.state_dir)
    except ConfigError as e:
        print(f"ringtgt: config error: {e}", file=sys.stderr)
        return 2
    diff = config_diff(running, config)
    for line in diff.lines() or ["no change"]:
        print(line)
    if diff.refused:
        print("a reload would be refused: nothing would change", file=sys.stderr)
        return 1
    return 0


def _reload(config: Config, args) -> int:
    from coordinator.messages import ReloadAnswer, ReloadConfig
    from target.reload import RELOAD_TIMEOUT

    path = os.path.abspath(args.config) if args.config else ""
    reply = cast(ReloadAnswer | None, _ask(config, ReloadConfig(path), RELOAD_TIMEOUT))
    if reply is None:
        return 1
    for line in reply.changes or ([] if reply.refused else ["no change"]):
        print(line)
    if reply.refused:
        print(f"ringtgt: reload refused, nothing changed: {reply.refused}", file=sys.stderr)
        return 2 if reply.config_error else 1
    if any(line.startswith("~ workers ") for line in reply.changes):
        return _await_workers(config, time.monotonic() + RELOAD_TIMEOUT)
    return 0


def _await_workers(config: Config, deadline: float) -> int:
    """After a reload that changed `workers`: wait until the supervisor has forked or stopped the difference, i.e.
    the workers connected to the coordinator are 0 … workers-1 (a worker connects once it listens)."""
    from coordinator.control import ControlError, control_request
    from coordinator.messages import FetchStatus, NodeStatus

    wanted = list(range(config.server.workers))
    while True:
        try:
            status = cast(NodeStatus, control_request(config.server.state_dir, FetchStatus(),
                                                      max(0.1, deadline - time.monotonic())))
        except ControlError as e:
            print(f"ringtgt: {e}", file=sys.stderr)
            return 1
        indexes = sorted(worker["index"] for worker in status.workers)
        if indexes == wanted:
            return 0
        if time.monotonic() > deadline:
            print(f"ringtgt: reload applied, but the workers running are {indexes}, not {wanted}: see the "
                  "supervisor's log", file=sys.stderr)
            return 1
        time.sleep(0.1)


SESSION_COLUMNS = (("NODE", "node"), ("WORKER", "worker"), ("PID", "pid"), ("INITIATOR", "initiator"),
                   ("ISID", "isid"), ("TSIH", "tsih"), ("TARGET", "target"), ("PORTAL", "portal"),
                   ("CLIENT", "client"), ("LOGIN", "login_time"))


def _ask(config: Config, request: Message, timeout: float | None = None) -> Message | None:
    """The running node's coordinator's reply to `request`, or None once the reason there is none is printed."""
    from coordinator.control import CONTROL_TIMEOUT, ControlError, control_request

    try:
        return control_request(config.server.state_dir, request, timeout or CONTROL_TIMEOUT)
    except ControlError as e:
        print(f"ringtgt: {e}", file=sys.stderr)
        return None


def _print_reply(reply: Message | None, args, human: Callable[[dict], str]) -> int:
    """A control reply as JSON (--json) or as `human(body)` prints it; exit status 1 without one."""
    if reply is None:
        return 1
    if args.json:
        json.dump(reply.to_body(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(human(reply.to_body()))
    return 0


def _sessions(config: Config, args) -> int:
    from coordinator.messages import ListSessions

    return _print_reply(_ask(config, ListSessions()), args, lambda body: format_sessions(body["sessions"]))


def _resize(config: Config, args) -> int:
    from target.resize import ResizeError, resize

    try:
        previous, size = resize(config, args.target, args.lun, args.size)
    except (ResizeError, ConfigError) as e:
        print(f"ringtgt: resize: {e}", file=sys.stderr)
        return 1
    if size == previous:
        print(f"LUN {args.lun} of {args.target}: {size} bytes, unchanged")
    else:
        print(f"LUN {args.lun} of {args.target}: {previous} -> {size} bytes; every initiator is told")
    return 0


def _status(config: Config, args) -> int:
    from coordinator.messages import FetchStatus

    return _print_reply(_ask(config, FetchStatus()), args, format_status)


def _stats(config: Config, args) -> int:
    """Two readings of the counter files under state_dir (no coordinator involved), an interval apart."""
    from target.metrics.report import format_stats, stats_dict
    from target.metrics.snapshot import read_node

    interval = args.watch or 1.0
    if interval < 0.1:
        print("ringtgt: stats: --watch must be at least 0.1 s", file=sys.stderr)
        return 2
    before = read_node(config.server.state_dir)
    if not before.workers:
        print(f"ringtgt: stats: no counters under {config.server.state_dir}/stats: is the node running?",
              file=sys.stderr)
        return 1
    try:
        while True:
            time.sleep(interval)
            now = read_node(config.server.state_dir)
            stats = stats_dict(now, before)
            if args.json:
                json.dump(stats, sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                sys.stdout.write(format_stats(stats))
            sys.stdout.flush()
            if not args.watch:
                return 0
            before = now
    except KeyboardInterrupt:
        return 0


def _takeover(config: Config, args) -> int:
    from coordinator.fencer import FENCE_TIMEOUT
    from coordinator.messages import Takeover, TakeoverReport

    reply = cast(TakeoverReport | None, _ask(config, Takeover(args.peer, args.unfenced), FENCE_TIMEOUT + 5))
    if reply is None:
        return 1
    if reply.fenced or reply.fence_error:
        print(f"fenced {reply.peer} through Ceph: {len(reply.fenced)} RADOS clients blocklisted"
              + "".join(f"\n  {address}" for address in reply.fenced))
    for conf, epoch in reply.epochs.items():
        print(f"OSD map epoch {epoch} of {conf} (the blocklist's): this node's workers asked to wait for it "
              "before the tickles, and its coordinator's RADOS client (2 s at most: a worker not at it by then answers "
              "NOT READY on that cluster's RBD LUNs until it is; the coordinator, 1 s, holds its writes of the units' "
              "state until it is)")
    for worker, why in sorted(reply.behind.items()):
        print(f"  {worker}: {why}")
    if reply.fence_error:
        print(f"FENCING FAILED: {reply.fence_error}", file=sys.stderr)
    if not reply.taken:
        print(f"takeover of {reply.peer} refused: {reply.peer} may still write to the RBD images; nothing tickled, "
              f"its sessions kept. Fix the cause and run it again, or, once {reply.peer} is known to be dead "
              f"(powered off), `ringtgt takeover {reply.peer} --unfenced` (which a node fenced itself refuses too)",
              file=sys.stderr)
        return 1
    if reply.fence_error:
        print(f"WARNING: {reply.peer} is not fenced through Ceph; taken over as told (--unfenced)", file=sys.stderr)
    print(f"takeover of {reply.peer} (seen {reply.peer_state}): {reply.sessions} sessions, "
          f"{reply.tickled} connections tickled x{reply.rounds}, {reply.not_local} not on a local address")
    return 0


def _keygen(config: Config, args) -> int:
    import zmq.auth

    directory, name = os.path.split(args.name)
    os.makedirs(directory or ".", exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory or ".", name)
    os.chmod(secret, 0o600)
    print(f"{public}\n{secret}")
    return 0


def format_sessions(sessions: list[dict]) -> str:
    """The text table of `ringtgt sessions`: a header line, one line per session, a count."""
    rows = [[title for title, _ in SESSION_COLUMNS]]
    for record in sessions:
        cells = dict(record, isid=f"0x{record['isid']:012x}", client=f"{record['client']}:{record['client_port']}",
                     login_time=datetime.datetime.fromtimestamp(record["login_time"]).isoformat(" ", "seconds"))
        rows.append([str(cells[key]) for _, key in SESSION_COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(SESSION_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"{len(sessions)} session{'' if len(sessions) == 1 else 's'}")
    return "\n".join(lines) + "\n"


STATUS_TABLES = (
    ("workers", (("WORKER", "index"), ("PID", "pid"), ("CPUS", "cpus"), ("UPTIME", "uptime"),
                 ("RESTARTS", "restarts"), ("CONNECTIONS", "connections"), ("SESSIONS", "sessions"))),
    ("peers", (("PEER", "name"), ("STATE", "state"), ("HEARTBEAT", "heartbeat_age"))),
    ("luns", (("TARGET", "target"), ("LUN", "lun"), ("BACKSTORE", "backstore"), ("PATH", "path"),
              ("SIZE", "size"), ("STATE", "state"), ("SANITIZING", "sanitizing"), ("EJECTED", "ejected"))),
)


def format_status(status: dict) -> str:
    """The text of `ringtgt status`: the supervisor's and the coordinator's lines, a table each of the workers,
    the cluster peers (if any) and the LUNs, and the session count."""
    supervisor, coordinator = status["supervisor"], status["coordinator"]
    lines = [f"node {status['node']}",
             f"supervisor   pid {supervisor['pid']}  up {_duration(supervisor['uptime'])}",
             f"coordinator  pid {coordinator['pid']}  up {_duration(coordinator['uptime'])}  "
             f"restarts {coordinator['restarts']}"]
    for key, columns in STATUS_TABLES:
        if status[key]:
            lines.append("")
            lines += _table(columns, status[key])
    count = status["sessions"]
    lines += ["", f"{count} session{'' if count == 1 else 's'}"]
    return "\n".join(lines) + "\n"


def _table(columns, records: list[dict]) -> list[str]:
    rows = [[title for title, _ in columns]]
    for record in records:
        rows.append([_cell(key, record[key]) for _, key in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("uptime", "heartbeat_age"):
        return _duration(value)
    if key == "size":
        return _size(value)
    return str(value)


def _duration(seconds: float | None) -> str:
    """3d4h, 2h5m, 7m3s, 12.5s."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, hours, minutes = whole // 86400, whole // 3600 % 24, whole // 60 % 60
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{minutes}m" if hours else f"{minutes}m{whole % 60}s"


def _size(size: int) -> str:
    """Bytes in the largest binary unit that divides them (64MiB, 1536KiB), else bytes."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)
