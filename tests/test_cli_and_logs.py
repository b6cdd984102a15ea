"""The CLI lists its commands; logs are one JSON object per line."""

from __future__ import annotations

import io
import json
import logging

from click.testing import CliRunner

from sync_core.logs import configure_logging
from v1_sync_helper.cli import main

COMMANDS = ("bridge", "worker", "flower", "dev", "requeue", "dlq", "replay", "status")


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_logs_are_json_with_standard_fields() -> None:
    stream = io.StringIO()
    configure_logging(debug=False, stream=stream)
    log = logging.getLogger("test.logs")
    log.debug("hidden")
    log.info(
        "synced",
        extra={"key": "salesforce-project__c.a1", "sfid": "a1", "slug": None, "outcome": "created"},
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["msg"] == "synced"
    assert entry["level"] == "info"
    assert entry["key"] == "salesforce-project__c.a1"
    assert entry["outcome"] == "created"
    assert "slug" not in entry


def test_debug_enables_debug_level() -> None:
    stream = io.StringIO()
    configure_logging(debug=True, stream=stream)
    logging.getLogger("test.logs").debug("visible")
    assert json.loads(stream.getvalue())["level"] == "debug"
    configure_logging(debug=False)


def test_an_error_extra_is_kept_and_tracebacks_go_under_exception() -> None:
    stream = io.StringIO()
    configure_logging(debug=False, stream=stream)
    log = logging.getLogger("test.logs")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"error": "v2_timeout"})
    entry = json.loads(stream.getvalue())
    assert entry["error"] == "v2_timeout"
    assert "ValueError: boom" in entry["exception"]
    configure_logging(debug=False)
