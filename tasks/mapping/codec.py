"""The KV value codec: what the values of the ``v1-objects`` bucket mean.

Values are JSON or msgpack maps (both occur in production); the keys are read by
``sync_core.keys``. Nothing here does I/O: the task reads the entry and hands us
its bytes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgpack

from tasks.errors import InvalidRecord

UNDECODABLE_KIND = "undecodable"
# msgpack timestamps (extension type -1) are unpacked as ``msgpack.Timestamp``:
# unpacking them straight into ``datetime`` raises OverflowError outside years
# 1-9999, even in a column we never read. ``_with_datetimes`` converts them.
MSGPACK_TIMESTAMP_AS_OBJECT = 0
# Enough of a reason to act on, short enough for a log line or a dead letter.
REASON_CHARS = 200


def is_empty(data: bytes) -> bool:
    """True for a value with nothing in it: 0 bytes, or only whitespace."""
    return not data.strip()


def decode_value(data: bytes) -> dict[str, Any]:
    """Decode a ``v1-objects`` value: JSON first, then msgpack.

    The result is a map whose keys are all ``str``. Anything else (not JSON and not
    msgpack, a JSON or msgpack value that is not a map, non-string keys, an empty
    value) raises ``InvalidRecord`` with ``kind="undecodable"`` and a reason.
    msgpack timestamps become aware UTC ``datetime`` values.
    """
    if is_empty(data):
        raise InvalidRecord("empty value", kind=UNDECODABLE_KIND)
    try:
        decoded: Any = json.loads(data)
        encoding = "JSON"
    except (ValueError, RecursionError) as json_error:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors; deep nesting
        # blows the JSON parser's recursion limit instead.
        try:
            decoded = msgpack.unpackb(data, raw=False, timestamp=MSGPACK_TIMESTAMP_AS_OBJECT)
            encoding = "msgpack"
        except (ValueError, TypeError, msgpack.UnpackException) as msgpack_error:
            # ValueError covers ExtraData, FormatError, StackError, bad UTF-8 and
            # disallowed map keys; TypeError an unhashable map key.
            raise InvalidRecord(
                f"neither JSON ({_reason(json_error)}) nor msgpack ({_reason(msgpack_error)})",
                kind=UNDECODABLE_KIND,
            ) from None
    return _with_datetimes(_require_str_map(decoded, encoding))


def is_soft_delete(record: Mapping[str, Any]) -> bool:
    """True when the loader marked the record deleted.

    Exactly two markers count: ``_sdc_deleted_at`` holding a timestamp, that is a
    string that is not blank (the loader writes ISO date-times; it is not parsed)
    or a ``datetime`` (a msgpack timestamp); or ``isdeleted`` being the boolean
    ``true`` (V1 booleans are real booleans). Anything else (null, ``""``, ``0``,
    ``false``, ``[]``, ``{}``, numbers, a msgpack timestamp outside years
    1-9999, the string ``"true"`` in ``isdeleted``) is not a delete.
    """
    deleted_at = record.get("_sdc_deleted_at")
    marked = isinstance(deleted_at, datetime) or (
        isinstance(deleted_at, str) and bool(deleted_at.strip())
    )
    return marked or record.get("isdeleted") is True


def _with_datetimes(record: dict[str, Any]) -> dict[str, Any]:
    """The record with each top-level msgpack timestamp as an aware UTC ``datetime``.

    One outside the ``datetime`` range stays a ``msgpack.Timestamp``: the mapping
    drops it with a warning like any other value of the wrong type. Nested values
    are left alone; no column we map holds a container.
    """
    for column, value in record.items():
        if isinstance(value, msgpack.Timestamp):
            with contextlib.suppress(OverflowError, ValueError, OSError):
                record[column] = value.to_datetime()
    return record


def _require_str_map(decoded: Any, encoding: str) -> dict[str, Any]:
    """Return ``decoded`` if it is a map with only ``str`` keys, else raise."""
    if not isinstance(decoded, dict):
        raise InvalidRecord(
            f"decoded as {encoding} but is a {type(decoded).__name__}, not a map",
            kind=UNDECODABLE_KIND,
        )
    bad_keys = [key for key in decoded if not isinstance(key, str)]
    if bad_keys:
        raise InvalidRecord(
            f"decoded as {encoding} but has non-string keys, e.g. {bad_keys[0]!r:.60}",
            kind=UNDECODABLE_KIND,
        )
    return decoded


def _reason(error: BaseException) -> str:
    """A short, single-line description of a decoder's complaint."""
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text[:REASON_CHARS]
