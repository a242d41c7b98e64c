"""Logging setup: human-readable lines by default, or one JSON object per line
(`LOG_FORMAT=json`) for log collectors (Loki, ELK, CloudWatch), which then need no parsing
rules for the proxy's lines.

A JSON line carries `time` (ISO 8601, UTC), `level`, `logger` and `message`, plus
`exception` (the formatted traceback) when the record has one and `stack` when asked for.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Loggers too chatty at INFO for the proxy's log: Alembic narrates every migration step (the
# proxy says what a migration did), and the HTTP client logs every request it makes to
# ComfyUI, several a second while jobs run.
QUIET_LOGGERS = ("alembic", "httpx", "httpcore")

# Marks the handler `configure` installs, so calling it again replaces it instead of logging
# every line twice.
_OURS = "_fastwan_proxy_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are
    escaped by JSON, so a traceback never splits a record across lines)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records at `level` and above to `stream` (stderr) in `fmt`
    ("text" or "json"); returns the handler installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
