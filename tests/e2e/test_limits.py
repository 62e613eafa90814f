"""The limits that bound what an idle, slow or greedy peer can hold: login_timeout, NOP-In keepalives that
drop a dead connection, and the connection caps per worker and per initiator."""
import socket
import time

import pytest

import initiator as I
from harness import HOST, poll, session

TOO_MANY_CONNECTIONS = (0x02, 0x06)
OUT_OF_RESOURCES = (0x03, 0x02)


def closed_by_target(sock: socket.socket, timeout: float) -> bytes:
    """Everything the target sent until it closed the connection (fails if it does not within `timeout`)."""
    sock.settimeout(timeout)
    received = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"the target kept the connection open for {timeout:g} s")
        if not chunk:
            break
        received.append(chunk)
    return b"".join(received)


def test_a_connection_that_does_not_log_in_is_dropped(ringtgt):
    tgt = ringtgt(workers=1, server_extra="login_timeout = 1")
    with socket.create_connection((HOST, tgt.port)) as sock:
        assert closed_by_target(sock, 15) == b""
    assert "login not finished within 1 s (login_timeout)" in tgt.stderr()


def test_a_session_that_stops_answering_nop_in_is_dropped(ringtgt):
    tgt = ringtgt(workers=1, server_extra="nop_interval = 1")
    with session(tgt, "iqn.2026-11.org.ringtgt:alive") as alive, session(tgt, "iqn.2026-11.org.ringtgt:dead") as dead:
        deadline = time.monotonic() + 30
        while "no answer to NOP-In" not in tgt.stderr():        # `alive` answers every ping it gets
            assert time.monotonic() < deadline, "no connection was dropped"
            assert alive.scsi(bytes(6)).status == I.GOOD
            time.sleep(0.1)
        pings = closed_by_target(dead.sock, 15)
        assert pings and pings[0] & 0x3F == I.NOP_IN, pings[:48]
        for _ in range(10):                                      # several intervals later, still served
            assert alive.scsi(bytes(6)).status == I.GOOD
            time.sleep(0.3)


def login_status(tgt, name: str) -> tuple[I.Initiator, tuple[int, int] | None]:
    ini = I.Initiator.connect(HOST, tgt.port)
    try:
        ini.login(tgt.iqn, initiator_name=name)
    except I.LoginFailed as failure:
        return ini, (failure.status_class, failure.status_detail)
    return ini, None


def test_connection_caps_per_initiator_and_per_worker(ringtgt):
    tgt = ringtgt(workers=1, server_extra="max_connections = 3\nmax_connections_per_initiator = 2")
    held = []
    try:
        for _ in range(2):
            ini, status = login_status(tgt, "iqn.2026-11.org.ringtgt:greedy")
            held.append(ini)
            assert status is None
        ini, status = login_status(tgt, "iqn.2026-11.org.ringtgt:greedy")
        held.append(ini)
        assert status == TOO_MANY_CONNECTIONS
        poll(lambda: sum(map(len, tgt.connections_per_worker().values())) == 2, timeout=10,
             what="the refused connection to close")
        ini, status = login_status(tgt, "iqn.2026-11.org.ringtgt:modest")
        held.append(ini)
        assert status is None                                   # a third connection, another initiator
        ini, status = login_status(tgt, "iqn.2026-11.org.ringtgt:late")
        held.append(ini)
        assert status == OUT_OF_RESOURCES                      # the fourth on this worker
    finally:
        for ini in held:
            ini.close()
