"""The durable capture of the V2 indexer's committee events (V2 -> V1, issue 24).

The V2 indexer publishes ``lfx.committee.*`` and ``lfx.committee_member.*``
on core NATS, fire-and-forget: whoever does not listen at that instant never
sees the event. ``ensure_v2_event_capture`` makes JetStream keep them: a
stream capturing those subjects (file storage, limits retention, a maximum
age) and a durable pull consumer reading it, so events published while no
process of ours runs are delivered when one comes back.

Idempotent: a missing stream or consumer is created, an existing one with the
documented settings is left alone, one whose settings drifted is updated in
place (the chart's NACK ``Stream`` and ``Consumer`` create them with the same
settings). The bridge calls it at start only when ``SYNC_V2_TO_V1`` is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import APIError, NotFoundError

from sync_core.durable_consumer import ensure_durable_consumer
from sync_core.settings import BridgeSettings

log = logging.getLogger(__name__)

# Same delivery settings as the KV consumer: a batch the bridge holds is
# redelivered after the ack wait, and a message failing that often is left
# to the reconciliation of the run (the next session's work).
MAX_DELIVER = 3
ACK_WAIT_SECONDS = 30.0
MAX_ACK_PENDING = 1000
# The server compares max_age in nanoseconds; nats-py gives float seconds back.
MAX_AGE_TOLERANCE_SECONDS = 1e-3


# The key of a V2 object in ``v1-sync-state`` (its lease and durable state) and in the
# task ``sync_v2_event``: ``v2.{object_type}.{uid}``.
V2_KEY_PREFIX = "v2."


# The durable states of V2 objects belong to no life of ``v1-objects``
# (``sync_core.epochs``): one constant epoch, for the run, the reconciler and the commands.
REVERSE_EPOCH = 0


def v2_key(object_type: str, object_id: str) -> str:
    """``v2.{object_type}.{object_id}``: the key of a V2 object of the V2 -> V1 direction."""
    return f"{V2_KEY_PREFIX}{object_type}.{object_id}"


class StreamConfigError(RuntimeError):
    """The existing stream differs in a way the server will not update (its storage)."""


@dataclass(frozen=True, slots=True)
class V2EventCapture:
    """The stream and the durable consumer of the V2 events.

    Parameters:
        stream: ``V2_EVENTS_STREAM``.
        subjects: ``V2_EVENTS_SUBJECTS``.
        max_age: seconds an event is kept (``V2_EVENTS_MAX_AGE``).
        consumer: ``V2_EVENTS_CONSUMER_NAME``.
        max_deliver, ack_wait, max_ack_pending: the consumer's delivery settings.
    """

    stream: str
    subjects: tuple[str, ...]
    max_age: float
    consumer: str
    max_deliver: int = MAX_DELIVER
    ack_wait: float = ACK_WAIT_SECONDS
    max_ack_pending: int = MAX_ACK_PENDING

    def stream_config(self) -> StreamConfig:
        """The stream: file storage, limits retention, the configured age and subjects."""
        return StreamConfig(
            name=self.stream,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=self.max_age,
        )

    def consumer_config(self) -> ConsumerConfig:
        """The durable pull consumer: every event of the stream, explicit acks."""
        return ConsumerConfig(
            name=self.consumer,
            durable_name=self.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=self.max_deliver,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
        )


def stream_differences(wanted: StreamConfig, existing: StreamConfig) -> list[str]:
    """The documented settings on which ``existing`` differs from ``wanted``."""
    found: list[str] = []
    if sorted(existing.subjects or []) != sorted(wanted.subjects or []):
        found.append("subjects")
    for field in ("retention", "storage"):
        if getattr(existing, field) != getattr(wanted, field):
            found.append(field)
    if (
        existing.max_age is None
        or wanted.max_age is None
        or abs(existing.max_age - wanted.max_age) > MAX_AGE_TOLERANCE_SECONDS
    ):
        found.append("max_age")
    return found


async def ensure_v2_event_stream(js: JetStreamContext, capture: V2EventCapture) -> StreamInfo:
    """Create the stream, accept it as it is, or update the settings that drifted."""
    wanted = capture.stream_config()
    try:
        info = await js.stream_info(capture.stream)
    except NotFoundError:
        # Two bridges starting together: an identical create is idempotent on the server.
        try:
            info = await js.add_stream(wanted)
        except APIError as error:
            # Typically another stream already captures one of the subjects.
            raise StreamConfigError(
                f"the server refused to create stream {capture.stream} "
                f"for {', '.join(capture.subjects)}: {error.description}"
            ) from None
        log.info("stream created", extra={"stream": capture.stream})
        return info
    drift = stream_differences(wanted, info.config)
    if not drift:
        log.info("stream exists", extra={"stream": capture.stream})
        return info
    if "storage" in drift:
        raise StreamConfigError(
            f"stream {capture.stream} has {info.config.storage} storage, not file: "
            "the server cannot change it in place (delete the stream to recreate it)"
        )
    updated = info.config.evolve(
        subjects=wanted.subjects, retention=wanted.retention, max_age=wanted.max_age
    )
    try:
        info = await js.update_stream(updated)
    except APIError as error:
        raise StreamConfigError(
            f"stream {capture.stream} differs in {', '.join(drift)} "
            f"and the server refused to update it: {error.description}"
        ) from None
    log.warning("stream updated", extra={"stream": capture.stream, "changed": drift})
    return info


async def ensure_v2_event_capture(
    js: JetStreamContext, capture: V2EventCapture
) -> tuple[StreamInfo, ConsumerInfo]:
    """The stream, then its durable consumer; see the module docstring."""
    stream = await ensure_v2_event_stream(js, capture)
    consumer = await ensure_durable_consumer(js, capture.stream, capture.consumer_config())
    return stream, consumer


def capture_from_settings(settings: BridgeSettings) -> V2EventCapture:
    """The capture ``V2_EVENTS_*`` describe."""
    return V2EventCapture(
        stream=settings.v2_events_stream,
        subjects=tuple(settings.v2_events_subject_list),
        max_age=settings.v2_events_max_age,
        consumer=settings.v2_events_consumer_name,
    )
