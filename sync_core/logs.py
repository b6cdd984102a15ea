"""Structured JSON logs, one object per line, shared by every process.

Pass context through ``extra``: ``log.info("synced", extra={"key": key, ...})``.
The standard fields are ``key``, ``operation``, ``sfid``, ``slug``,
``project_uid``, ``committee_uid`` and ``username``; any other extra key is
emitted as well.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

STANDARD_FIELDS = ("key", "operation", "sfid", "slug", "project_uid", "committee_uid", "username")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_SKIP = frozenset(STANDARD_FIELDS) | {"time", "level", "logger", "msg", "exception"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, msg, then context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in STANDARD_FIELDS:
            value = record.__dict__.get(name)
            if value not in (None, ""):
                entry[name] = value
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRS and name not in _SKIP and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(debug: bool = False, stream: Any = None) -> None:
    """Send every logger to ``stream`` (stderr) as JSON; DEBUG on request."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Libraries chatter at DEBUG about every frame and connection.
    for noisy in ("asyncio", "urllib3", "kombu", "amqp", "nats", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not debug else logging.INFO)
