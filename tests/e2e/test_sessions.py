"""`ringtgt sessions` against a running two-worker `ringtgt serve`: the coordinator's session registry as the
workers report it, through logouts, a worker's death and a coordinator restart."""
import json
import os
import signal

from harness import HOST, connect_to_worker, connections_on_every_worker, poll, ringtgt_binary, run

NAME = "iqn.2026-11.org.ringtgt:sessions"


def sessions(tgt, *args: str, check: bool = True):
    return run([ringtgt_binary(), "sessions", "--config", str(tgt.config), *args], check=check,
               merge_stderr=False)


def isid(ini) -> int:
    return int.from_bytes(ini.isid, "big")


def listed(tgt) -> list[dict]:
    return json.loads(sessions(tgt, "--json").stdout)["sessions"]


def logged_in_on_every_worker(tgt) -> dict:
    """{worker pid: logged-in Initiator}, one session per worker, initiator names NAME-0, NAME-1 …"""
    held = connections_on_every_worker(tgt)
    for index, ini in enumerate(held.values()):
        ini.login(tgt.iqn, initiator_name=f"{NAME}-{index}")
    return held


def test_sessions_lists_each_worker_s_sessions_as_table_and_json(ringtgt):
    tgt = ringtgt(workers=2)
    held = logged_in_on_every_worker(tgt)
    try:
        # a login completes once the coordinator registered it (or after 5 s without an answer: poll)
        by_port = poll(lambda: len(found := {s["client_port"]: s for s in listed(tgt)}) == 2 and found,
                       timeout=30, what="two sessions in the table")
        for index, (pid, ini) in enumerate(held.items()):
            entry = by_port[ini.sock.getsockname()[1]]
            assert entry["pid"] == pid and entry["origin"].endswith(f".{pid}"), entry
            assert (entry["initiator"], entry["isid"], entry["tsih"]) == (f"{NAME}-{index}", isid(ini), ini.tsih)
            assert (entry["target"], entry["portal"], entry["client"]) == (tgt.iqn, tgt.portal, HOST)
        assert sorted(s["worker"] for s in by_port.values()) == [0, 1]

        table = sessions(tgt).stdout.splitlines()
        assert table[0].split() == ["NODE", "WORKER", "PID", "INITIATOR", "ISID", "TSIH", "TARGET", "PORTAL",
                                    "CLIENT", "LOGIN"], table
        assert table[-1] == "2 sessions", table
        for index, (pid, ini) in enumerate(held.items()):
            row = next(line.split() for line in table if f"{NAME}-{index}" in line)
            assert row[2] == str(pid) and row[4] == f"0x{isid(ini):012x}" and row[5] == str(ini.tsih), row
            assert row[8] == f"{HOST}:{ini.sock.getsockname()[1]}", row

        first_pid, first = next(iter(held.items()))
        first.logout()
        poll(lambda: [s["pid"] for s in listed(tgt)] == [p for p in held if p != first_pid], timeout=30,
             what="the logged-out session to leave the table")
    finally:
        for ini in held.values():
            ini.close()
    poll(lambda: listed(tgt) == [], timeout=30, what="closed connections to leave the table")


def test_workers_re_register_their_sessions_with_a_restarted_coordinator(ringtgt):
    tgt = ringtgt(workers=2)
    held = logged_in_on_every_worker(tgt)
    try:
        before = sorted((s["initiator"], s["tsih"]) for s in listed(tgt))
        assert len(before) == 2
        first = tgt.coordinator()
        os.kill(first, signal.SIGKILL)
        poll(lambda: tgt.coordinator() not in (None, first), timeout=30, what="a new coordinator")
        poll(lambda: sorted((s["initiator"], s["tsih"]) for s in listed_or_none(tgt)) == before, timeout=30,
             what="both workers to re-register their sessions")
    finally:
        for ini in held.values():
            ini.close()


def listed_or_none(tgt) -> list[dict]:
    """The session list, or [] while no coordinator answers (it is restarting)."""
    proc = sessions(tgt, "--json", check=False)
    return json.loads(proc.stdout)["sessions"] if proc.returncode == 0 else []


def test_a_dead_worker_s_sessions_leave_the_table(ringtgt):
    tgt = ringtgt(workers=2)
    held = logged_in_on_every_worker(tgt)
    try:
        victim, survivor = list(held)
        os.kill(victim, signal.SIGKILL)
        poll(lambda: [s["pid"] for s in listed(tgt)] == [survivor], timeout=30,
             what=f"the sessions of killed worker {victim} to leave the table")
    finally:
        for ini in held.values():
            ini.close()


def test_sessions_without_a_running_server_says_so(tmp_path):
    config = tmp_path / "idle.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n[[target]]\niqn = "{NAME}"\n'
                      f'[[target.lun]]\nid = 0\nbackstore = "null"\nsize = "1MiB"\n')
    proc = run([ringtgt_binary(), "sessions", "--config", str(config)], check=False, merge_stderr=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "no coordinator socket at ipc://" in proc.stderr and "is `ringtgt serve` running" in proc.stderr


def test_reinstatement_on_another_worker_leaves_only_the_new_session(ringtgt):
    tgt = ringtgt(workers=2)
    name = f"{NAME}-reinstated"
    first_pid, first = connect_to_worker(tgt, lambda pid: True)
    with first:
        first.login(tgt.iqn, initiator_name=name)
        second_pid, second = connect_to_worker(tgt, lambda pid: pid != first_pid)
        with second:
            second.isid = first.isid
            second.login(tgt.iqn, initiator_name=name)
            first.wait_closed()             # the old worker closed the old connection (socket timeout: 30 s)
            new = [(second_pid, second.tsih, isid(second))]
            poll(lambda: [(s["pid"], s["tsih"], s["isid"]) for s in listed(tgt) if s["initiator"] == name] == new,
                 timeout=30, what=f"only the new session {new} in the table")


def test_logins_proceed_while_the_coordinator_does_not_answer(ringtgt):
    tgt = ringtgt(workers=1)
    coordinator = tgt.coordinator()
    os.kill(coordinator, signal.SIGSTOP)
    try:
        with connect_to_worker(tgt, lambda pid: True)[1] as ini:
            ini.login(tgt.iqn, initiator_name=f"{NAME}-unanswered")   # after LOGIN_WAIT (5 s), unconfirmed
            ini.clear_unit_attentions()
            os.kill(coordinator, signal.SIGCONT)
            # the coordinator, awake, gets the login request that was waiting in its socket
            poll(lambda: [s["initiator"] for s in listed(tgt)] == [f"{NAME}-unanswered"], timeout=30,
                 what="the late login to be registered")
    finally:
        os.kill(coordinator, signal.SIGCONT)
    assert "login of iqn.2026-11.org.ringtgt:sessions-unanswered proceeds without it" in tgt.stderr()
