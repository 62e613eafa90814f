"""How `ringtgt serve` logs: the text format, or `[server] log_format = "json"`: one JSON object per line with
the time (UTC, ISO 8601), level, role (supervisor, coordinator or worker), the worker's index where it applies,
the process id, logger, message and, when there is one, the exception's text.

The role is this process's: the supervisor sets it in each child it forks (set_role), before the child logs.
"""
import datetime
import json
import logging

TEXT_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s"

_role: dict[str, object] = {"role": "supervisor"}


def set_role(role: str, worker: int | None = None) -> None:
    """Name this process's part in every JSON line it logs from now on."""
    global _role
    _role = {"role": role} if worker is None else {"role": role, "worker": worker}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line = {"time": when.isoformat(timespec="milliseconds"), "level": record.levelname, **_role,
                "pid": record.process, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    """Log to stderr at `level` ("info", …) in `log_format` ("text" or "json"); Python warnings go there too."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.captureWarnings(True)
