"""Finding V1 rows in ``v1-objects`` by content (V2 -> V1: a create whose answer was lost).

A V1 create whose answer never came back may or may not have created the
object. Before sending it again, the run looks for it among the rows the
loader wrote into ``v1-objects`` (the V1 state as this service sees it): a
committee by name within its project, a member by e-mail within its
committee. That is a scan of one table's keys, so it runs only on that
rare path (a create intent recorded and no answer recorded), never per event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync_core.kv_listing import current_entries
from sync_core.nats_client import SyncNats
from tasks.errors import InvalidRecord, TransientError
from tasks.mapping.codec import decode_value, is_empty, is_soft_delete

LIST_TIMEOUT = 120.0

Row = dict[str, Any]


def find_rows(
    nats_handle: SyncNats, bucket: str, prefix: str, wanted: Callable[[Row], bool]
) -> list[tuple[str, Row]]:
    """Every live row under ``prefix`` (``platform-collaboration__c.``…) ``wanted`` accepts.

    Soft-deleted rows and rows that do not decode are passed over. ``wanted``
    runs on the connection's event loop: it must be pure (no NATS call).
    """

    async def scan() -> list[tuple[str, Row]]:
        try:
            entries = await current_entries(nats_handle.js, bucket, prefix + ">")
        except TimeoutError:
            raise TransientError(
                f"listing {prefix}> of {bucket} stalled", kind="v1_lookup_unavailable"
            ) from None
        found: list[tuple[str, Row]] = []
        for entry in entries:
            row = live_row(entry.value)
            if row is not None and wanted(row):
                found.append((entry.key, row))
        return found

    return nats_handle.run(scan(), timeout=LIST_TIMEOUT)


def live_row(value: bytes | None) -> Row | None:
    """A decodable row (JSON or msgpack) that is not soft-deleted, or None."""
    if not value or is_empty(value):
        return None
    try:
        row = decode_value(bytes(value))
    except InvalidRecord:
        return None
    return None if is_soft_delete(row) else row


def deleted_row(value: bytes | None) -> bool:
    """Whether ``value`` is a row the loader marked deleted (V1 no longer has the object)."""
    if not value or is_empty(value):
        return False
    try:
        return is_soft_delete(decode_value(bytes(value)))
    except InvalidRecord:
        return False
