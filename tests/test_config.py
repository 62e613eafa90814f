"""target.config: the loader, its defaults, and errors that name the key path."""
import os
import pickle
import textwrap

import pytest
import zmq.auth

from target.cli import main
from target.config import ConfigError, dump_config, load_config, parse_size
from target.identity import derive_naa, derive_serial

FULL = """
[server]
portals = ["127.0.0.1:3260", "[::1]:3261", "0.0.0.0"]
workers = 3
state_dir = "state"
log_level = "DEBUG"
nop_interval = 2.5
initial_r2t = false
immediate_data = true
busy_poll_us = 50
max_prelogin_connections = 100
max_prelogin_per_address = 10
hang_timeout = 4.5
log_format = "json"

[[target]]
iqn = "iqn.2026-11.org.example:disk1"
alias = "disk1"

[[target.lun]]
id = 0
path = "disk1.img"
size = "512MiB"
block_size = 4096
direct = true
write_cache = false
readonly = true
removable = true
sanitize_rate = "64MiB"
encryption_key = "keys/disk1.key"
physical_block_size = 32768
atomic_writes = false
write_queue_depth = 8
serial = "SER-1"
naa = "6001405AABBCCDDEEFF0011223344556"

[[target.lun]]
id = 7
backstore = "null"
size = 1048576

[[target]]
iqn = "eui.0123456789abcdef"

[[target.lun]]
id = 0
path = "/abs/other.img"
size = "2TB"
"""

MINIMAL = """
[[target]]
iqn = "iqn.2026-11.org.example:t"
[[target.lun]]
id = 0
path = "d.img"
size = 4096
"""


def write(tmp_path, text, name="ringtgt.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def lun_toml(**keys):
    """MINIMAL with the LUN's keys replaced by keys (TOML literals)."""
    lun = {"id": "0", "path": '"d.img"', "size": "4096"} | keys
    body = "\n".join(f"{k} = {v}" for k, v in lun.items() if v is not None)
    return f'[[target]]\niqn = "iqn.2026-11.org.example:t"\n[[target.lun]]\n{body}\n'


def rbd_toml(**keys):
    """A LUN of backstore "rbd" with its keys replaced by keys (TOML literals)."""
    return lun_toml(**({"path": None, "size": None, "backstore": '"rbd"', "pool": '"rbd"', "image": '"lun0"'} | keys))


def test_rbd_lun(tmp_path):
    text = rbd_toml(ceph_conf='"ceph/ceph.conf"', client_name='"client.iscsi"', keyring='"/etc/ceph/k"')
    lun = load_config(write(tmp_path, text)).targets[0].luns[0]
    assert (lun.backstore, lun.pool, lun.image, lun.size, lun.path) == ("rbd", "rbd", "lun0", None, None)
    assert (lun.ceph_conf, lun.client_name, lun.keyring) == (str(tmp_path / "ceph/ceph.conf"), "client.iscsi",
                                                            "/etc/ceph/k")
    assert lun.thin
    sized = load_config(write(tmp_path, rbd_toml(size='"1GiB"'), "sized.toml")).targets[0].luns[0]
    assert sized.size == 1 << 30 and sized.ceph_conf is None
    config = load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, dump_config(config), "dumped.toml")) == config


def test_full_config(tmp_path):
    config = load_config(write(tmp_path, FULL))
    server = config.server
    assert server.portals == (("127.0.0.1", 3260), ("::1", 3261), ("0.0.0.0", 3260))
    assert (server.workers, server.log_level, server.nop_interval, server.initial_r2t) == (3, "debug", 2.5, False)
    assert server.immediate_data is True
    assert server.busy_poll_us == 50.0
    assert (server.max_prelogin_connections, server.max_prelogin_per_address) == (100, 10)
    assert server.hang_timeout == 4.5
    assert server.log_format == "json"
    assert server.state_dir == str(tmp_path / "state")
    disk, null = config.targets[0].luns
    assert config.targets[0].alias == "disk1"
    assert disk.path == str(tmp_path / "disk1.img")
    assert (disk.size, disk.block_size, disk.backstore, disk.direct, disk.write_cache) == (
        512 << 20, 4096, "file", True, False)
    assert (disk.serial, disk.naa) == ("SER-1", "6001405aabbccddeeff0011223344556")
    assert (disk.readonly, disk.removable, disk.sanitize_rate) == (True, True, 64 << 20)
    assert disk.encryption_key == str(tmp_path / "keys" / "disk1.key") and disk.physical_block_size == 32768
    assert disk.atomic_writes is False and null.atomic_writes is None
    assert disk.write_queue_depth == 8 and null.write_queue_depth is None
    assert config.targets[1].luns[0].write_queue_depth is None
    assert (null.id, null.path, null.size, null.backstore) == (7, None, 1 << 20, "null")
    other = config.targets[1]
    assert other.alias is None
    assert other.luns[0].path == "/abs/other.img"
    assert other.luns[0].size == 2 * 10**12


def test_defaults_and_derived_identity(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    server = config.server
    assert server.portals == (("127.0.0.1", 3260),)
    assert server.workers == len(os.sched_getaffinity(0))
    assert (server.log_level, server.nop_interval, server.initial_r2t) == ("info", 30.0, True)
    assert server.immediate_data is False
    assert server.busy_poll_us == 0
    assert (server.max_prelogin_connections, server.max_prelogin_per_address) == (256, 32)
    assert server.hang_timeout == 10.0
    assert server.log_format == "text"
    assert server.state_dir == str(tmp_path / "var")
    lun = config.targets[0].luns[0]
    assert (lun.block_size, lun.backstore, lun.direct, lun.write_cache) == (512, "file", False, True)
    assert (lun.readonly, lun.removable, lun.sanitize_rate, lun.encryption_key) == (False, False, 0, None)
    assert lun.serial == derive_serial("iqn.2026-11.org.example:t", 0)
    assert lun.naa == derive_naa("iqn.2026-11.org.example:t", 0)


def test_embedded_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.server.portals == (("127.0.0.1", 3260),)
    (target,) = config.targets
    assert target.iqn == "iqn.2026-11.org.ringtgt:default"
    (lun,) = target.luns
    assert (lun.id, lun.size, lun.backstore) == (0, 1 << 30, "file")
    assert lun.path == str(tmp_path / "var" / "default-lun0.img")


def test_picklable_and_frozen(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError):
        config.server.workers = 1


def test_dump_round_trips(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert load_config(write(tmp_path, dump_config(config), "dumped.toml")) == config


def test_size_of_existing_file_when_size_omitted(tmp_path):
    (tmp_path / "d.img").write_bytes(b"\0" * 8192)
    assert load_config(write(tmp_path, lun_toml(size=None))).targets[0].luns[0].size == 8192


@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("1GiB", 1 << 30), ("512 MiB", 512 << 20), ("2TB", 2 * 10**12), ("1.5KiB", 1536),
    ("3kb", 3000), ("7b", 7),
])
def test_parse_size(text, size):
    assert parse_size(text, "k") == size


@pytest.mark.parametrize("text", ["", "GiB", "1.3B", "-1GiB", "1 GB extra", "1G", "0x10"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match=r"^k: must be bytes or a size"):
        parse_size(text, "k")


@pytest.mark.parametrize("text, message", [
    # structure and unknown keys
    ("[server]\nworkers = 2\n", "target: at least one [[target]] table is required"),
    ("[target]\niqn = 'iqn.2026-11.org.e:x'\n", "target: at least one [[target]] table is required"),
    ("bogus = 1\n" + MINIMAL, "top level: unknown key(s): bogus"),
    ("[server]\nportal = []\n" + MINIMAL, "server: unknown key(s): portal"),
    (MINIMAL.replace("id = 0", "id = 0\nsizes = 1"), "target[0].lun[0]: unknown key(s): sizes"),
    ('[[target]]\niqn = "iqn.2026-11.org.example:t"\n', "target[0].lun: at least one [[target.lun]]"),
    # server
    ("server = 1\n" + MINIMAL, "server: must be a table, got 1"),
    ("[server]\nworkers = 0\n" + MINIMAL, "server.workers: must be at least 1, got 0"),
    ("[server]\nworkers = '2'\n" + MINIMAL, "server.workers: must be an integer, got '2'"),
    ("[server]\nworkers = true\n" + MINIMAL, "server.workers: must be an integer, got True"),
    ("[server]\nlog_level = 'loud'\n" + MINIMAL, "server.log_level: must be one of debug, info, warning"),
    ("[server]\nlog_format = 'xml'\n" + MINIMAL, "server.log_format: must be one of text, json, got 'xml'"),
    ("[server]\nlog_format = 1\n" + MINIMAL, "server.log_format: must be a string"),
    ("[server]\nnop_interval = -1\n" + MINIMAL, "server.nop_interval: must be finite seconds >= 0"),
    ("[server]\nnop_interval = inf\n" + MINIMAL, "server.nop_interval: must be finite seconds >= 0"),
    ("[server]\ninitial_r2t = 'yes'\n" + MINIMAL, "server.initial_r2t: must be a boolean"),
    ("[server]\nimmediate_data = 1\n" + MINIMAL, "server.immediate_data: must be a boolean"),
    ("[server]\nbusy_poll_us = -1\n" + MINIMAL, "server.busy_poll_us: must be 0..1000 microseconds"),
    ("[server]\nbusy_poll_us = 5000\n" + MINIMAL, "server.busy_poll_us: must be 0..1000 microseconds"),
    ("[server]\nbusy_poll_us = 'fast'\n" + MINIMAL, "server.busy_poll_us: must be an integer or a number"),
    ("[server]\nmax_prelogin_connections = 0\n" + MINIMAL, "server.max_prelogin_connections: must be at least 1"),
    ("[server]\nmetrics = 'localhost'\n" + MINIMAL, "server.metrics: must be 'host:port' or '[ipv6]:port' for"),
    ("[server]\nmetrics = 9470\n" + MINIMAL, "server.metrics: must be a string, got 9470"),
    ("[server]\nmetrics = '127.0.0.1:0'\n" + MINIMAL, "server.metrics: port must be 1..65535, got 0"),
    ("[server]\nportals = ['127.0.0.1:3260']\nmetrics = '127.0.0.1:3260'\n" + MINIMAL,
     "server.metrics: '127.0.0.1:3260' is also an iSCSI portal"),
    ("[server]\nmax_prelogin_per_address = 1.5\n" + MINIMAL, "server.max_prelogin_per_address: must be an integer"),
    ("[server]\nhang_timeout = 1\n" + MINIMAL, "server.hang_timeout: must be finite seconds >= 2"),
    ("[server]\nhang_timeout = inf\n" + MINIMAL, "server.hang_timeout: must be finite seconds >= 2"),
    ("[server]\nhang_timeout = 'soon'\n" + MINIMAL, "server.hang_timeout: must be an integer or a number"),
    ("[server]\nportals = []\n" + MINIMAL, "server.portals: must list at least one host:port"),
    ("[server]\nportals = ['::1:3260']\n" + MINIMAL, "server.portals[0]: must be 'host:port' or '[ipv6]:port'"),
    ("[server]\nportals = ['h:1', 'h: 2']\n" + MINIMAL, "server.portals[1]: must be 'host:port'"),
    ("[server]\nportals = ['[zz]:1']\n" + MINIMAL, "server.portals[0]: 'zz' is not an IPv6 address"),
    ("[server]\nportals = ['h:70000']\n" + MINIMAL, "server.portals[0]: port must be 1..65535, got 70000"),
    ("[server]\nportals = ['h:1', 'h:1']\n" + MINIMAL, "server.portals: duplicate portal"),
    (f"[server]\nstate_dir = '/{'d' * 100}'\n" + MINIMAL, "server.state_dir: the coordinator's socket path"),
    # target
    (MINIMAL.replace("iqn.2026-11.org.example:t", "iqn.2026-13.org.example"), "target[0].iqn: must be an iSCSI name"),
    (MINIMAL.replace("iqn.2026-11.org.example:t", "iqn.2026-11.-bad"), "target[0].iqn: must be an iSCSI name"),
    (MINIMAL.replace("iqn.2026-11.org.example:t", "eui.0123"), "target[0].iqn: must be an iSCSI name"),
    (MINIMAL.replace("iqn.2026-11.org.example:t", "disk1"), "target[0].iqn: must be an iSCSI name"),
    (MINIMAL.replace(":t", ":" + "x" * 200), "target[0].iqn: longer than 223 bytes"),
    (MINIMAL.replace("[[target.lun]]", "alias = ''\n[[target.lun]]"), "target[0].alias: must be 1..255 printable"),
    (MINIMAL + MINIMAL.replace("d.img", "e.img"),
     "target[1].iqn: 'iqn.2026-11.org.example:t' already used by target[0].iqn"),
    # lun
    (lun_toml(id="256"), "target[0].lun[0].id: must be 0..255, got 256"),
    (lun_toml(id=None), "target[0].lun[0].id: required"),
    (lun_toml(block_size="520"), "target[0].lun[0].block_size: must be 512 or 4096, got 520"),
    (lun_toml(backstore='"tape"'), "target[0].lun[0].backstore: must be one of file, null, rbd, got 'tape'"),
    (rbd_toml(pool=None), 'target[0].lun[0].pool: required for backstore "rbd"'),
    (rbd_toml(image=None), 'target[0].lun[0].image: required for backstore "rbd"'),
    (rbd_toml(image='""'), "target[0].lun[0].image: must not be empty"),
    (rbd_toml(pool="3"), "target[0].lun[0].pool: must be a string"),
    (rbd_toml(client_name='"admin"'), "target[0].lun[0].client_name: must be a Ceph client name like 'client.iscsi'"),
    (rbd_toml(path='"d.img"'), 'target[0].lun[0].path: not used by backstore "rbd"'),
    (rbd_toml(encryption_key='"k"'), 'target[0].lun[0].encryption_key: only a file is stored encrypted'),
    (lun_toml(pool='"rbd"'), 'target[0].lun[0].pool: only used by backstore "rbd", not "file"'),
    (lun_toml(keyring='"k"'), 'target[0].lun[0].keyring: only used by backstore "rbd", not "file"'),
    (lun_toml(path=None), 'target[0].lun[0].path: required for backstore "file"'),
    (lun_toml(backstore='"null"'), 'target[0].lun[0].path: not used by backstore "null"'),
    (lun_toml(backstore='"null"', path=None, size=None), 'target[0].lun[0].size: required for backstore "null"'),
    (lun_toml(size=None), "target[0].lun[0].size: required: "),
    (lun_toml(size='"1 GB extra"'), "target[0].lun[0].size: must be bytes or a size like"),
    (lun_toml(size="1000"), "target[0].lun[0].size: must be a positive multiple of block_size 512, got 1000"),
    (lun_toml(size="0"), "target[0].lun[0].size: must be a positive multiple of block_size 512, got 0"),
    (lun_toml(direct='"yes"'), "target[0].lun[0].direct: must be a boolean, got 'yes'"),
    (lun_toml(write_cache="1"), "target[0].lun[0].write_cache: must be a boolean, got 1"),
    (lun_toml(readonly='"yes"'), "target[0].lun[0].readonly: must be a boolean, got 'yes'"),
    (lun_toml(removable="0"), "target[0].lun[0].removable: must be a boolean, got 0"),
    (lun_toml(atomic_writes='"no"'), "target[0].lun[0].atomic_writes: must be a boolean, got 'no'"),
    (rbd_toml(atomic_writes="false"), 'target[0].lun[0].atomic_writes: only an image file offers WRITE ATOMIC, not '
     'backstore "rbd"'),
    (lun_toml(write_queue_depth="0"), "target[0].lun[0].write_queue_depth: must be 1 to 1024, got 0"),
    (lun_toml(write_queue_depth="1025"), "target[0].lun[0].write_queue_depth: must be 1 to 1024, got 1025"),
    (lun_toml(write_queue_depth='"32"'), "target[0].lun[0].write_queue_depth: must be an integer, got '32'"),
    (rbd_toml(write_queue_depth="8"), 'target[0].lun[0].write_queue_depth: only a file or block device LUN has '
     'one, not backstore "rbd"'),
    (lun_toml(path=None, backstore='"null"', encryption_key='"k"'),
     'target[0].lun[0].encryption_key: only a file is stored encrypted, not backstore "null"'),
    (lun_toml(physical_block_size="1536"),
     "target[0].lun[0].physical_block_size: must be block_size 512 times a power of 2 up to 32768, got 1536"),
    (lun_toml(physical_block_size="256"), "target[0].lun[0].physical_block_size: must be block_size 512 times"),
    (lun_toml(sanitize_rate='"fast"'), "target[0].lun[0].sanitize_rate: must be bytes or a size like"),
    (lun_toml(sanitize_rate="-1"), "target[0].lun[0].sanitize_rate: must be bytes per second, 0 for no limit"),
    (lun_toml(serial='"has space"'), "target[0].lun[0].serial: must be 1..64 printable ASCII"),
    (lun_toml(serial='""'), "target[0].lun[0].serial: must be 1..64 printable ASCII"),
    (lun_toml(naa='"600140512345678"'), "target[0].lun[0].naa: must be 32 hex digits starting with 6"),
    (lun_toml(naa='"5' + "0" * 31 + '"'), "target[0].lun[0].naa: must be 32 hex digits starting with 6"),
    (MINIMAL + "[[target.lun]]\nid = 0\npath = 'e.img'\nsize = 512\n", "target[0].lun[1].id: duplicate LUN id 0"),
    (MINIMAL.replace("size = 4096", "size = 4096\nserial = 'S'") + "[[target.lun]]\nid = 1\npath = 'e.img'\n"
     "size = 512\nserial = 'S'\n", "target[0].lun[1].serial: 'S' already used by target[0].lun[0].serial"),
])
def test_errors_name_the_key(tmp_path, text, message):
    assert error_of(tmp_path, text).startswith(message)


def test_metrics_endpoint_is_off_unless_set_and_survives_a_dump(tmp_path):
    assert load_config(write(tmp_path, MINIMAL)).server.metrics is None
    config = load_config(write(tmp_path, "[server]\nmetrics = '[::1]:9470'\n" + MINIMAL))
    assert config.server.metrics == ("::1", 9470)
    assert load_config(write(tmp_path, dump_config(config))) == config


def test_iscsi_names_accepted_and_lowercased(tmp_path):
    for name in ("iqn.2026-11.org.Example:Disk.1", "iqn.1992-01.com.example", "eui.0123456789ABCDEF",
                 "naa.52004567ba64678d", "naa." + "6" * 32):
        config = load_config(write(tmp_path, MINIMAL.replace("iqn.2026-11.org.example:t", name)))
        assert config.targets[0].iqn == name.lower()


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="missing.toml: cannot read: No such file"):
        load_config(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(write(tmp_path, "[server\n", "bad.toml"))


def test_check_config_command(tmp_path, capsys):
    assert main(["check-config", "--config", write(tmp_path, MINIMAL)]) == 0
    assert 'iqn = "iqn.2026-11.org.example:t"' in capsys.readouterr().out
    assert main(["check-config", "--config", write(tmp_path, "[server]\nworkers = 0\n" + MINIMAL)]) == 2
    assert capsys.readouterr().err == "ringtgt: config error: server.workers: must be at least 1, got 0\n"


CLUSTER = """
[cluster]
node = "a"
listen = "tcp://192.0.2.1:5550"
peers = { b = "tcp://192.0.2.2:5550" }
curve_secret_key = "keys/a.key_secret"
peer_public_keys = { b = "keys/b.key" }
vips = ["192.0.2.100/24"]
vip_interface = "eth0"
takeover = "builtin"
dead_after = 0.5
"""


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir()
    for node in ("a", "b"):
        zmq.auth.create_certificates(directory, node)
    return directory


def test_cluster_section(tmp_path, keys):
    config = load_config(write(tmp_path, MINIMAL + CLUSTER))
    cluster = config.cluster
    assert (cluster.node, cluster.listen, cluster.peers) == ("a", "tcp://192.0.2.1:5550", (("b", "tcp://192.0.2.2:5550"),))
    assert cluster.curve_secret_key == str(tmp_path / "keys" / "a.key_secret")
    assert cluster.peer_public_keys == (("b", str(tmp_path / "keys" / "b.key")),)
    assert (cluster.vips, cluster.vip_addresses(), cluster.vip_interface) == (("192.0.2.100/24",), ("192.0.2.100",),
                                                                              "eth0")
    assert (cluster.takeover, cluster.dead_after) == ("builtin", 0.5)
    assert load_config(write(tmp_path, MINIMAL)).cluster is None
    again = load_config(write(tmp_path, dump_config(config), "dumped.toml"))
    assert again == config


@pytest.mark.parametrize("change, message", [
    (('node = "a"', 'node = "a b"'), "cluster.node: must be 1..32 letters"),
    (('listen = "tcp://192.0.2.1:5550"', 'listen = "192.0.2.1:5550"'), "cluster.listen: must be a ZeroMQ endpoint"),
    (('listen = "tcp://192.0.2.1:5550"', 'listen = "tcp://host:5550"'), "cluster.listen: must be a ZeroMQ endpoint"),
    (('{ b = "tcp://192.0.2.2:5550" }', '{ a = "tcp://192.0.2.2:5550" }'), "cluster.peers.a: must be another node"),
    (('{ b = "tcp://192.0.2.2:5550" }', '{}'), "cluster.peers: must name at least one peer"),
    (('curve_secret_key = "keys/a.key_secret"\n', ''), "cluster.curve_secret_key: curve_secret_key and peer_public"),
    (('{ b = "keys/b.key" }', '{ c = "keys/b.key" }'), "cluster.peer_public_keys: must name exactly the peers"),
    (('"192.0.2.100/24"', '"192.0.2.100"'), "cluster.vips[0]: must be an IPv4 address with its prefix"),
    (('takeover = "builtin"', 'takeover = "magic"'), "cluster.takeover: must be external or builtin"),
    (('vip_interface = "eth0"\n', ''), "cluster.takeover: builtin takeover needs vips and vip_interface"),
    (('dead_after = 0.5', 'dead_after = 0'), "cluster.dead_after: must be 0.05..60 seconds"),
    (('dead_after = 0.5', 'dead_after = 0.5\nquorum = 2'), "cluster: unknown key(s): quorum"),
    (('keys/a.key_secret', 'keys/nothing'), "cluster.curve_secret_key: cannot read the certificate"),
    (('keys/a.key_secret', 'keys/a.key'), "cluster.curve_secret_key: " + "{tmp}/keys/a.key holds no secret key"),
    (('keys/b.key', 'keys/c.key'), "cluster.peer_public_keys.b: cannot read the certificate"),
])
def test_cluster_errors_name_the_key(tmp_path, keys, change, message):
    assert message.format(tmp=tmp_path) in error_of(tmp_path, MINIMAL + CLUSTER.replace(*change))
