"""target.logformat: the JSON lines (fields, role, one line per record, exception text) and the text format."""
import datetime
import io
import json
import logging
import os

import pytest

from target import logformat


@pytest.fixture
def restore_role():
    yield
    logformat.set_role("supervisor")


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("ringtgt.target.worker", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_fields_and_role(restore_role):
    formatter = logformat.JsonFormatter()
    line = json.loads(formatter.format(record("hello %s", "there")))
    assert set(line) == {"time", "level", "role", "pid", "logger", "message"}
    assert (line["level"], line["role"], line["logger"], line["message"]) == (
        "WARNING", "supervisor", "ringtgt.target.worker", "hello there")
    assert datetime.datetime.fromisoformat(line["time"]).utcoffset() == datetime.timedelta(0)
    logformat.set_role("worker", 3)
    assert {k: v for k, v in json.loads(formatter.format(record("x"))).items() if k in ("role", "worker")} == {
        "role": "worker", "worker": 3}
    logformat.set_role("coordinator")
    assert "worker" not in json.loads(formatter.format(record("x")))


def test_json_exception_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        text = logformat.JsonFormatter().format(record("failed:\nsee below", exc_info=(ValueError, exc, None)))
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed:\nsee below"
    assert line["exception"].endswith("ValueError: bad\nthing")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure(log_format, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    try:
        logformat.configure("debug", log_format)
        logging.getLogger("ringtgt.test").debug("configured")
    finally:
        root.handlers, root.level = saved
        logging.captureWarnings(False)
    out = stream.getvalue()
    if log_format == "json":
        assert json.loads(out)["message"] == "configured"
    else:
        assert out.rstrip().endswith(f"ringtgt.test[{os.getpid()}] DEBUG: configured")
