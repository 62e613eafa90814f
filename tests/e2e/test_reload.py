"""Live reconfiguration against a real `ringtgt serve` (two workers): `ringtgt reload` and SIGHUP apply a new file;
a verified fio job on a target whose LUNs do not change runs through the reloads with no error and no new login;
a LUN added is announced (REPORTED LUNS DATA HAS CHANGED) and listed, a LUN removed answers LOGICAL UNIT NOT
SUPPORTED; an initiator taken off the ACL loses its session; a bad file is refused whole (exit 2) and the node keeps
serving; a LUN made readonly refuses writes; CHAP added holds for new logins only; a portal added is served by
every worker, one removed accepts no more (its sessions stay); children restarted later serve the reloaded
configuration; systemd hears RELOADING=1 then READY=1; `workers` grown starts pinned workers that accept logins,
shrunk stops the highest ones and leaves the others' sessions alone (a verified fio job on a kept worker runs through
both with no error and no new login)."""
import json
import os
import signal
import socket
import struct

from harness import (HOST, FioRun, Lun, connect_to_worker, connections_on_every_worker, fio_json, free_port,
                     poll, ringtgt_binary, run, sessions_on_every_worker, worker_of, write_fio_job)

import initiator as I
import procfs

OTHER = "iqn.2026-11.org.ringtgt:other"
EXTRA = "iqn.2026-11.org.ringtgt:extra"
FIO_INITIATOR = "iqn.2026-11.org.ringtgt:fio-reload"
BS = 512
DATA_PROTECT = 0x07


def other_target(tgt, luns=(0,), sizes=None, acl: list[str] | None = None) -> str:
    """TOML of the second target: null LUNs (`luns`), an optional ACL."""
    lines = ["[[target]]", f'iqn = "{OTHER}"']
    if acl is not None:
        lines.append(f"allowed_initiators = {json.dumps(acl)}")
    for lun in luns:
        lines += ["[[target.lun]]", f"id = {lun}", f'path = "{tgt.dir / f"other{lun}.img"}"',
                  f'size = "{(sizes or {}).get(lun, "4MiB")}"']
    return "\n".join(lines) + "\n"


def write_config(tgt, *tables: str) -> None:
    """The configuration the harness wrote (the test target and its LUNs) followed by `tables`."""
    base = tgt.dir / "harness.toml"
    if not base.exists():
        base.write_text(tgt.config.read_text())
    tgt.config.write_text(base.read_text() + "\n" + "\n".join(tables))


def reload(tgt, config=None):
    return run([ringtgt_binary(), "reload", "--config", str(config or tgt.config)], check=False)


def sessions(tgt) -> list[dict]:
    return json.loads(run([ringtgt_binary(), "sessions", "--json", "--config", str(tgt.config)]).stdout)["sessions"]


def _slow_verified_fio_job(tgt, tmp_path):
    """Verified 4k random writes that last over ten seconds whatever the load (1024 writes 10 ms apart, then their
    verification), while reloads take a second or two."""
    return write_fio_job(tmp_path / "verify.fio", tgt.url(0), rw="randwrite", bs="4k", size="4MiB",
                         verify="crc32c", verify_fatal=1, thinktime=10000, initiator=FIO_INITIATOR)


def _fio_sessions(tgt) -> list:
    return [s for s in sessions(tgt) if s["initiator"] == FIO_INITIATOR]


def _check_fio_kept_its_session(what: str, fio: FioRun, status: int | None, report, before: list, after: list) -> None:
    """fio ran through `what` with no error, all it wrote read back and verified, in the session it had before."""
    job = fio_json(report)["jobs"][0]
    print(f"{what}: fio exit {status}, err {job['error']}, written {job['write']['io_bytes']}, verified "
          f"{job['read']['io_bytes']} bytes; sessions before {[(s['isid'], s['tsih']) for s in before]}, after "
          f"{[(s['isid'], s['tsih']) for s in after]}")
    assert status == 0 and job["error"] == 0, fio.text() + report.read_text()
    assert job["read"]["io_bytes"] == job["write"]["io_bytes"] > 0     # all written, all verified
    assert [(s["isid"], s["tsih"], s["login_time"]) for s in after] == \
        [(s["isid"], s["tsih"], s["login_time"]) for s in before]


def report_luns(ini: I.Initiator, target_lun: int = 0) -> list[int]:
    result = ini.scsi(bytes([0xA0, 0, 0, 0, 0, 0]) + struct.pack(">I", 4096) + bytes(2), lun=target_lun,
                      read_length=4096)
    assert result.status == I.GOOD, result.sense
    length = struct.unpack_from(">I", result.data)[0]
    return [result.data[8 + i + 1] for i in range(0, length, 8)]


def sense_of(result: I.ScsiResult) -> tuple[int, int, int]:
    assert result.status == I.CHECK_CONDITION and result.sense is not None, result
    return result.sense.key, result.sense.asc, result.sense.ascq


def login(tgt, iqn: str, name: str) -> I.Initiator:
    ini = I.Initiator.connect(HOST, tgt.port)
    ini.login(iqn, initiator_name=name)
    ini.clear_unit_attentions()
    return ini


def test_fio_runs_through_reloads_of_other_targets_without_a_new_login(ringtgt, tmp_path):
    tgt = ringtgt(luns=[Lun(0, "16MiB")], workers=2)
    write_config(tgt, other_target(tgt))
    assert reload(tgt).returncode == 0
    variants = [
        other_target(tgt, luns=(0, 1)),                                            # a LUN added
        other_target(tgt, luns=(0, 1), sizes={1: "8MiB"}, acl=[FIO_INITIATOR]),     # grown, an ACL
        other_target(tgt, luns=(1,), sizes={1: "8MiB"}) + f'[[target]]\niqn = "{EXTRA}"\n[[target.lun]]\nid = 0\n'
        'backstore = "null"\nsize = "1MiB"\n',                                   # a LUN removed, a target added
        other_target(tgt, luns=(1,), sizes={1: "8MiB"}),                          # the target removed again
    ]
    job = _slow_verified_fio_job(tgt, tmp_path)
    report = tmp_path / "fio.json"
    with FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report}") as fio:
        before = poll(lambda: _fio_sessions(tgt), timeout=30, what="fio's session")
        outputs = []
        for variant in variants:
            write_config(tgt, variant)
            done = reload(tgt)
            outputs.append(done.stdout.strip())
            assert done.returncode == 0, done.stdout
            assert fio.proc.poll() is None, f"fio ended before the reloads did:\n{fio.text()}"
        tgt.proc.send_signal(signal.SIGHUP)             # the same file again: nothing changes
        poll(lambda: "applied: no change" in tgt.stderr(), timeout=30, what="the SIGHUP reload")
        after = _fio_sessions(tgt)
        status = fio.wait(timeout=600)
    _check_fio_kept_its_session(f"{len(variants)} reloads + SIGHUP while fio ran: {outputs}", fio, status, report,
                                before, after)


def test_luns_added_and_removed_are_announced_and_the_acl_ends_sessions(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    write_config(tgt, other_target(tgt))
    assert reload(tgt).returncode == 0
    kept, dropped = "iqn.2026-11.org.ringtgt:kept", "iqn.2026-11.org.ringtgt:dropped"
    ini = login(tgt, OTHER, kept)
    off = login(tgt, OTHER, dropped)
    try:
        assert report_luns(ini) == [0]
        write_config(tgt, other_target(tgt, luns=(0, 1)))
        added = reload(tgt)
        print(f"LUN 1 added: exit {added.returncode}: {added.stdout.strip()}")
        assert added.returncode == 0 and f"+ LUN 1 of {OTHER}" in added.stdout
        assert sense_of(ini.scsi(I.CDB_TEST_UNIT_READY)) == (I.UNIT_ATTENTION, 0x3F, 0x0E)
        assert report_luns(ini) == [0, 1]
        ini.clear_unit_attentions(lun=1)
        data = os.urandom(8 * BS)
        assert ini.write(10, data, block_size=BS, lun=1).status == I.GOOD
        assert ini.read(10, 8, block_size=BS, lun=1).data == data

        logging_in = I.Initiator.connect(HOST, tgt.port)          # connected, not logged in yet
        write_config(tgt, other_target(tgt, luns=(0,), acl=[kept]))
        removed = reload(tgt)
        print(f"LUN 1 removed, {dropped} off the ACL: exit {removed.returncode}: {removed.stdout.strip()}")
        assert removed.returncode == 0
        assert sense_of(ini.scsi(I.CDB_TEST_UNIT_READY)) == (I.UNIT_ATTENTION, 0x3F, 0x0E)
        assert report_luns(ini) == [0]
        gone = ini.read(10, 8, block_size=BS, lun=1)
        print(f"READ on the removed LUN: sense {sense_of(gone)}")
        assert sense_of(gone) == (I.ILLEGAL_REQUEST, 0x25, 0x00)
        poll(lambda: _closed(off), timeout=30, what=f"the session of {dropped} to end")
        poll(lambda: _closed(logging_in), timeout=30, what="the connection still logging in to be closed")
        logging_in.close()
        names = {s["initiator"] for s in sessions(tgt)}
        assert kept in names and dropped not in names, names
        refused = I.Initiator.connect(HOST, tgt.port)
        with refused:
            try:
                refused.login(OTHER, initiator_name=dropped)
            except I.LoginFailed as e:
                print(f"login of {dropped} now: {e}")
                assert (e.status_class, e.status_detail) == (0x02, 0x02)       # initiator error, not authorized
            else:
                raise AssertionError(f"{dropped} logged in although the ACL no longer lists it")
    finally:
        ini.close()
        off.close()


def _closed(ini: I.Initiator) -> bool:
    ini.sock.settimeout(1)
    try:
        return ini.sock.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_bad_or_refused_file_changes_nothing_and_the_node_keeps_serving(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    ini = login(tgt, tgt.iqn, "iqn.2026-11.org.ringtgt:keeps")
    try:
        bad = tgt.dir / "bad.toml"
        bad.write_text(tgt.config.read_text().replace("block_size = 512", "block_size = 520"))
        broken = reload(tgt, bad)
        print(f"bad file: exit {broken.returncode}: {broken.stdout.strip()}")
        assert broken.returncode == 2 and "target[0].lun[0].block_size: must be 512 or 4096" in broken.stdout
        good = tgt.config.read_text()
        tgt.config.write_text(bad.read_text())                  # the file `serve` runs with, broken: SIGHUP
        tgt.proc.send_signal(signal.SIGHUP)
        poll(lambda: "refused, nothing changed: config error: target[0].lun[0].block_size" in tgt.stderr(),
             timeout=30, what="the SIGHUP reload's refusal")
        tgt.config.write_text(good)
        smaller = tgt.dir / "smaller.toml"
        smaller.write_text(tgt.config.read_text().replace('size = "8MiB"', 'size = "4MiB"'))
        shrink = reload(tgt, smaller)
        print(f"shrink: exit {shrink.returncode}: {shrink.stdout.strip()}")
        assert shrink.returncode == 1 and "target[0].lun[0].size: 4194304 is below the LUN's 8388608" in shrink.stdout
        assert "!" not in shrink.stdout.split("ringtgt: reload refused")[0]     # the reason is said once
        nops = tgt.dir / "nops.toml"
        nops.write_text(tgt.config.read_text().replace("workers = 2", "workers = 2\nnop_interval = 5"))
        restart = reload(tgt, nops)
        print(f"nop_interval 30 -> 5: exit {restart.returncode}: {restart.stdout.strip()}")
        assert restart.returncode == 1 and "server.nop_interval: 30.0 -> 5.0 needs a restart" in restart.stdout
        diff = run([ringtgt_binary(), "check-config", "--diff", "--config", str(smaller)], check=False)
        assert diff.returncode == 1 and "! target[0].lun[0].size" in diff.stdout
        assert ini.read_capacity16() == (8 << 20 >> 9, BS)
        assert ini.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD            # nothing announced
        data = os.urandom(4 * BS)
        assert ini.write(0, data, block_size=BS).status == I.GOOD and ini.read(0, 4, block_size=BS).data == data
        writable = tgt.config.read_text()
        tgt.config.write_text(writable.replace("block_size = 512", "block_size = 512\nreadonly = true"))
        made_readonly = reload(tgt)
        print(f"readonly: exit {made_readonly.returncode}: {made_readonly.stdout.strip()}")
        assert made_readonly.returncode == 0 and "readonly true" in made_readonly.stdout
        assert sense_of(ini.write(0, data, block_size=BS)) == (DATA_PROTECT, 0x27, 0x00)
        assert ini.read(0, 4, block_size=BS).data == data
        tgt.config.write_text(writable)
        assert reload(tgt).returncode == 0
        assert ini.write(0, data, block_size=BS).status == I.GOOD
    finally:
        ini.close()


def test_sighup_grows_a_lun_between_reloading_and_ready(ringtgt, tmp_path):
    name = f"ringtgt-test-reload-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2, env={"NOTIFY_SOCKET": "@" + name})
        while "READY=1" not in sock.recv(4096).decode():
            pass
        ini = login(tgt, tgt.iqn, "iqn.2026-11.org.ringtgt:hup")
        try:
            tgt.config.write_text(tgt.config.read_text().replace('size = "8MiB"', 'size = "16MiB"'))
            tgt.proc.send_signal(signal.SIGHUP)
            reloading, ready = sock.recv(4096).decode(), sock.recv(4096).decode()
            print(f"datagrams at SIGHUP: {reloading!r}, {ready!r}")
            states = reloading.split("\n")
            assert states[0] == "RELOADING=1" and states[1].startswith("MONOTONIC_USEC=")
            assert states[2] == f"STATUS=reloading {tgt.config}"
            assert ready == f"READY=1\nSTATUS=serving 2 workers on {tgt.portal}"
            assert sense_of(ini.scsi(I.CDB_TEST_UNIT_READY)) == (I.UNIT_ATTENTION, 0x2A, 0x09)
            assert ini.read_capacity16() == (16 << 20 >> 9, BS)
            assert os.path.getsize(tgt.lun_path(0)) == 16 << 20
            tgt.config.write_text(tgt.config.read_text().replace("workers = 2", "workers = 3"))
            tgt.proc.send_signal(signal.SIGHUP)
            reloading, ready = sock.recv(4096).decode(), sock.recv(4096).decode()
            print(f"datagrams at SIGHUP, workers 2 -> 3: {reloading!r}, {ready!r}")
            assert reloading.startswith("RELOADING=1\n")
            assert ready == f"READY=1\nSTATUS=serving 3 workers on {tgt.portal}"
            assert len(tgt.listening_children()) == 3                       # READY=1 once the new one listens
            assert ini.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD
        finally:
            ini.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_portal_added_is_served_and_one_removed_accepts_no_more(ringtgt):
    """By a host name, which the listener's own address does not repeat: a removed portal is the configured one."""
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    port = free_port()
    original = tgt.config.read_text()
    both = f'portals = ["{tgt.portal}", "localhost:{port}"]'
    tgt.config.write_text(original.replace(f'portals = ["{tgt.portal}"]', both))
    added = reload(tgt)
    print(f"portal added: exit {added.returncode}: {added.stdout.strip()}")
    assert added.returncode == 0 and f"+ portal localhost:{port}" in added.stdout
    poll(lambda: len(procfs.tcp_sockets(port, procfs.TCP_LISTEN)) == 2, timeout=30,
         what="both workers listening on the new portal")
    ini = I.Initiator.connect(HOST, port)
    try:
        ini.login(tgt.iqn, initiator_name="iqn.2026-11.org.ringtgt:portal")
        ini.clear_unit_attentions()
        tgt.config.write_text(original)
        removed = reload(tgt)
        print(f"portal removed: exit {removed.returncode}: {removed.stdout.strip()}")
        assert removed.returncode == 0 and f"- portal localhost:{port} (its sessions stay)" in removed.stdout
        poll(lambda: _refused(port), timeout=30, what=f"{HOST}:{port} to refuse connections")
        data = os.urandom(4 * BS)
        assert ini.write(8, data, block_size=BS).status == I.GOOD and ini.read(8, 4, block_size=BS).data == data
        ini.logout()
    finally:
        ini.close()
    with I.Initiator.connect(HOST, tgt.port) as other:                 # the first portal serves on
        other.login(tgt.iqn, initiator_name="iqn.2026-11.org.ringtgt:portal2")


def test_children_restarted_after_a_reload_serve_the_reloaded_configuration(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    write_config(tgt, other_target(tgt, luns=(0, 1)))
    assert reload(tgt).returncode == 0
    killed = tgt.workers[0]
    coordinator = tgt.coordinator()
    os.kill(killed, signal.SIGKILL)
    os.kill(coordinator, signal.SIGKILL)
    tgt.workers = poll(lambda: (pids := tgt.listening_children()) and len(pids) == 2 and killed not in pids and pids,
                       timeout=30, what="the killed worker's restart")
    poll(lambda: tgt.coordinator() not in (None, coordinator), timeout=30, what="the coordinator's restart")
    luns = poll(lambda: (done := run([ringtgt_binary(), "status", "--json", "--config", str(tgt.config)],
                                     check=False, merge_stderr=False)).returncode == 0 and done,
                timeout=30, what="the restarted coordinator's status")
    listed = [(lun["target"], lun["lun"]) for lun in json.loads(luns.stdout)["luns"]]
    print(f"after SIGKILL of worker {killed} and the coordinator: status lists {listed}")
    assert listed == [(tgt.iqn, 0), (OTHER, 0), (OTHER, 1)]
    for index, ini in enumerate(connections_on_every_worker(tgt).values()):
        with ini:
            ini.login(OTHER, initiator_name=f"iqn.2026-11.org.ringtgt:restarted{index}")
            ini.clear_unit_attentions()
            assert report_luns(ini) == [0, 1]


def test_chap_changes_apply_to_new_logins_only(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    name = "iqn.2026-11.org.ringtgt:chap"
    ini = login(tgt, tgt.iqn, name)
    try:
        base = tgt.config.read_text()
        table = '[target.chap]\nusername = "reloaded"\nsecret = "a-reloaded-secret"\n'
        tgt.config.write_text(base.replace(f'iqn = "{tgt.iqn}"\n', f'iqn = "{tgt.iqn}"\n{table}'))
        done = reload(tgt)
        print(f"CHAP added: exit {done.returncode}: {done.stdout.strip()}")
        assert done.returncode == 0 and "chap added (new logins)" in done.stdout
        assert ini.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD          # the session stays
        with I.Initiator.connect(HOST, tgt.port) as without:
            try:
                without.login(tgt.iqn, initiator_name=name + "-2")
            except I.LoginFailed as e:
                print(f"a new login without CHAP: {e}")
                assert e.status_class == 0x02
            else:
                raise AssertionError("a login without CHAP succeeded after CHAP was configured")
        with I.Initiator.connect(HOST, tgt.port) as chap:
            chap.login(tgt.iqn, initiator_name=name + "-3", chap=("reloaded", "a-reloaded-secret"))
    finally:
        ini.close()


def node_status(tgt) -> dict:
    return json.loads(run([ringtgt_binary(), "status", "--json", "--config", str(tgt.config)]).stdout)


def worker_pids(tgt) -> dict[int, int]:
    """Index -> pid of the workers connected to the coordinator (`ringtgt status`)."""
    return {worker["index"]: worker["pid"] for worker in node_status(tgt)["workers"]}


def test_workers_grown_then_shrunk_by_reloads(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "8MiB")], workers=2)
    cpus = sorted(os.sched_getaffinity(0))
    before = poll(lambda: pids if len(pids := worker_pids(tgt)) == 2 else None, timeout=30,
                  what="both workers connected to the coordinator")
    tgt.config.write_text(tgt.config.read_text().replace("workers = 2", "workers = 3"))
    diff = run([ringtgt_binary(), "check-config", "--diff", "--config", str(tgt.config)])
    assert diff.stdout == "~ workers 2 -> 3\n"
    grown = reload(tgt)
    print(f"2 -> 3: exit {grown.returncode}: {grown.stdout.strip()}")
    assert grown.returncode == 0 and grown.stdout == "~ workers 2 -> 3\n", grown.stderr
    after = worker_pids(tgt)                        # `reload` answered once the new worker was connected
    assert sorted(after) == [0, 1, 2] and (after[0], after[1]) == (before[0], before[1])
    new = after[2]
    assert os.sched_getaffinity(new) == {cpus[2 % len(cpus)]}
    assert new in tgt.listening_children()
    tgt.workers = list(after.values())
    _, ini = connect_to_worker(tgt, lambda p: p == new)     # SO_REUSEPORT gives it connections too
    data = os.urandom(4 * BS)
    with ini:
        ini.login(tgt.iqn, initiator_name="iqn.2026-11.org.ringtgt:new-worker")
        ini.clear_unit_attentions()
        assert ini.write(16, data, block_size=BS).status == I.GOOD
        assert ini.read(16, 4, block_size=BS).data == data
        ini.logout()

    held = sessions_on_every_worker(tgt, "iqn.2026-11.org.ringtgt:three")
    try:
        owners = [worker_of(tgt, ini.sock) for ini in held]
        kept = held[owners.index(after[0])]
        tgt.config.write_text(tgt.config.read_text().replace("workers = 3", "workers = 1"))
        shrunk = reload(tgt)
        print(f"3 -> 1: exit {shrunk.returncode}: {shrunk.stdout.strip()}")
        assert shrunk.returncode == 0 and shrunk.stdout == "~ workers 3 -> 1\n", shrunk.stderr
        assert worker_pids(tgt) == {0: after[0]}       # `reload` answered once the dropped ones were gone
        poll(lambda: not procfs.alive(after[1]) and not procfs.alive(after[2]), timeout=30,
             what="the dropped workers to exit")
        tgt.workers = [after[0]]
        assert tgt.listening_children() == [after[0]]
        listed = [(s["initiator"], s["tsih"]) for s in sessions(tgt)]
        assert listed == [(f"iqn.2026-11.org.ringtgt:three{held.index(kept)}", kept.tsih)]
        assert kept.scsi(I.CDB_TEST_UNIT_READY).status == I.GOOD         # the same session: no unit attention
        assert kept.read(16, 4, block_size=BS).data == data
        with I.Initiator.connect(HOST, tgt.port) as ini:
            ini.login(tgt.iqn, initiator_name="iqn.2026-11.org.ringtgt:after-shrink")
            ini.clear_unit_attentions()
            assert ini.read(16, 4, block_size=BS).data == data
            ini.logout()
        assert [(w["index"], w["pid"]) for w in node_status(tgt)["workers"]] == [(0, after[0])]
        stats = json.loads(run([ringtgt_binary(), "stats", "--json", "--config", str(tgt.config)]).stdout)
        assert [w["index"] for w in stats["workers"]] == [0]
        assert all(s["initiator"].endswith(f"three{held.index(kept)}") for s in stats["sessions"])
        print(f"workers {before} -> {after} -> {worker_pids(tgt)}; kept session TSIH {kept.tsih} on worker 0; "
              f"stats workers {[w['index'] for w in stats['workers']]}")
    finally:
        for ini in held:
            ini.close()


def test_fio_on_a_kept_worker_runs_through_workers_added_and_dropped(ringtgt, tmp_path):
    """fio logs in while worker 0 is the only one, so its session stays there through 1 -> 2 -> 3 -> 1 workers."""
    tgt = ringtgt(luns=[Lun(0, "16MiB")], workers=1)
    job = _slow_verified_fio_job(tgt, tmp_path)
    report = tmp_path / "fio.json"
    with FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report}") as fio:
        before = poll(lambda: _fio_sessions(tgt), timeout=30, what="fio's session")
        steps = ((1, 2), (2, 3), (3, 1))
        for previous, count in steps:
            tgt.config.write_text(tgt.config.read_text().replace(f"workers = {previous}", f"workers = {count}"))
            done = reload(tgt)
            assert done.returncode == 0 and done.stdout == f"~ workers {previous} -> {count}\n", done.stderr
            assert sorted(worker_pids(tgt)) == list(range(count))
            assert fio.proc.poll() is None, f"fio ended before the reloads did:\n{fio.text()}"
        after = _fio_sessions(tgt)
        status = fio.wait(timeout=600)
    _check_fio_kept_its_session(f"workers 1 -> {' -> '.join(str(count) for _, count in steps)} while fio ran", fio,
                                status, report, before, after)


def test_a_slow_preparation_keeps_the_node_answering_and_refuses_a_second_reload(ringtgt, tmp_path):
    """A reload adding an RBD LUN of a cluster that never answers (nothing listens at its monitor's address): the
    coordinator prepares it aside for the cluster's 10 s connect deadline, meanwhile answers `ringtgt sessions`,
    refuses a second reload, and the supervisor restarts a worker killed then; the reload is then refused naming the
    LUN, and nothing changed."""
    tgt = ringtgt(workers=2, luns=[Lun(0, "4MiB")])
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text(f"[global]\nmon host = v2:127.0.0.1:{free_port()}\n")
    write_config(tgt, "[[target]]", f'iqn = "{EXTRA}"', "[[target.lun]]", "id = 0", 'backstore = "rbd"',
                 'pool = "rbd"', 'image = "nowhere"', 'size = "4MiB"', f'ceph_conf = "{ceph_conf}"')
    tgt.proc.send_signal(signal.SIGHUP)
    poll(lambda: "preparing it" in tgt.stderr(), timeout=30, what="the reload's preparation to start")
    assert sessions(tgt) == []                      # the coordinator answers
    second = reload(tgt)
    print(f"second reload: exit {second.returncode}: {second.stdout.strip()}")
    assert second.returncode == 1 and "still being prepared" in second.stdout
    before = worker_pids(tgt)
    os.kill(before[1], signal.SIGKILL)              # the supervisor's loop turns during the reload
    poll(lambda: worker_pids(tgt).get(1) not in (None, before[1]), timeout=30, what="worker 1 restarted")
    assert "preparing it" in tgt.stderr() and "refused" not in tgt.stderr()   # still preparing meanwhile
    poll(lambda: "refused, nothing changed" in tgt.stderr(), timeout=90, what="the reload's refusal")
    print(tgt.stderr().splitlines()[-1])
    assert f"{EXTRA} LUN 0" in tgt.stderr()
    assert {lun["target"] for lun in node_status(tgt)["luns"]} == {tgt.iqn}
