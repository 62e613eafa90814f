"""ringtgt's TOML configuration: one loader into frozen dataclasses, errors that name the key path.

load_config(None) gives the embedded default; dump_config renders a Config back to loadable TOML (loads_config reads
it back).
"""
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from decimal import Decimal, InvalidOperation

import zmq.auth

from coordinator.endpoints import check_state_dir
from target.identity import derive_naa, derive_serial
from target.iscsi.names import is_iscsi_name

DEFAULT_TOML = """
[server]
portals = ["127.0.0.1:3260"]

[[target]]
iqn = "iqn.2026-11.org.ringtgt:default"

[[target.lun]]
id = 0
path = "./var/default-lun0.img"
size = "1GiB"
"""

DEFAULT_PORT = 3260
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
BLOCK_SIZES = (512, 4096)
BACKSTORES = ("file", "null", "rbd")
RBD_KEYS = ("pool", "image", "ceph_conf", "client_name", "keyring")    # the keys of backstore "rbd" alone
MAX_LUN_ID = 255
MAX_BLOCKS_PER_PHYSICAL = 1 << 15    # physical_block_size / block_size: READ CAPACITY(16)'s 4-bit exponent
MAX_NAME_BYTES = 223  # RFC 3720 3.2.6.1
MAX_ALIAS_CHARS = 255
MAX_SERIAL_CHARS = 64
MIN_CHAP_SECRET_CHARS = 12   # RFC 7143 §12.1.3 wants at least 96 bits of secret
MAX_CHAP_CHARS = 255
MAX_WRITE_QUEUE_DEPTH = 1024   # a LUN's writes in the kernel at once per worker: the worker's ring's entries
MAX_BUSY_POLL_US = 1000     # a spin longer than a millisecond only burns the CPU a sleep would have given away
MIN_HANG_TIMEOUT = 2.0      # [server] hang_timeout: four turns of the slowest loop (0.5 s), so load is no hang

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1} | {
    f"{p}{i}b": (1024 if i else 1000) ** (n + 1) for n, p in enumerate("kmgtp") for i in ("", "i")
}
_NAA_ID_RE = re.compile(r"6[0-9a-f]{31}")
_SERIAL_RE = re.compile(rf"[!-~]{{1,{MAX_SERIAL_CHARS}}}")
_NODE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TCP_ENDPOINT_RE = re.compile(r"tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[0-9.]+):(?P<port>\d{1,5})")
_PORTAL_RE = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\s:\[\]]+))(?::(?P<port>\d+))?")


class ConfigError(Exception):
    """Bad configuration; the message starts with the key path (e.g. 'target[0].lun[1].block_size')."""


@dataclass(frozen=True)
class ServerConfig:
    portals: tuple[tuple[str, int], ...]
    workers: int
    state_dir: str
    log_level: str
    nop_interval: float
    login_timeout: float
    max_connections: int
    max_connections_per_initiator: int
    initial_r2t: bool = True
    immediate_data: bool = False
    busy_poll_us: float = 0
    max_prelogin_connections: int = 256     # connections still logging in a worker holds (the idlest goes)
    max_prelogin_per_address: int = 32      # the same, from one source address (an IPv6 /64)
    hang_timeout: float = 10.0
    log_format: str = "text"                # "json": one JSON object per line (target/logformat.py)
    metrics: tuple[str, int] | None = None  # the Prometheus endpoint's address (target/metrics/prometheus.py)


@dataclass(frozen=True)
class ChapConfig:
    """One direction of CHAP: the name and secret the authenticating side must prove it knows."""
    username: str
    secret: str

    def __repr__(self) -> str:            # never print a secret by accident
        return f"ChapConfig(username={self.username!r}, secret=<{len(self.secret)} characters>)"


@dataclass(frozen=True)
class AuthConfig:
    """`chap`: the initiator authenticates to the target; `mutual_chap`: the target authenticates back."""
    chap: ChapConfig | None = None
    mutual_chap: ChapConfig | None = None


@dataclass(frozen=True)
class LunConfig:
    id: int
    path: str | None
    size: int | None                            # None: backstore "rbd" without one, the image's size
    block_size: int
    backstore: str
    direct: bool
    write_cache: bool
    thin: bool
    serial: str
    naa: str
    readonly: bool = False
    removable: bool = False
    sanitize_rate: int = 0                      # bytes per second a SANITIZE may write; 0: no limit
    encryption_key: str | None = None           # key file: blocks encrypted at rest (CRYPTO ERASE offered)
    physical_block_size: int | None = None      # reported physical block (READ CAPACITY(16)); None: block_size
    atomic_writes: bool | None = None           # backstore "file": False turns WRITE ATOMIC off; None elsewhere
    write_queue_depth: int | None = None        # backstore "file": writes in the kernel at once, per worker
                                                # (None: the store's default); None elsewhere
    pool: str | None = None                     # backstore "rbd": the image's pool and name,
    image: str | None = None
    ceph_conf: str | None = None                # and how to reach the cluster (None: librados' defaults)
    client_name: str | None = None
    keyring: str | None = None


@dataclass(frozen=True)
class TargetConfig:
    iqn: str
    alias: str | None
    luns: tuple[LunConfig, ...]
    allowed_initiators: tuple[str, ...] | None = None   # None: every initiator
    auth: AuthConfig = AuthConfig()


@dataclass(frozen=True)
class ClusterConfig:
    """`[cluster]`: this node's name and bus endpoint, its peers, their CURVE keys, the VIPs and the takeover mode."""
    node: str
    listen: str
    peers: tuple[tuple[str, str], ...]                  # (name, tcp endpoint)
    curve_secret_key: str | None = None                 # a pyzmq secret certificate file (`ringtgt keygen`)
    peer_public_keys: tuple[tuple[str, str], ...] = ()  # (name, public certificate file)
    vips: tuple[str, ...] = ()                          # "address/prefix"
    vip_interface: str | None = None
    takeover: str = "external"
    dead_after: float = 1.0

    def vip_addresses(self) -> tuple[str, ...]:
        return tuple(vip.split("/")[0] for vip in self.vips)


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    targets: tuple[TargetConfig, ...]
    discovery: AuthConfig = AuthConfig()
    cluster: ClusterConfig | None = None


_REQUIRED = object()
# What a typed `take` returns: one of the accepted types (T, U), or the default's type (D)
T = TypeVar("T")
U = TypeVar("U")
D = TypeVar("D")
_TYPE_NAMES = {
    bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table",
}


class _Table:
    """One TOML table being read: typed lookups whose errors name the key path, then a leftover check."""

    def __init__(self, data: object, where: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must be a table, got {data!r}")
        self._data = dict(data)
        self._where = where

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path(key)}: {message}")

    @overload
    def take(self, key: str, types: tuple[type[T]]) -> T: ...
    @overload
    def take(self, key: str, types: tuple[type[T]], default: D) -> T | D: ...
    @overload
    def take(self, key: str, types: tuple[type[T], type[U]]) -> T | U: ...
    @overload
    def take(self, key: str, types: tuple[type[T], type[U]], default: D) -> T | U | D: ...

    def take(self, key: str, types: tuple[type, ...], default: object = _REQUIRED) -> Any:
        """Remove and return data[key]; it must be one of types (bools are never numbers)."""
        if key not in self._data:
            if default is _REQUIRED:
                raise self.error(key, "required")
            return default
        value = self._data.pop(key)
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise self.error(key, f"must be {wanted}, got {value!r}")
        return value

    def take_tables(self, key: str, header: str) -> list["_Table"]:
        """Remove an array of tables ([[header]]); it must hold at least one."""
        value = self._data.pop(key, None)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"at least one [[{header}]] table is required")
        return [_Table(item, f"{self.path(key)}[{i}]") for i, item in enumerate(value)]

    def finish(self) -> None:
        if self._data:
            names = ", ".join(sorted(self._data))
            raise ConfigError(f"{self._where or 'top level'}: unknown key(s): {names}")


def load_config(path: str | None) -> Config:
    """Load and validate the TOML file at path (None: the embedded default, paths relative to the cwd)."""
    if path is None:
        return _parse(tomllib.loads(DEFAULT_TOML), os.getcwd())
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return _parse(data, os.path.dirname(os.path.abspath(path)))


def loads_config(text: str) -> Config:
    """The configuration dump_config's TOML holds (its paths are absolute)."""
    return _parse(tomllib.loads(text), "/")


def _parse(data: dict, base_dir: str) -> Config:
    top = _Table(data, "")
    server = _parse_server(_Table(top.take("server", (dict,), {}), "server"), base_dir)
    targets = tuple(_parse_target(t, base_dir) for t in top.take_tables("target", "target"))
    discovery_table = _Table(top.take("discovery", (dict,), {}), "discovery")
    discovery = _parse_auth(discovery_table)
    discovery_table.finish()
    cluster_table = top.take("cluster", (dict,), None)
    cluster = _parse_cluster(_Table(cluster_table, "cluster"), base_dir) if cluster_table is not None else None
    top.finish()
    _check_unique(targets)
    return Config(server=server, targets=targets, discovery=discovery, cluster=cluster)


def _parse_cluster(t: _Table, base_dir: str) -> ClusterConfig:
    node = t.take("node", (str,))
    if not _NODE_RE.fullmatch(node):
        raise t.error("node", f"must be 1..32 letters, digits, '-' or '_', got {node!r}")
    listen = _tcp_endpoint(t, "listen", t.take("listen", (str,)))
    peers = t.take("peers", (dict,))
    if not peers:
        raise t.error("peers", "must name at least one peer node")
    for name, endpoint in peers.items():
        if not _NODE_RE.fullmatch(name) or name == node:
            raise t.error(f"peers.{name}", f"must be another node's name (letters, digits, '-', '_'), not {node!r}")
        _tcp_endpoint(t, f"peers.{name}", endpoint)
    secret = t.take("curve_secret_key", (str,), None)
    public = t.take("peer_public_keys", (dict,), None)
    if (secret is None) != (public is None):
        raise t.error("curve_secret_key" if secret is None else "peer_public_keys",
                      "curve_secret_key and peer_public_keys go together")
    if public is not None and secret is not None:       # (both or neither: checked above)
        if set(public) != set(peers):
            raise t.error("peer_public_keys", f"must name exactly the peers {sorted(peers)}, got {sorted(public)}")
        _certificate(t, "curve_secret_key", _resolve(base_dir, secret), secret=True)
        for name, path in public.items():
            if not isinstance(path, str):
                raise t.error(f"peer_public_keys.{name}", f"must be a file name, got {path!r}")
            _certificate(t, f"peer_public_keys.{name}", _resolve(base_dir, path), secret=False)
    vips = tuple(_vip(t, f"vips[{i}]", v) for i, v in enumerate(t.take("vips", (list,), [])))
    vip_interface = t.take("vip_interface", (str,), None)
    takeover = t.take("takeover", (str,), "external")
    if takeover not in ("external", "builtin"):
        raise t.error("takeover", f"must be external or builtin, got {takeover!r}")
    if takeover == "builtin" and (not vips or vip_interface is None):
        raise t.error("takeover", "builtin takeover needs vips and vip_interface")
    dead_after = float(t.take("dead_after", (int, float), 1.0))
    if not 0.05 <= dead_after <= 60:
        raise t.error("dead_after", f"must be 0.05..60 seconds, got {dead_after}")
    t.finish()
    return ClusterConfig(
        node=node, listen=listen, peers=tuple(sorted(peers.items())),
        curve_secret_key=_resolve(base_dir, secret) if secret is not None else None,
        peer_public_keys=tuple(sorted((name, _resolve(base_dir, path)) for name, path in (public or {}).items())),
        vips=vips, vip_interface=vip_interface, takeover=takeover, dead_after=dead_after)


def _certificate(t: _Table, key: str, path: str, secret: bool) -> None:
    """A CURVE certificate file as `ringtgt keygen` writes it, readable and holding the keys it must."""
    try:
        public_key, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise t.error(key, f"cannot read the certificate {path}: {exc}") from None
    if not public_key or (secret and not secret_key):
        raise t.error(key, f"{path} holds no {'secret' if secret else 'public'} key (see `ringtgt keygen`)")


def _tcp_endpoint(t: _Table, key: str, value: object) -> str:
    match = _TCP_ENDPOINT_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise t.error(key, f"must be a ZeroMQ endpoint tcp://address:port, got {value!r}")
    try:
        ipaddress.ip_address(match["host"].strip("[]"))
    except ValueError:
        raise t.error(key, f"{match['host']!r} is not an IP address") from None
    return match.string


def _vip(t: _Table, key: str, value: object) -> str:
    try:
        interface = ipaddress.IPv4Interface(value) if isinstance(value, str) and "/" in value else None
    except ValueError:
        interface = None
    if interface is None:
        raise t.error(key, f"must be an IPv4 address with its prefix length, like '192.0.2.100/24', got {value!r}")
    return str(interface)


def _parse_server(t: _Table, base_dir: str) -> ServerConfig:
    raw_portals = t.take("portals", (list,), [f"127.0.0.1:{DEFAULT_PORT}"])
    if not raw_portals:
        raise t.error("portals", "must list at least one host:port")
    portals = tuple(_parse_portal(t, f"portals[{i}]", p) for i, p in enumerate(raw_portals))
    if len(set(portals)) != len(portals):
        raise t.error("portals", f"duplicate portal in {raw_portals!r}")
    workers = t.take("workers", (int,), len(os.sched_getaffinity(0)))
    if workers < 1:
        raise t.error("workers", f"must be at least 1, got {workers}")
    state_dir = _resolve(base_dir, t.take("state_dir", (str,), "./var"))
    try:
        check_state_dir(state_dir)
    except ValueError as exc:
        raise t.error("state_dir", str(exc)) from None
    log_level = t.take("log_level", (str,), "info").lower()
    if log_level not in LOG_LEVELS:
        raise t.error("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    log_format = t.take("log_format", (str,), "text")
    if log_format not in LOG_FORMATS:
        raise t.error("log_format", f"must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    nop_interval = float(t.take("nop_interval", (int, float), 30))
    if not 0 <= nop_interval < float("inf"):
        raise t.error("nop_interval", f"must be finite seconds >= 0 (0 = off), got {nop_interval}")
    login_timeout = float(t.take("login_timeout", (int, float), 15))
    if not 0 < login_timeout < float("inf"):
        raise t.error("login_timeout", f"must be finite seconds > 0, got {login_timeout}")
    limits = {key: t.take(key, (int,), default) for key, default in
              (("max_connections", 1024), ("max_connections_per_initiator", 64),
               ("max_prelogin_connections", 256), ("max_prelogin_per_address", 32))}
    for key, value in limits.items():
        if value < 1:
            raise t.error(key, f"must be at least 1, got {value}")
    initial_r2t = t.take("initial_r2t", (bool,), True)
    immediate_data = t.take("immediate_data", (bool,), False)
    busy_poll_us = float(t.take("busy_poll_us", (int, float), 0))
    if not 0 <= busy_poll_us <= MAX_BUSY_POLL_US:
        raise t.error("busy_poll_us", f"must be 0..{MAX_BUSY_POLL_US} microseconds (0 = off), got {busy_poll_us}")
    hang_timeout = float(t.take("hang_timeout", (int, float), 10))
    if not MIN_HANG_TIMEOUT <= hang_timeout < float("inf"):
        raise t.error("hang_timeout", f"must be finite seconds >= {MIN_HANG_TIMEOUT:g} (a process's loop turns "
                      f"every 0.5 s at most), got {hang_timeout}")
    metrics = _parse_metrics(t, t.take("metrics", (str,), None), portals)
    t.finish()
    return ServerConfig(
        portals=portals,
        workers=workers,
        state_dir=state_dir,
        log_level=log_level,
        nop_interval=nop_interval,
        login_timeout=login_timeout,
        **limits,
        initial_r2t=initial_r2t,
        immediate_data=immediate_data,
        busy_poll_us=busy_poll_us,
        hang_timeout=hang_timeout,
        log_format=log_format,
        metrics=metrics,
    )


def _parse_metrics(t: _Table, value: str | None, portals: tuple[tuple[str, int], ...]) -> tuple[str, int] | None:
    """`metrics`: "host:port" (a port of its own: none is assumed) or absent (no endpoint)."""
    if value is None:
        return None
    match = _PORTAL_RE.fullmatch(value)
    if not match or match["port"] is None:
        raise t.error("metrics", f"must be 'host:port' or '[ipv6]:port' for the Prometheus endpoint, got {value!r}")
    address = _parse_portal(t, "metrics", value)
    if address in portals:
        raise t.error("metrics", f"{value!r} is also an iSCSI portal")
    return address


def _parse_portal(t: _Table, key: str, value: object) -> tuple[str, int]:
    match = _PORTAL_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise t.error(key, f"must be 'host:port' or '[ipv6]:port', got {value!r}")
    host = match["host"]
    if host is None:
        host = match["v6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise t.error(key, f"{host!r} is not an IPv6 address") from None
    port = int(match["port"] or DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise t.error(key, f"port must be 1..65535, got {port}")
    return host, port


def _iscsi_name(t: _Table, key: str, value: str) -> str:
    """The lower-cased iSCSI name, or a ConfigError naming `key`."""
    name = value.lower()
    if len(name.encode()) > MAX_NAME_BYTES:
        raise t.error(key, f"longer than {MAX_NAME_BYTES} bytes")
    if not is_iscsi_name(name):
        raise t.error(
            key,
            "must be an iSCSI name: iqn.YYYY-MM.reversed.domain[:suffix], eui.<16 hex> or "
            f"naa.<16 or 32 hex> (RFC 3720 3.2.6.3), got {name!r}",
        )
    return name


def _parse_chap(t: _Table, key: str) -> ChapConfig | None:
    raw = t.take(key, (dict,), None)
    if raw is None:
        return None
    table = _Table(raw, t.path(key))
    username = table.take("username", (str,))
    if not 0 < len(username) <= MAX_CHAP_CHARS or not username.isprintable():
        raise table.error("username", f"must be 1..{MAX_CHAP_CHARS} printable characters")
    secret = table.take("secret", (str,))
    if not MIN_CHAP_SECRET_CHARS <= len(secret) <= MAX_CHAP_CHARS:
        raise table.error("secret", f"must be {MIN_CHAP_SECRET_CHARS}..{MAX_CHAP_CHARS} characters, "
                                    f"got {len(secret)}")
    table.finish()
    return ChapConfig(username=username, secret=secret)


def _parse_auth(t: _Table) -> AuthConfig:
    chap = _parse_chap(t, "chap")
    mutual = _parse_chap(t, "mutual_chap")
    if mutual is not None and chap is None:
        raise t.error("mutual_chap", f"needs [{t.path('chap')}]: the initiator authenticates first")
    if mutual is not None and chap is not None and mutual.secret == chap.secret:
        raise t.error("mutual_chap.secret", f"must differ from {t.path('chap.secret')} (RFC 7143 §12.1.3)")
    return AuthConfig(chap=chap, mutual_chap=mutual)


def _parse_target(t: _Table, base_dir: str) -> TargetConfig:
    iqn = _iscsi_name(t, "iqn", t.take("iqn", (str,)))
    alias = t.take("alias", (str,), None)
    if alias is not None and not (0 < len(alias) <= MAX_ALIAS_CHARS and alias.isprintable()):
        raise t.error("alias", f"must be 1..{MAX_ALIAS_CHARS} printable characters, got {alias!r}")
    luns = tuple(_parse_lun(lun, iqn, base_dir) for lun in t.take_tables("lun", "target.lun"))
    allowed = t.take("allowed_initiators", (list,), None)
    initiators: tuple[str, ...] | None = None
    if allowed is not None:
        for i, name in enumerate(allowed):
            if not isinstance(name, str):
                raise t.error(f"allowed_initiators[{i}]", f"must be a string, got {name!r}")
        initiators = tuple(_iscsi_name(t, f"allowed_initiators[{i}]", name) for i, name in enumerate(allowed))
    auth = _parse_auth(t)
    t.finish()
    seen: set[int] = set()
    for i, lun in enumerate(luns):
        if lun.id in seen:
            raise t.error(f"lun[{i}].id", f"duplicate LUN id {lun.id} in this target")
        seen.add(lun.id)
    return TargetConfig(iqn=iqn, alias=alias, luns=luns, allowed_initiators=initiators, auth=auth)


def _parse_lun(t: _Table, iqn: str, base_dir: str) -> LunConfig:
    lun_id = t.take("id", (int,))
    if not 0 <= lun_id <= MAX_LUN_ID:
        raise t.error("id", f"must be 0..{MAX_LUN_ID}, got {lun_id}")
    backstore = t.take("backstore", (str,), "file")
    if backstore not in BACKSTORES:
        raise t.error("backstore", f"must be one of {', '.join(BACKSTORES)}, got {backstore!r}")
    path = t.take("path", (str,), None)
    if backstore == "file" and path is None:
        raise t.error("path", 'required for backstore "file"')
    if backstore != "file" and path is not None:
        raise t.error("path", f'not used by backstore "{backstore}"')
    path = _resolve(base_dir, path) if path is not None else None
    block_size = t.take("block_size", (int,), 512)
    if block_size not in BLOCK_SIZES:
        raise t.error("block_size", f"must be 512 or 4096, got {block_size}")
    size = _lun_size(t, path, block_size, backstore)
    rbd = _rbd_keys(t, backstore, base_dir)
    serial = t.take("serial", (str,), None)
    if serial is None:
        serial = derive_serial(iqn, lun_id)
    elif not _SERIAL_RE.fullmatch(serial):
        raise t.error("serial", f"must be 1..{MAX_SERIAL_CHARS} printable ASCII, no spaces, got {serial!r}")
    naa = t.take("naa", (str,), None)
    if naa is None:
        naa = derive_naa(iqn, lun_id)
    elif not _NAA_ID_RE.fullmatch(naa.lower()):
        raise t.error("naa", f"must be 32 hex digits starting with 6 (IEEE Registered Extended), got {naa!r}")
    lun = LunConfig(
        id=lun_id,
        path=path,
        size=size,
        block_size=block_size,
        backstore=backstore,
        direct=t.take("direct", (bool,), False),
        write_cache=t.take("write_cache", (bool,), True),
        thin=_thin(t, backstore),
        serial=serial,
        naa=naa.lower(),
        readonly=t.take("readonly", (bool,), False),
        removable=t.take("removable", (bool,), False),
        sanitize_rate=_sanitize_rate(t),
        encryption_key=_encryption_key(t, backstore, base_dir),
        physical_block_size=_physical_block_size(t, block_size),
        atomic_writes=_atomic_writes(t, backstore),
        write_queue_depth=_write_queue_depth(t, backstore),
        **rbd,
    )
    t.finish()
    return lun


def _rbd_keys(t: _Table, backstore: str, base_dir: str) -> dict[str, str | None]:
    """pool and image (required) and the optional ceph_conf, client_name and keyring of backstore "rbd"."""
    keys: dict[str, str | None] = {key: t.take(key, (str,), None) for key in RBD_KEYS}
    for key, value in keys.items():
        if value is not None and backstore != "rbd":
            raise t.error(key, f'only used by backstore "rbd", not "{backstore}"')
        if value == "":
            raise t.error(key, "must not be empty")
    if backstore == "rbd":
        for key in ("pool", "image"):
            if keys[key] is None:
                raise t.error(key, 'required for backstore "rbd"')
        for key in ("ceph_conf", "keyring"):
            value = keys[key]
            if value is not None:
                keys[key] = _resolve(base_dir, value)
        client_name = keys["client_name"]
        if client_name is not None and not client_name.startswith("client."):
            raise t.error("client_name", f"must be a Ceph client name like 'client.iscsi', got {client_name!r}")
    return keys


def _thin(t: _Table, backstore: str) -> bool:
    thin = t.take("thin", (bool,), backstore in ("file", "rbd"))
    if thin and backstore not in ("file", "rbd"):
        raise t.error("thin", f'only a file or an RBD image can be thin-provisioned, not backstore "{backstore}"')
    return thin


def _atomic_writes(t: _Table, backstore: str) -> bool | None:
    atomic = t.take("atomic_writes", (bool,), None)
    if backstore == "file":
        return atomic is not False
    if atomic is not None:
        raise t.error("atomic_writes", f'only an image file offers WRITE ATOMIC, not backstore "{backstore}"')
    return None


def _write_queue_depth(t: _Table, backstore: str) -> int | None:
    depth = t.take("write_queue_depth", (int,), None)
    if depth is None:
        return None
    if backstore != "file":
        raise t.error("write_queue_depth", f'only a file or block device LUN has one, not backstore "{backstore}"')
    if not 1 <= depth <= MAX_WRITE_QUEUE_DEPTH:
        raise t.error("write_queue_depth", f"must be 1 to {MAX_WRITE_QUEUE_DEPTH}, got {depth}")
    return depth


def _physical_block_size(t: _Table, block_size: int) -> int | None:
    physical = t.take("physical_block_size", (int,), None)
    if physical is not None and (physical < block_size or physical % block_size
                                 or (physical // block_size) & (physical // block_size - 1)
                                 or physical // block_size > MAX_BLOCKS_PER_PHYSICAL):
        raise t.error("physical_block_size", f"must be block_size {block_size} times a power of 2 up to "
                                             f"{MAX_BLOCKS_PER_PHYSICAL}, got {physical}")
    return physical


def _encryption_key(t: _Table, backstore: str, base_dir: str) -> str | None:
    path = t.take("encryption_key", (str,), None)
    if path is not None and backstore != "file":
        raise t.error("encryption_key", f'only a file is stored encrypted, not backstore "{backstore}"')
    return None if path is None else _resolve(base_dir, path)


def _sanitize_rate(t: _Table) -> int:
    raw = t.take("sanitize_rate", (int, str), 0)
    rate = parse_size(raw, t.path("sanitize_rate"))
    if rate < 0:
        raise t.error("sanitize_rate", f"must be bytes per second, 0 for no limit, got {raw!r}")
    return rate


def _lun_size(t: _Table, path: str | None, block_size: int, backstore: str) -> int | None:
    """The configured size, or for an existing file without one, the file's size (an RBD image's: None)."""
    raw = t.take("size", (int, str), None)
    if raw is None:
        if backstore == "rbd":
            return None
        if path is None:
            raise t.error("size", "required for backstore \"null\"")
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise t.error("size", f"required: {path} cannot be sized ({e.strerror})") from None
    else:
        size = parse_size(raw, t.path("size"))
    if size <= 0 or size % block_size:
        raise t.error("size", f"must be a positive multiple of block_size {block_size}, got {size}")
    return size


def parse_size(value: int | str, key: str) -> int:
    """Bytes from an int or a string like '512MiB', '1GiB', '2TB' (k/M/G/T/P, 'i' = powers of 1024)."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.fullmatch(value.strip())
    try:
        if not match:
            raise InvalidOperation
        number = Decimal(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()]
        if number != int(number):
            raise InvalidOperation
    except InvalidOperation:
        hint = "must be bytes or a size like '512MiB', '1GiB' or '2TB'"
        raise ConfigError(f"{key}: {hint}, got {value!r}") from None
    return int(number)


def _resolve(base_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(base_dir, path))


def _check_unique(targets: tuple[TargetConfig, ...]) -> None:
    """Target names and LUN identities (serial, naa) must not repeat across the whole configuration."""
    seen: dict[tuple[str, str], str] = {}
    for ti, target in enumerate(targets):
        keys = [(f"target[{ti}].iqn", "iqn", target.iqn)]
        for li, lun in enumerate(target.luns):
            keys += [(f"target[{ti}].lun[{li}].{k}", k, getattr(lun, k)) for k in ("serial", "naa")]
        for where, kind, value in keys:
            first = seen.setdefault((kind, value), where)
            if first != where:
                raise ConfigError(f"{where}: {value!r} already used by {first}")


def dump_config(config: Config) -> str:
    """The resolved configuration as TOML that load_config accepts and resolves to an equal Config."""
    s = config.server
    lines = [
        "[server]",
        f"portals = {_toml([f'[{h}]:{p}' if ':' in h else f'{h}:{p}' for h, p in s.portals])}",
        f"workers = {s.workers}",
        f"state_dir = {_toml(s.state_dir)}",
        f"log_level = {_toml(s.log_level)}",
        f"nop_interval = {s.nop_interval!r}",
        f"login_timeout = {s.login_timeout!r}",
        f"max_connections = {s.max_connections}",
        f"max_connections_per_initiator = {s.max_connections_per_initiator}",
        f"max_prelogin_connections = {s.max_prelogin_connections}",
        f"max_prelogin_per_address = {s.max_prelogin_per_address}",
        f"initial_r2t = {_toml(s.initial_r2t)}",
        f"immediate_data = {_toml(s.immediate_data)}",
        f"busy_poll_us = {s.busy_poll_us!r}",
        f"hang_timeout = {s.hang_timeout!r}",
        f"log_format = {_toml(s.log_format)}",
    ]
    if s.metrics is not None:
        host, port = s.metrics
        lines.append(f"metrics = {_toml(f'[{host}]:{port}' if ':' in host else f'{host}:{port}')}")
    lines += _dump_auth("discovery", config.discovery)
    for target in config.targets:
        lines += ["", "[[target]]", f"iqn = {_toml(target.iqn)}"]
        if target.alias is not None:
            lines.append(f"alias = {_toml(target.alias)}")
        if target.allowed_initiators is not None:
            lines.append(f"allowed_initiators = {_toml(list(target.allowed_initiators))}")
        lines += _dump_auth("target", target.auth)
        for lun in target.luns:
            lines += ["", "[[target.lun]]"]
            for key, value in vars(lun).items():
                if value is not None:
                    lines.append(f"{key} = {_toml(value)}")
    if config.cluster is not None:
        lines += ["", "[cluster]"]
        for key, value in vars(config.cluster).items():
            if key in ("peers", "peer_public_keys"):
                if value:
                    lines.append(f"{key} = {{ " + ", ".join(f"{name} = {_toml(v)}" for name, v in value) + " }")
            elif value is not None:
                lines.append(f"{key} = {_toml(list(value) if isinstance(value, tuple) else value)}")
    return "\n".join(lines) + "\n"


def _dump_auth(table: str, auth: AuthConfig) -> list[str]:
    lines = []
    for key in ("chap", "mutual_chap"):
        chap = getattr(auth, key)
        if chap is not None:
            lines += ["", f"[{table}.{key}]", f"username = {_toml(chap.username)}", f"secret = {_toml(chap.secret)}"]
    return lines


def _toml(value: object) -> str:
    """TOML literal for the value types a Config holds (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
