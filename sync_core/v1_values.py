"""V1 value shapes both directions check, pure: Salesforce ids, UUIDs, calendar dates.

Shared by the forward field mapping (``tasks.mapping``) and the V1 bodies of
the reverse direction (``sync_core.v1_bodies``), which the bridge uses too.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

SALESFORCE_ID_PATTERN = re.compile(r"[A-Za-z0-9]{18}", re.ASCII)
UUID_PATTERN = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}", re.ASCII
)


# Plain dates and the three date-time shapes V1 writes (with or without a zone,
# "Z" or an offset, "T" or a space, optional fractional seconds).
DATE_SHAPE = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d{1,9})?)?"
    r"(?:[Zz]|[+-](?P<offset_hours>\d{2})(?::?(?P<offset_minutes>\d{2}))?)?)?",
    re.ASCII,
)


MAX_HOUR, MAX_MINUTE, MAX_SECOND = 23, 59, 59


def to_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a date, a date-time or one of V1's date strings, else None.

    A date-time keeps the calendar date it was written with: its zone is not applied.
    """
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        return None
    shape = DATE_SHAPE.fullmatch(value.strip())
    if shape is None or not _valid_clock(shape):
        return None
    try:
        day = date(int(shape["year"]), int(shape["month"]), int(shape["day"]))
    except ValueError:
        return None
    return day.isoformat()


def _valid_clock(shape: re.Match[str]) -> bool:
    """Whether the time and offset parts of a date-time string are in range."""
    limits = (
        ("hour", MAX_HOUR),
        ("minute", MAX_MINUTE),
        ("second", MAX_SECOND),
        ("offset_hours", MAX_HOUR),
        ("offset_minutes", MAX_MINUTE),
    )
    return all(shape[part] is None or int(shape[part]) <= limit for part, limit in limits)
