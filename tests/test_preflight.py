"""target/preflight.py: the state_dir lock and the portal probe, in this process."""
import os
import socket

import pytest

from target.preflight import PreflightError, check_portal, lock_state_dir


def test_one_lock_per_state_dir(tmp_path):
    state = str(tmp_path / "state")
    fd = lock_state_dir(state)                          # made when missing
    with pytest.raises(PreflightError, match=f"state_dir {state} is in use by another `ringtgt serve` "
                                             rf"\(pid {os.getpid()}, holding {state}/serve.lock\)"):
        lock_state_dir(state)                           # another open file description: refused like a process
    os.close(fd)
    os.close(lock_state_dir(state))                     # free once the holder closed it


def test_a_state_dir_that_is_a_file(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises(PreflightError, match="state_dir .*/state: not a directory"):
        lock_state_dir(str(tmp_path / "state"))
    with pytest.raises(PreflightError, match="state_dir .*/state/below: Not a directory"):
        lock_state_dir(str(tmp_path / "state/below"))


@pytest.mark.parametrize("reuseport", [False, True])
def test_a_portal_with_a_listener_is_refused(reuseport):
    with socket.socket() as sock:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PreflightError, match=f"portal 127.0.0.1:{port}: another process listens on it"):
            check_portal("127.0.0.1", port)
    check_portal("127.0.0.1", port)                     # and free once it is gone


def test_a_vip_is_free_bound_and_a_foreign_address_is_not():
    check_portal("192.0.2.1", 3260, freebind=True)     # a cluster VIP not (yet) on this node
    with pytest.raises(PreflightError, match=r"portal 192.0.2.1:3260: cannot listen: Cannot assign"):
        check_portal("192.0.2.1", 3260)
