"""LOG_FORMAT=json: one JSON object per line (a traceback included), and the HTTP client's
per-request lines kept out of the log at INFO."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxy.__main__ import configure_logging
from proxy.settings import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger and the quieted loggers as they were (pytest's capture included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("alembic", "httpx", "httpcore")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def test_the_setting_reads_log_format() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "json"}).log_format == "json"


def test_json_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    log = logging.getLogger("proxy.test")
    log.info("job %s queued", "abc")
    try:
        raise ValueError("boom\non two lines")
    except ValueError:
        log.exception("job %s failed", "abc")
    logging.getLogger("httpx").info("HTTP Request: GET http://comfy/history 200 OK")
    log.debug("not at info")

    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) == 2
    first, second = records
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "INFO",
        "logger": "proxy.test",
        "message": "job abc queued",
    }
    assert first["time"].endswith("+00:00") and "exception" not in first
    assert second["level"] == "ERROR" and second["message"] == "job abc failed"
    assert "Traceback" in second["exception"] and "ValueError: boom" in second["exception"]


def test_text_stays_text_and_configuring_again_replaces(restore_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "text", first)
    configure_logging("info", "text", second)
    logging.getLogger("proxy.test").info("hello")
    assert first.getvalue() == ""
    line = second.getvalue().strip()
    assert line.endswith("INFO    proxy.test: hello") and not line.startswith("{")
    assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
