"""Service integration with a real `ringtgt serve`: the sd_notify datagrams a real socket given as NOTIFY_SOCKET
receives (READY=1 only once every worker listens, STATUS=, STOPPING=1 at SIGTERM), and JSON log lines."""
import json
import os
import socket

from harness import poll

REQUIRED_FIELDS = {"time", "level", "role", "pid", "logger", "message"}


def test_sd_notify_ready_status_stopping(ringtgt, tmp_path):
    name = f"ringtgt-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        tgt = ringtgt(workers=2, env={"NOTIFY_SOCKET": "@" + name})
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
            listening = len(tgt.listening_children())   # READY=1 is sent after the listeners exist
        print(f"datagrams up to READY=1: {messages}; workers listening at READY=1: {listening}")
        assert listening == 2
        assert messages[0] == "STATUS=starting 3 children"
        assert messages[-1] == f"READY=1\nSTATUS=serving 2 workers on {tgt.portal}"
        tgt.stop()
        stopping = sock.recv(4096).decode()
        print(f"at SIGTERM: {stopping!r}; exit status {tgt.proc.returncode}")
        assert stopping == "STOPPING=1\nSTATUS=stopping"
        assert tgt.proc.returncode == 0


def test_json_log_lines(ringtgt):
    tgt = ringtgt(workers=2, server_extra='log_format = "json"')
    poll(lambda: "ready: serving" in tgt.stderr(), timeout=30, what="the supervisor's ready line")
    tgt.stop()
    lines = tgt.stderr().splitlines()
    records = [json.loads(line) for line in lines]          # every line is one JSON object
    roles = {(r["role"], r.get("worker")) for r in records}
    print(f"{len(lines)} JSON lines, roles {sorted(roles, key=str)}")
    assert all(REQUIRED_FIELDS <= set(r) for r in records)
    assert roles == {("supervisor", None), ("coordinator", None), ("worker", 0), ("worker", 1)}
    assert any(r["message"] == "worker 1 stopped" and r["role"] == "worker" for r in records)
