"""A connection's explicit output hold (Connection.hold_output / release_output), which target/session_sync.py puts on
a login while the coordinator registers it: the final Login Response waits, then goes out first."""
from target.iscsi import pdu as P
from target.iscsi.connection import Connection
from tests.iscsi_helpers import login_request
from tests.iscsi_host import INI, IQN, Host, exchange


class RegisteringHost(Host):
    """Holds a new session's output as the worker's SessionSync does while the coordinator answers the login."""

    def __init__(self):
        super().__init__()
        self.ready = 0

    def session_started(self, conn):
        super().session_started(conn)
        conn.hold_output()

    def output_ready(self, conn):
        self.ready += 1


def test_the_final_login_response_waits_for_the_release_and_goes_out_first():
    host = RegisteringHost()
    conn = Connection(host, ("127.0.0.1", 3260), ("127.0.0.1", 5000))
    conn.receive_data(login_request([("InitiatorName", INI), ("TargetName", IQN)], exp_stat_sn=100))
    assert conn.out == [] and host.ready == 0 and host.started == [conn]      # held: nothing to send yet
    conn.release_output()
    assert host.ready == 1
    (pdu, _), = exchange(conn)
    assert pdu.opcode == P.LOGIN_RESPONSE and pdu.flags & 0x80
    conn.release_output()                                                      # nothing held: nothing happens
    assert host.ready == 1
