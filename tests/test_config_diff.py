"""target.config_diff: what a reload would change between two configurations, and what a running node refuses
(naming the key); `ringtgt check-config --diff --against OLD`."""
import textwrap

import pytest

from target.cli import main
from target.config import load_config
from target.config_diff import MAX_WORKERS, LunChange, config_diff

A = "iqn.2026-11.org.example:a"
B = "iqn.2026-11.org.example:b"
BASE = f"""
[server]
portals = ["127.0.0.1:3260"]
workers = 2
state_dir = "state"

[[target]]
iqn = "{A}"
allowed_initiators = ["iqn.2026-11.org.example:i1", "iqn.2026-11.org.example:i2"]

[target.chap]
username = "user"
secret = "a-secret-of-16ch"

[[target.lun]]
id = 0
path = "a0.img"
size = "1MiB"

[[target.lun]]
id = 1
path = "a1.img"
size = "1MiB"
"""


def load(tmp_path, text, name="new.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_config(str(path))


def diff_of(tmp_path, new, old=BASE):
    return config_diff(load(tmp_path, old, "old.toml"), load(tmp_path, new))


def test_the_same_file_changes_nothing(tmp_path):
    diff = diff_of(tmp_path, BASE)
    assert diff.empty and diff.lines() == [] and not diff.refused


def test_targets_and_luns_added_and_removed(tmp_path):
    new = BASE.replace('id = 1\npath = "a1.img"', 'id = 2\npath = "a2.img"') + f"""
[[target]]
iqn = "{B}"
[[target.lun]]
id = 0
backstore = "null"
size = 4096
"""
    diff = diff_of(tmp_path, new)
    assert (diff.targets_added, diff.targets_removed) == ([B], [])
    assert (diff.luns_added, diff.luns_removed) == ([(A, 2)], [(A, 1)])
    assert diff.luns_moved() == {A}
    assert not diff.refused
    assert diff.lines() == [f"+ target {B}", f"+ LUN 2 of {A}", f"- LUN 1 of {A}"]
    back = config_diff(load(tmp_path, new), load(tmp_path, BASE, "old.toml"))
    assert back.targets_removed == [B] and back.lines()[0] == f"- target {B} (its sessions end)"


def test_grown_and_readonly(tmp_path):
    new = BASE.replace('path = "a1.img"\nsize = "1MiB"', 'path = "a1.img"\nsize = "2MiB"\nreadonly = true')
    diff = diff_of(tmp_path, new)
    assert diff.luns_changed == [LunChange(A, 1, (1 << 20, 2 << 20), True)]
    assert diff.luns_moved() == set() and not diff.refused
    assert diff.lines() == [f"~ LUN 1 of {A}: size 1048576 -> 2097152 bytes", f"~ LUN 1 of {A}: readonly true"]


def test_shrinking_is_refused_naming_the_key(tmp_path):
    diff = diff_of(tmp_path, BASE.replace('path = "a1.img"\nsize = "1MiB"', 'path = "a1.img"\nsize = "512KiB"'))
    assert diff.refused == [f"target[0].lun[1].size: 524288 is below the LUN's 1048576 bytes ({A} LUN 1): "
                            "shrinking would drop the data beyond the new end"]
    assert diff.lines()[-1].startswith("! target[0].lun[1].size:")


@pytest.mark.parametrize("keys, key", [
    ('size = "1MiB"\nblock_size = 4096', "block_size"),
    ('size = "1MiB"\nserial = "OTHER"', "serial"),
    ('size = "1MiB"\nthin = false', "thin"),
])
def test_other_lun_keys_cannot_change_live(tmp_path, keys, key):
    new = BASE.replace('path = "a1.img"\nsize = "1MiB"', 'path = "a1.img"\n' + keys)
    diff = diff_of(tmp_path, new)
    assert len(diff.refused) == 1 and diff.refused[0].startswith(f"target[0].lun[1].{key}: ")
    assert "remove the LUN in one reload and add it back in the next, or restart" in diff.refused[0]


def test_portals_change_live_other_server_keys_and_cluster_need_a_restart(tmp_path):
    portals = diff_of(tmp_path, BASE.replace('"127.0.0.1:3260"', '"127.0.0.1:3261", "[::1]:3262"'))
    assert not portals.refused
    assert portals.portals_added == [("127.0.0.1", 3261), ("::1", 3262)]
    assert portals.portals_removed == [("127.0.0.1", 3260)]
    assert portals.lines() == ["+ portal 127.0.0.1:3261", "+ portal [::1]:3262",
                               "- portal 127.0.0.1:3260 (its sessions stay)"]
    new = BASE.replace("workers = 2", "workers = 2\nnop_interval = 5")
    diff = diff_of(tmp_path, new)
    assert [reason.split(":")[0] for reason in diff.refused] == ["server.nop_interval"]
    assert all("needs a restart" in reason for reason in diff.refused)
    cluster = diff_of(tmp_path, BASE + '[cluster]\nnode = "a"\nlisten = "tcp://127.0.0.1:9000"\n'
                                       '[cluster.peers]\nb = "tcp://127.0.0.1:9001"\n')
    assert cluster.refused == ["cluster: changed; [cluster] needs a restart (a reload changes targets, LUNs, "
                               "portals, workers and access only)"]


def test_workers_change_live_up_to_the_maximum(tmp_path):
    more = diff_of(tmp_path, BASE.replace("workers = 2", "workers = 3"))
    assert not more.refused and not more.empty and more.workers == (2, 3)
    assert more.lines() == ["~ workers 2 -> 3"]
    fewer = diff_of(tmp_path, BASE.replace("workers = 2", "workers = 1\nnop_interval = 5"))
    assert fewer.workers == (2, 1) and fewer.lines()[0] == "~ workers 2 -> 1"
    assert [reason.split(":")[0] for reason in fewer.refused] == ["server.nop_interval"]
    assert diff_of(tmp_path, BASE).workers is None
    beyond = diff_of(tmp_path, BASE.replace("workers = 2", f"workers = {MAX_WORKERS + 1}"))
    assert beyond.workers is None
    assert beyond.refused == [f"server.workers: 2 -> {MAX_WORKERS + 1}: a reload grows it to at most {MAX_WORKERS}; "
                              "more needs a restart"]


def test_access_changes(tmp_path):
    new = (BASE.replace('"iqn.2026-11.org.example:i1", ', "").replace("a-secret-of-16ch", "another-secret-16")
           .replace(f'iqn = "{A}"', f'iqn = "{A}"\nalias = "disk"'))
    diff = diff_of(tmp_path, new)
    assert not diff.refused and not diff.luns_changed
    assert diff.lines() == [f"~ target {A}: alias 'disk' (new logins)",
                            f"~ target {A}: allowed_initiators -iqn.2026-11.org.example:i1 (its sessions end)",
                            f"~ target {A}: chap changed (new logins)"]
    everyone = diff_of(tmp_path, BASE.replace('allowed_initiators = ["iqn.2026-11.org.example:i1", '
                                              '"iqn.2026-11.org.example:i2"]', ""))
    assert everyone.lines() == [f"~ target {A}: allowed_initiators removed: every initiator may log in"]
    discovery = diff_of(tmp_path, BASE + '\n[discovery.chap]\nusername = "d"\nsecret = "discovery-secret"\n')
    assert discovery.lines() == ["~ discovery CHAP (new logins)"]


def test_check_config_diff_against_a_file(tmp_path, capsys):
    (tmp_path / "old.toml").write_text(BASE)
    (tmp_path / "new.toml").write_text(BASE.replace('path = "a1.img"\nsize = "1MiB"', 'path = "a1.img"\nsize = "2MiB"'))
    args = ["check-config", "--diff", "--against", str(tmp_path / "old.toml"), "--config", str(tmp_path / "new.toml")]
    assert main(args) == 0
    assert capsys.readouterr().out == f"~ LUN 1 of {A}: size 1048576 -> 2097152 bytes\n"
    assert main(["check-config", "--diff", "--against", str(tmp_path / "old.toml"), "--config",
                 str(tmp_path / "old.toml")]) == 0
    assert capsys.readouterr().out == "no change\n"
    (tmp_path / "small.toml").write_text(BASE.replace('size = "1MiB"', 'size = "4KiB"'))
    assert main(["check-config", "--diff", "--against", str(tmp_path / "old.toml"), "--config",
                 str(tmp_path / "small.toml")]) == 1
    assert "a reload would be refused" in capsys.readouterr().err


def test_check_config_diff_without_a_running_node(tmp_path, capsys):
    (tmp_path / "new.toml").write_text(BASE)
    assert main(["check-config", "--diff", "--config", str(tmp_path / "new.toml")]) == 2
    assert "running.toml: missing: no `ringtgt serve` runs" in capsys.readouterr().err
