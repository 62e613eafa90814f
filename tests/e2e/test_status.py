"""`ringtgt status` against a running two-worker `ringtgt serve`: the supervisor, the workers with their real
pids, CPUs and sessions, the coordinator, the LUNs; a killed worker's restart counted; no coordinator, exit 1."""
import json
import os
import signal

import procfs
from harness import Lun, poll, ringtgt_binary, run, session

NAME = "iqn.2026-11.org.ringtgt:status"


def status(tgt, *args: str, check: bool = True):
    return run([ringtgt_binary(), "status", "--config", str(tgt.config), *args], check=check, merge_stderr=False)


def reported(tgt) -> dict:
    return json.loads(status(tgt, "--json").stdout)


def test_status_shows_the_node_s_processes_luns_and_sessions(ringtgt):
    tgt = ringtgt(workers=2, luns=[Lun(0, "64MiB"), Lun(1, "8MiB", 4096)])
    with session(tgt, NAME):
        now = poll(lambda: (s := reported(tgt))["sessions"] == 1 and len(s["workers"]) == 2 and s,
                   timeout=30, what="the session and both workers in the status")
        print(f"status: {json.dumps(now)}")
        assert now["supervisor"]["pid"] == tgt.proc.pid and now["supervisor"]["uptime"] >= 0
        assert now["coordinator"] == {**now["coordinator"], "pid": tgt.coordinator(), "restarts": 0}
        workers = now["workers"]
        assert [w["index"] for w in workers] == [0, 1]
        assert sorted(w["pid"] for w in workers) == sorted(tgt.workers)
        for worker in workers:
            assert worker["cpus"] == procfs.cpus_allowed(worker["pid"]) and worker["restarts"] == 0, worker
        assert sum(w["sessions"] for w in workers) == 1 and sum(w["connections"] for w in workers) == 1, workers
        assert now["peers"] == []
        assert [(lun["lun"], lun["size"], lun["state"], lun["sanitizing"], lun["ejected"]) for lun in now["luns"]] \
            == [(0, 64 << 20, "online", False, False), (1, 8 << 20, "online", False, False)]
        assert {lun["path"] for lun in now["luns"]} == {str(tgt.lun_path(0)), str(tgt.lun_path(1))}

        table = status(tgt).stdout.splitlines()
        print("\n".join(table))
        assert table[1].split()[:3] == ["supervisor", "pid", str(tgt.proc.pid)], table
        assert ["WORKER", "PID", "CPUS", "UPTIME", "RESTARTS", "CONNECTIONS", "SESSIONS"] in [r.split() for r in table]
        assert ["TARGET", "LUN", "BACKSTORE", "PATH", "SIZE", "STATE", "SANITIZING", "EJECTED"] \
            in [r.split() for r in table]
        assert table[-1] == "1 session", table


def test_restarted_worker_and_coordinator_show_new_pids_and_one_restart(ringtgt):
    tgt = ringtgt(workers=2)
    listed = poll(lambda: len(workers := reported(tgt)["workers"]) == 2 and workers, timeout=30,
                  what="both workers in the status")
    before = {worker["index"]: worker["pid"] for worker in listed}
    victim = before[1]
    os.kill(victim, signal.SIGKILL)
    after = poll(lambda: (by_index := {w["index"]: w for w in reported(tgt)["workers"]}).keys() == {0, 1}
                 and by_index[1]["pid"] != victim and by_index, timeout=30, what="worker 1 restarted under a new pid")
    print(f"worker 1: pid {victim} -> {after[1]['pid']}, restarts {after[1]['restarts']}")
    assert after[1]["restarts"] == 1 and after[0] == {**after[0], "pid": before[0], "restarts": 0}
    poll(lambda: after[1]["pid"] in tgt.listening_children(), timeout=30, what="the new worker to listen")
    tgt.workers = tgt.listening_children()      # tgt.coordinator() is the child that is none of these

    coordinator = tgt.coordinator()
    assert coordinator is not None
    os.kill(coordinator, signal.SIGKILL)
    restarted = poll(lambda: (proc := status(tgt, "--json", check=False)).returncode == 0
                     and (c := json.loads(proc.stdout)["coordinator"])["pid"] != coordinator and c,
                     timeout=30, what="a new coordinator answering")
    print(f"coordinator: pid {coordinator} -> {restarted['pid']}, restarts {restarted['restarts']}")
    assert restarted == {**restarted, "pid": tgt.coordinator(), "restarts": 1}


def test_a_lun_whose_image_is_gone_shows_offline_with_the_reason(ringtgt):
    tgt = ringtgt(workers=2, luns=[Lun(0), Lun(1, "8MiB")])
    tgt.lun_path(1).unlink()
    luns = poll(lambda: (luns := reported(tgt)["luns"])[1]["state"] == "offline" and luns, timeout=30,
                what="LUN 1 offline in the status")
    print(f"LUN 1: {luns[1]['reason']}")
    assert luns[0]["state"] == "online" and luns[0]["reason"] is None
    assert str(tgt.lun_path(1)) in luns[1]["reason"]
    assert [row.split()[5] for row in status(tgt).stdout.splitlines() if row.startswith(tgt.iqn)] == \
        ["online", "offline"]


def test_status_without_a_running_server_says_so(tmp_path):
    config = tmp_path / "idle.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n[[target]]\niqn = "{NAME}"\n'
                      f'[[target.lun]]\nid = 0\nbackstore = "null"\nsize = "1MiB"\n')
    proc = run([ringtgt_binary(), "status", "--config", str(config)], check=False, merge_stderr=False)
    print(f"status without a server: exit {proc.returncode}: {proc.stderr.strip()}")
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "no coordinator socket at ipc://" in proc.stderr
