"""Every current entry of a KV bucket under a key filter, without nats-py's early end marker.

nats-py's watcher signals "everything stored has been delivered" with a
``None`` update, decided from the consumer's pending count right after it
subscribes. Messages already on their way to the client count as neither
pending nor received then, so the marker can come first and a listing that
stops at it misses entries (seen: a member the V1 fake could not find right
after it was written). Here the listing ends at the entry with nothing left
pending behind it (``delta == 0``); after a marker, when no such entry
comes (nothing matches, or the last message is a delete the watcher drops),
it ends once ``settle`` seconds pass without an update.
"""

from __future__ import annotations

from typing import Any

import nats.errors

from sync_core.nats_client import LISTING_CONSUMER_TTL

SETTLE_SECONDS = 0.3
IDLE_TIMEOUT_SECONDS = 5.0


class ListingStalled(TimeoutError):
    """No update, not even the end marker, arrived within the idle timeout."""


async def current_entries(
    kv: Any,
    key_filter: str,
    *,
    meta_only: bool = False,
    settle: float = SETTLE_SECONDS,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
) -> list[Any]:
    """The latest entry of every live key matching ``key_filter`` (deletes left out)."""
    watcher = await kv.watch(
        key_filter,
        ignore_deletes=True,
        meta_only=meta_only,
        inactive_threshold=LISTING_CONSUMER_TTL,
    )
    found: list[Any] = []
    marker_seen = False
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=settle if marker_seen else idle_timeout)
            except nats.errors.TimeoutError:
                if marker_seen:
                    return found
                raise ListingStalled(f"listing {key_filter} stalled") from None
            if entry is None:
                marker_seen = True
                continue
            found.append(entry)
            if entry.delta == 0:
                return found
    finally:
        await watcher.stop()
