"""target.sdnotify: the datagram a real AF_UNIX socket receives, by path and by abstract name; nothing without
NOTIFY_SOCKET; a failed send is an answer, not an exception."""
import logging
import os
import socket

import pytest

from target.sdnotify import notify


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(10)
    yield sock
    sock.close()


def test_path_socket(tmp_path, receiver, monkeypatch):
    path = tmp_path / "notify"
    receiver.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert notify("READY=1", "STATUS=serving 2 workers")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving 2 workers"


def test_abstract_socket(receiver, monkeypatch):
    name = f"ringtgt-test-sdnotify-{os.getpid()}"
    receiver.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert notify("STOPPING=1")
    assert receiver.recv(4096) == b"STOPPING=1"


def test_nothing_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert not notify("READY=1")


def test_unreachable_socket_is_logged(tmp_path, monkeypatch, caplog):
    missing = str(tmp_path / "nobody-listens")
    monkeypatch.setenv("NOTIFY_SOCKET", missing)
    with caplog.at_level(logging.WARNING, logger="ringtgt.sdnotify"):
        assert not notify("READY=1")
    assert [r.getMessage() for r in caplog.records] == [
        f"sd_notify to {missing} failed: [Errno 2] No such file or directory"]
