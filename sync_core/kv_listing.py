"""Listing a KV bucket: the last message of every key, and what each one means.

One ordered push consumer with ``DeliverPolicy.LAST_PER_SUBJECT`` (headers only
when the values are not needed). It is done when the server says so: its own
count of delivered messages, not the client's. nats-py's ``KeyValue.watch``
compares the server's pending count with the messages the client has
*processed*, so it can end its initial values before messages already on the
wire (nats-io/nats.py#842): a listing built on it now and then misses keys.

What a message means: a PUT carries no ``KV-Operation`` header; deletes carry
``DEL`` or ``PURGE``; servers 2.11+ also write marker messages (header
``Nats-Marker-Reason``) when a limit or TTL removes a key, which ADR-48 says to
read as deletes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from sync_core.broker import OPERATIONS

KV_OPERATION_HEADER = "KV-Operation"
MARKER_REASON_HEADER = "Nats-Marker-Reason"
PUT = "PUT"

# ADR-48: MaxAge and Purge markers read as PURGE, Remove as DEL.
MARKER_OPERATIONS = {"MaxAge": "PURGE", "Purge": "PURGE", "Remove": "DEL"}
UNKNOWN_MARKER_OPERATION = "DEL"

# How long a listing may go without a message before it is given up; the
# server also drops the listing's consumer after this long without interest.
DEFAULT_LIST_IDLE_TIMEOUT = 30.0


def kv_stream(bucket: str) -> str:
    """The stream behind KV bucket ``bucket``."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key_filter: str) -> str:
    """The stream subject of a key filter in ``bucket``."""
    return f"$KV.{bucket}.{key_filter}"


def operation_of(headers: Mapping[str, str] | None) -> str | None:
    """The KV operation a message's headers announce, or None when unknown."""
    if not headers:
        return PUT
    reason = headers.get(MARKER_REASON_HEADER)
    if reason is not None:
        return MARKER_OPERATIONS.get(reason, UNKNOWN_MARKER_OPERATION)
    operation = headers.get(KV_OPERATION_HEADER)
    if operation is None:
        return PUT
    return operation if operation in OPERATIONS else None


async def last_per_subject(
    js: JetStreamContext,
    stream: str,
    subject: str,
    on_message: Callable[[Msg, Msg.Metadata], None],
    headers_only: bool,
    idle_timeout: float = DEFAULT_LIST_IDLE_TIMEOUT,
) -> None:
    """Deliver the last message of every subject matching ``subject`` to ``on_message``.

    Deletes are delivered too (``operation_of`` tells them). Returns once it
    has caught up; ``TimeoutError`` when no message came for ``idle_timeout``.
    """
    done = asyncio.get_running_loop().create_future()

    async def deliver(msg: Msg) -> None:
        # The metadata is parsed from the reply subject on each access: once is enough.
        meta = msg.metadata
        on_message(msg, meta)
        if meta.num_pending == 0 and not done.done():
            done.set_result(None)

    sub = await js.subscribe(
        subject,
        stream=stream,
        cb=deliver,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=headers_only,
        inactive_threshold=idle_timeout,
    )
    try:
        info = await sub.consumer_info()
        # Nothing matched at all (the server delivered nothing and has nothing
        # pending); otherwise the last message delivered says num_pending 0.
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        if info.num_pending == 0 and not delivered:
            return
        await asyncio.wait_for(done, idle_timeout)
    finally:
        await sub.unsubscribe()


@dataclass(frozen=True, slots=True)
class KvItem:
    """The current value of one live key, as a listing found it."""

    key: str
    value: bytes
    revision: int


async def current_entries(
    js: JetStreamContext,
    bucket: str,
    key_filter: str,
    idle_timeout: float = DEFAULT_LIST_IDLE_TIMEOUT,
) -> list[KvItem]:
    """Every live key of ``bucket`` under ``key_filter`` at its latest value (no deletes)."""
    start = len(kv_subject(bucket, ""))
    found: list[KvItem] = []

    def note(msg: Msg, meta: Msg.Metadata) -> None:
        if operation_of(msg.headers) == PUT:
            found.append(KvItem(msg.subject[start:], bytes(msg.data or b""), meta.sequence.stream))

    await last_per_subject(
        js, kv_stream(bucket), kv_subject(bucket, key_filter), note, False, idle_timeout
    )
    return found
