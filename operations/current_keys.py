"""Current revisions of ``v1-objects`` keys, for ``requeue`` and ``replay``.

These commands are one-shot: they connect without endless reconnects, so an
unreachable NATS fails fast with a clear message instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from bridge.changes import KvChange
from sync_core.keys import sync_rank
from sync_core.kv_listing import ListingStalled, current_entries
from sync_core.nats_connection import (
    NatsTarget,
    as_target,
    connect_options,
    describe_connect_error,
    most_telling_error,
    new_client,
)

PUT = "PUT"
CONNECT_TIMEOUT = 3.0
RECONNECT_WAIT = 0.2
CONNECT_DEADLINE = 2 * CONNECT_TIMEOUT + 1
# The longest wait for the next key of a listing before giving up on a stalled watcher.
LIST_IDLE_TIMEOUT = 15.0

log = logging.getLogger(__name__)


class KvUnavailable(RuntimeError):
    """NATS cannot be reached or the bucket does not exist."""


async def open_nats(url: NatsTarget | str, name: str) -> Client:
    """Connect once, failing fast: the operations commands are not long-lived.

    ``url``: the servers and credentials (``settings.nats_target``) or a bare URL.
    """

    seen: list[Exception] = []

    async def quiet(error: Exception) -> None:
        # The failure is reported once, by the exception below, not per attempt;
        # the last error seen is its cause (nats-py ends with "no servers available").
        seen.append(error)
        log.debug("nats error", extra={"error": str(error)})

    target = as_target(url)
    options = connect_options(target)
    # nats-py retries each server until ``max_reconnect_attempts`` is exceeded,
    # even on the first connect: 1 means two quick tries per server. (Its
    # annotations say int for the times; floats work and are what we mean.)
    options.update(
        connect_timeout=CONNECT_TIMEOUT,
        max_reconnect_attempts=1,
        reconnect_time_wait=RECONNECT_WAIT,
    )
    try:
        nc = new_client(target)
        await asyncio.wait_for(
            nc.connect(**options, name=name, error_cb=quiet),
            timeout=CONNECT_DEADLINE * len(target.servers),
        )
        return nc
    except (OSError, TimeoutError, NatsError) as error:
        cause = most_telling_error([*seen, error])
        raise KvUnavailable(
            f"cannot connect to NATS at {target.safe_url}: "
            f"{describe_connect_error(cause, tls_wanted=target.wants_tls)}"
        ) from None


async def _bucket(nc: Client, bucket: str) -> KeyValue:
    try:
        return await nc.jetstream().key_value(bucket)
    except BucketNotFoundError:
        raise KvUnavailable(f"KV bucket {bucket!r} does not exist") from None


async def lookup_change(kv: KeyValue, key: str) -> KvChange | None:
    """The key's latest change (a delete is a change too), or None when unknown."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError as missing:
        # nats-py reports a deleted or purged key as not found but keeps the marker.
        if missing.entry is not None and missing.op:
            return KvChange(key, int(missing.entry.revision), str(missing.op))
        return None
    return KvChange(key, int(entry.revision or 0), PUT)


async def _lookup_all(
    url: NatsTarget | str, bucket: str, keys: list[str]
) -> dict[str, KvChange | None]:
    nc = await open_nats(url, "v1-sync-helper-requeue")
    try:
        kv = await _bucket(nc, bucket)
        return {key: await lookup_change(kv, key) for key in keys}
    finally:
        await nc.close()


def current_changes(
    url: NatsTarget | str, bucket: str, keys: Iterable[str]
) -> dict[str, KvChange | None]:
    """Each key's current revision and operation; None for a key the bucket never held."""
    return asyncio.run(_lookup_all(url, bucket, list(keys)))


def watch_subject(prefix: str) -> str:
    """The KV watch pattern for ``prefix``: a server-side filter when it ends a token."""
    return f"{prefix}>" if prefix.endswith(".") else ">"


async def _list(url: NatsTarget | str, bucket: str, prefix: str) -> list[KvChange]:
    nc = await open_nats(url, "v1-sync-helper-replay")
    try:
        kv = await _bucket(nc, bucket)
        # Last value per key, headers only (no payloads), deletes skipped: the
        # cheapest way nats-py offers to get every live key with its revision
        # (ending at the last key, not at nats-py's early end marker).
        try:
            entries = await current_entries(
                kv, watch_subject(prefix), meta_only=True, idle_timeout=LIST_IDLE_TIMEOUT
            )
        except ListingStalled:
            raise KvUnavailable("listing the bucket's keys stalled") from None
        found = [
            KvChange(entry.key, int(entry.revision or 0), PUT)
            for entry in entries
            if entry.key.startswith(prefix)
        ]
        return found
    finally:
        await nc.close()


def list_current(url: NatsTarget | str, bucket: str, prefix: str = "") -> list[KvChange]:
    """Every live key of ``bucket`` starting with ``prefix``, at its current revision.

    Parents come first (``sync_core.keys.sync_rank``: projects, committees, members,
    then keys of types we do not sync), each rank in stream order: a committee
    needs its project's mapping, so this order saves retries.
    """
    return sorted(asyncio.run(_list(url, bucket, prefix)), key=dependency_rank)


def dependency_rank(change: KvChange) -> int:
    """The sync rank of the change's object type (unknown types last)."""
    return sync_rank(change.key)
