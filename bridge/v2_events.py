"""The V2 indexer events as bridge changes (``SYNC_V2_TO_V1``, issue 24).

The bridge pulls the durable consumer of the V2 events stream
(``sync_core.v2_events``) with the same loop as the KV consumer
(``bridge.loop.Bridge``): batching, backpressure, ack only after the tasks are
in Redis. Each event becomes one ``sync_v2_event`` task with the arguments
``(key, stream sequence, action)``: the key ``v2.{object_type}.{uid}`` names
the V2 object (its lease and durable state in ``v1-sync-state``), the
sequence is the event's place in the stream, where the worker reads it back
(the task message carries no V2 data). The bridge reads only the subject and
``object_id``; the worker checks the whole event (``sync_core.indexer_events``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bridge.changes import SKIP_FOREIGN_SUBJECT, KvChange, Skip
from bridge.consumer import ConsumerSpec
from sync_core.keys import is_valid_kv_key
from sync_core.v2_events import V2EventCapture, v2_key

EVENT_SUBJECT_PREFIX = "lfx"
V2_OBJECT_TYPES = frozenset({"committee", "committee_member"})
V2_ACTIONS = frozenset({"created", "updated", "deleted"})
# The key of an event whose object_id cannot name a KV key: the worker reads the
# event, finds what is wrong and dead-letters it under this key (nothing is lost).
UNREADABLE_ID = "unreadable"
# The longest wait for the next event of a scan before giving up on it.
SCAN_IDLE_TIMEOUT = 30.0
SKIP_UNKNOWN_ACTION = "unknown_action"


@dataclass(frozen=True, slots=True)
class EventStreamSpec(ConsumerSpec):
    """The V2 events consumer, in the shape the loop takes (``bucket`` is unused)."""

    stream_name: str = ""

    @property
    def stream(self) -> str:
        """The V2 events stream (``V2_EVENTS_STREAM``)."""
        return self.stream_name

    def config(self) -> ConsumerConfig:
        """The consumer ``sync_core.v2_events`` creates: every event, explicit acks."""
        return ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=self.max_deliver,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
        )


def event_stream_spec(capture: V2EventCapture) -> EventStreamSpec:
    """The loop's spec of the consumer ``capture`` describes (same delivery settings)."""
    return EventStreamSpec(
        name=capture.consumer,
        bucket="",
        max_deliver=capture.max_deliver,
        ack_wait=capture.ack_wait,
        max_ack_pending=capture.max_ack_pending,
        stream_name=capture.stream,
    )


class V2EventReader:
    """Turns one V2 events stream message into its task's arguments, or a ``Skip``."""

    # The tasks of this direction carry no epoch of ``v1-objects``.
    stamps_epoch = False

    def __call__(self, msg: Msg) -> KvChange | Skip:
        """``(v2.{object_type}.{uid}, stream sequence, action)`` of ``msg``."""
        parts = msg.subject.split(".")
        if len(parts) != 3 or parts[0] != EVENT_SUBJECT_PREFIX or parts[1] not in V2_OBJECT_TYPES:
            return Skip(SKIP_FOREIGN_SUBJECT)
        object_type, action = parts[1], parts[2]
        if action not in V2_ACTIONS:
            return Skip(SKIP_UNKNOWN_ACTION)
        key = v2_key(object_type, object_id_of(msg.data))
        if not is_valid_kv_key(key):
            key = v2_key(object_type, UNREADABLE_ID)
        return KvChange(key, msg.metadata.sequence.stream, action)


def object_id_of(data: bytes) -> str:
    """The event's ``object_id``, or ``UNREADABLE_ID`` when it has none usable."""
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return UNREADABLE_ID
    object_id = envelope.get("object_id") if isinstance(envelope, dict) else None
    if not isinstance(object_id, str) or not object_id.strip():
        return UNREADABLE_ID
    return object_id.strip()


# -- reading the stream back (the reconciler, the operator commands) ----------------


def type_subject(object_type: str) -> str:
    """The stream subjects of one object type's events: ``lfx.{object_type}.*``."""
    return f"{EVENT_SUBJECT_PREFIX}.{object_type}.*"


async def scan_events(
    js: JetStreamContext,
    stream: str,
    object_type: str,
    start: int,
    on_event: Callable[[KvChange, float], None],
    idle_timeout: float = SCAN_IDLE_TIMEOUT,
) -> None:
    """Deliver every event of ``object_type`` from sequence ``start`` on, in stream order,
    as its task's arguments (``key``, sequence, action) and the time the stream stored it
    (epoch seconds); messages the bridge skips are left out.

    Returns once caught up with the stream; ``TimeoutError`` after ``idle_timeout``
    without a message.
    """
    reader = V2EventReader()
    done = asyncio.get_running_loop().create_future()

    async def deliver(msg: Msg) -> None:
        meta = msg.metadata
        change = reader(msg)
        if isinstance(change, KvChange):
            on_event(change, meta.timestamp.timestamp())
        if meta.num_pending == 0 and not done.done():
            done.set_result(None)

    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start)
    )
    sub = await js.subscribe(
        type_subject(object_type),
        stream=stream,
        cb=deliver,
        ordered_consumer=True,
        config=config,
        inactive_threshold=idle_timeout,
    )
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        if info.num_pending == 0 and not delivered:
            return  # nothing of this type from ``start`` on
        await asyncio.wait_for(done, idle_timeout)
    finally:
        await sub.unsubscribe()
