"""How ``dlq list`` and ``dlq show`` present dead letters to an operator."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

from tasks.stores.dead_letters import DeadLetter

MESSAGE_EXCERPT_CHARS = 60
KEY_COLUMN_CHARS = 48


def age(seconds: float) -> str:
    """A short age: ``45s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def excerpt(text: str | None, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def as_dict(letter: DeadLetter) -> dict[str, Any]:
    """The JSON form of one dead letter (all its fields)."""
    return dataclasses.asdict(letter)


def render_table(letters: Sequence[DeadLetter], now: float) -> str:
    """One line per dead letter: key, revision, kind, attempts, age, message excerpt."""
    if not letters:
        return "No dead letters."
    header = ("KEY", "REV", "KIND", "TRIES", "AGE", "MESSAGE")
    rows = [
        (
            excerpt(letter.key, KEY_COLUMN_CHARS),
            str(letter.revision),
            letter.error_kind,
            str(letter.attempts),
            age(now - letter.last_failure),
            excerpt(letter.error_message, MESSAGE_EXCERPT_CHARS),
        )
        for letter in letters
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in (header, *rows)
    ]
    lines.append(f"{len(letters)} dead letter(s). Details: v1-sync-helper dlq show KEY@REV")
    return "\n".join(lines)


def render_one(letter: DeadLetter, now: float) -> str:
    """Every field of one dead letter, labelled, for ``dlq show``."""
    fields = [
        ("id", letter.id),
        ("key", letter.key),
        ("revision", str(letter.revision)),
        ("operation", letter.operation),
        ("error kind", letter.error_kind),
        ("error", letter.error_message),
        ("V2 status", "-" if letter.status is None else str(letter.status)),
        ("V2 body", letter.body_excerpt or "-"),
        ("attempts", str(letter.attempts)),
        (
            "first failure",
            f"{_timestamp(letter.first_failure)} ({age(now - letter.first_failure)} ago)",
        ),
        (
            "last failure",
            f"{_timestamp(letter.last_failure)} ({age(now - letter.last_failure)} ago)",
        ),
    ]
    width = max(len(label) for label, _ in fields)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in fields)
