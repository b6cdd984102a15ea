"""The latest event of V2 objects in the V2 events stream, for ``requeue``, ``replay``, ``explain``.

The V2 -> V1 task ``sync_v2_event(key, sequence, action)`` names an event by
its sequence in ``V2_EVENTS_STREAM``. An operator names a V2 object by its key
``v2.{object_type}.{uid}``: its latest event has to be found. The stream's
subjects do not name the object (``lfx.{object_type}.{action}``, the uid is
in the payload), so neither the last message per subject nor a subject filter
finds it.

The design: a forward scan of the object type's subject
(``lfx.{object_type}.*``), one ordered push consumer reading every message
from a start sequence, keeping the last event per key (read as the bridge
reads it, ``bridge.v2_events.V2EventReader``). The start is as late as is
known to be safe: the highest of the key's sequences the durable state in
``v1-sync-state`` records (the last applied, the pending one) and the
sequence an operator named, whichever is an event of that object in the
stream; the latest event is at or after it. A key the state does not know is
scanned from the stream's start (every event of its type kept, at most
``V2_EVENTS_MAX_AGE``, 14 days). A bulk lookup (``replay``) scans each type
once from the start. No index is kept: it would be a second write per event
on the bridge's hot path for a lookup operators make rarely.

The commands are one-shot: a missing stream is ``KvUnavailable`` (the
operator's clear error), NATS unreachable fails fast (``open_nats``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from bridge.changes import KvChange
from bridge.v2_events import EVENT_SUBJECT_PREFIX, V2_OBJECT_TYPES, object_id_of, scan_events
from operations.current_keys import KvUnavailable, open_nats
from sync_core.kv_listing import current_entries
from sync_core.nats_connection import NatsTarget
from sync_core.sync_state import SyncState, decode_state, read_state
from sync_core.v2_events import REVERSE_EPOCH, V2_KEY_PREFIX, v2_key


@dataclass(frozen=True)
class V2Key:
    """A key of the V2 -> V1 direction, split: ``v2.{object_type}.{uid}``."""

    object_type: str
    uid: str


def parse_v2_key(key: str) -> V2Key | None:
    """The object type and uid of a ``v2.…`` key; None when it names no V2 object we sync."""
    if not key.startswith(V2_KEY_PREFIX):
        return None
    object_type, dot, uid = key[len(V2_KEY_PREFIX) :].partition(".")
    if not dot or not uid or object_type not in V2_OBJECT_TYPES:
        return None
    return V2Key(object_type, uid)


def is_v2_key(key: str) -> bool:
    """Whether ``key`` names a V2 object (``v2.…``) rather than a ``v1-objects`` key."""
    return key.startswith(V2_KEY_PREFIX)


async def stream_bounds(js: JetStreamContext, stream: str) -> tuple[int, int]:
    """The first and last sequence ``stream`` holds (``KvUnavailable`` when it is missing)."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        raise KvUnavailable(
            f"the V2 events stream {stream!r} does not exist "
            "(the bridge creates it when SYNC_V2_TO_V1 is on)"
        ) from None
    return int(info.state.first_seq or 0), int(info.state.last_seq or 0)


async def latest_of_types(
    js: JetStreamContext, stream: str, object_types: Iterable[str]
) -> dict[str, KvChange]:
    """The latest event of every V2 object of ``object_types`` the stream holds, by key."""
    await stream_bounds(js, stream)
    latest: dict[str, KvChange] = {}

    def keep(change: KvChange, _at: float) -> None:
        latest[change.key] = change  # stream order: a later event replaces an earlier one

    for object_type in object_types:
        try:
            await scan_events(js, stream, object_type, 1, keep)
        except TimeoutError:
            raise KvUnavailable(f"scanning the stream {stream!r} stalled") from None
    return latest


async def latest_event(
    js: JetStreamContext,
    stream: str,
    state_kv: KeyValue,
    key: str,
    hint: int | None = None,
) -> KvChange | None:
    """The latest event of the V2 object ``key`` in ``stream``; None when it holds none.

    ``hint``: a sequence the operator named (``KEY@SEQUENCE``): where the scan may
    start if it is an event of that object. See the module docstring.
    """
    parsed = parse_v2_key(key)
    if parsed is None:
        return None
    first, last = await stream_bounds(js, stream)
    if last == 0:
        return None
    state, _ = await read_state(state_kv, key)
    start = await _scan_start(js, stream, key, _known_sequences(state, hint), first, last)
    found: list[KvChange] = []

    def keep(change: KvChange, _at: float) -> None:
        if change.key == key:
            found.append(change)

    try:
        await scan_events(js, stream, parsed.object_type, start, keep)
    except TimeoutError:
        raise KvUnavailable(f"scanning the stream {stream!r} stalled") from None
    return found[-1] if found else None


def _known_sequences(state: SyncState, hint: int | None) -> list[int]:
    """Sequences known to be events of the key, highest first (the state's and the hint)."""
    state = state.in_life(REVERSE_EPOCH)
    known = {state.revision, hint or 0}
    if state.pending is not None:
        known.add(state.pending.revision)
    return sorted((sequence for sequence in known if sequence > 0), reverse=True)


async def _scan_start(
    js: JetStreamContext, stream: str, key: str, known: list[int], first: int, last: int
) -> int:
    """The highest of ``known`` the stream holds as an event of ``key``, else its start.

    A recorded sequence beyond the stream's last one (the stream was recreated and
    its sequences restarted) or of another object says nothing: it is passed over.
    """
    for sequence in known:
        if not first <= sequence <= last:
            continue
        try:
            msg = await js.get_msg(stream, seq=sequence)
        except NotFoundError:
            continue
        if event_key(str(msg.subject or ""), bytes(msg.data or b"")) == key:
            return sequence
    return first


def event_key(subject: str, data: bytes) -> str | None:
    """The key of the V2 object a stored event is about, as the bridge names it."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != EVENT_SUBJECT_PREFIX or parts[1] not in V2_OBJECT_TYPES:
        return None
    return v2_key(parts[1], object_id_of(data))


async def reverse_states(js: JetStreamContext, state_bucket: str) -> dict[str, SyncState]:
    """The durable state of every V2 object (``v2.…`` keys of ``v1-sync-state``)."""
    kv_filter = V2_KEY_PREFIX + ">"
    items = await current_entries(js, state_bucket, kv_filter)
    return {item.key: decode_state(item.value, item.key) for item in items}


def unsettled(latest: dict[str, KvChange], states: dict[str, SyncState]) -> list[KvChange]:
    """The latest events the durable state has not settled (applied, skipped or dead-lettered).

    In stream order, so committees created before their members run first.
    """
    behind = [
        change
        for key, change in latest.items()
        if not states.get(key, SyncState(key)).in_life(REVERSE_EPOCH).settled(change.revision)
    ]
    return sorted(behind, key=lambda change: change.revision)


# -- the commands' one-shot calls ----------------------------------------------------------


async def _latest_all(
    url: NatsTarget | str, stream: str, state_bucket: str, asked: dict[str, int | None]
) -> dict[str, KvChange | None]:
    nc = await open_nats(url, "v1-sync-helper-requeue")
    try:
        js = nc.jetstream()
        state_kv = await state_bucket_of(js, state_bucket)
        return {
            key: await latest_event(js, stream, state_kv, key, hint) for key, hint in asked.items()
        }
    finally:
        await nc.close()


def current_v2_changes(
    url: NatsTarget | str, stream: str, state_bucket: str, asked: dict[str, int | None]
) -> dict[str, KvChange | None]:
    """Each V2 key's latest event as its task's arguments; None for a key with none.

    ``asked``: key -> the sequence the operator named, if any (a hint, see ``latest_event``).
    """
    return asyncio.run(_latest_all(url, stream, state_bucket, asked))


async def _unsettled(
    url: NatsTarget | str, stream: str, state_bucket: str, object_types: list[str], prefix: str
) -> list[KvChange]:
    nc = await open_nats(url, "v1-sync-helper-replay")
    try:
        js = nc.jetstream()
        await state_bucket_of(js, state_bucket)
        latest = await latest_of_types(js, stream, object_types)
        latest = {key: change for key, change in latest.items() if key.startswith(prefix)}
        try:
            states = await reverse_states(js, state_bucket)
        except TimeoutError:
            raise KvUnavailable("listing the V2 objects' sync states stalled") from None
        return unsettled(latest, states)
    finally:
        await nc.close()


def list_unsettled(
    url: NatsTarget | str,
    stream: str,
    state_bucket: str,
    object_types: Iterable[str],
    prefix: str = V2_KEY_PREFIX,
) -> list[KvChange]:
    """The latest event of every V2 object of ``object_types`` (keys starting with ``prefix``)
    whose durable state has not settled it, in stream order (``replay`` of ``v2.`` keys)."""
    return asyncio.run(_unsettled(url, stream, state_bucket, list(object_types), prefix))


async def state_bucket_of(js: JetStreamContext, bucket: str) -> KeyValue:
    """The sync state bucket (``KvUnavailable`` when it does not exist)."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        raise KvUnavailable(f"KV bucket {bucket!r} does not exist") from None
