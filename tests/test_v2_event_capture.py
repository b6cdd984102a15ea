"""The durable capture of V2 committee events: stream, consumer, the bridge's switch.

Against a real nats-server: events the V2 indexer publishes on core NATS
while nothing of ours runs are kept by the stream and delivered to the
durable consumer later; with ``SYNC_V2_TO_V1`` off the bridge creates nothing
of that direction.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from sandbox.servers import NatsServer, ValkeyServer
from sync_core.nats_client import SyncNats
from sync_core.v2_events import (
    StreamConfigError,
    V2EventCapture,
    capture_from_settings,
    ensure_v2_event_capture,
)
from tests.bridge_harness import BackgroundBridge
from tests.test_bridge_loop import settings_for

STREAM = "committee_events"
CONSUMER = "v1-sync-helper-v2-events-consumer"
FOURTEEN_DAYS = 14 * 24 * 3600.0
CAPTURE = V2EventCapture(
    stream=STREAM,
    subjects=("lfx.committee.>", "lfx.committee_member.>"),
    max_age=FOURTEEN_DAYS,
    consumer=CONSUMER,
)
FETCH_TIMEOUT = 5.0


def _event(subject: str, uid: str) -> bytes:
    object_type = subject.split(".")[1]
    return json.dumps(
        {
            "document_id": f"{object_type}:{uid}",
            "object_id": uid,
            "object_type": object_type,
            "action": subject.rsplit(".", 1)[1],
            "timestamp": "2026-12-07T00:00:00Z",
            "body": {"data": {"uid": uid}},
        }
    ).encode()


def _stream_names(sync_nats: SyncNats) -> list[str]:
    return [info.config.name for info in sync_nats.run(sync_nats.js.streams_info())]


def test_creates_the_documented_stream_and_consumer(sync_nats: SyncNats) -> None:
    stream, consumer = sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    config = sync_nats.run(sync_nats.js.stream_info(STREAM)).config
    assert sorted(config.subjects or []) == ["lfx.committee.>", "lfx.committee_member.>"]
    assert config.storage == StorageType.FILE
    assert config.retention == RetentionPolicy.LIMITS
    assert config.max_age == pytest.approx(FOURTEEN_DAYS)
    durable = sync_nats.run(sync_nats.js.consumer_info(STREAM, CONSUMER)).config
    assert durable.durable_name == CONSUMER
    assert consumer.name == CONSUMER
    assert stream.config.name == STREAM


def test_a_second_call_changes_nothing(sync_nats: SyncNats) -> None:
    first_stream, first_consumer = sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    second_stream, second_consumer = sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    assert second_stream.created == first_stream.created
    assert second_consumer.created == first_consumer.created


def test_a_drifted_max_age_is_updated_in_place_and_events_kept(sync_nats: SyncNats) -> None:
    sync_nats.run(
        sync_nats.js.add_stream(
            StreamConfig(
                name=STREAM,
                subjects=["lfx.committee.>"],
                storage=StorageType.FILE,
                max_age=60.0,
                description="made by the chart",
            )
        )
    )
    sync_nats.run(
        sync_nats.js.publish("lfx.committee.created", _event("lfx.committee.created", "a"))
    )
    info, _ = sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    assert info.config.max_age == pytest.approx(FOURTEEN_DAYS)
    assert sorted(info.config.subjects or []) == ["lfx.committee.>", "lfx.committee_member.>"]
    assert info.config.description == "made by the chart"
    assert info.state.messages == 1


def test_memory_storage_cannot_be_changed_and_says_so(sync_nats: SyncNats) -> None:
    sync_nats.run(
        sync_nats.js.add_stream(
            StreamConfig(name=STREAM, subjects=list(CAPTURE.subjects), storage=StorageType.MEMORY)
        )
    )
    with pytest.raises(StreamConfigError, match="storage"):
        sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))


def test_subjects_another_stream_captures_stop_start_up_naming_them(
    sync_nats: SyncNats,
) -> None:
    sync_nats.run(sync_nats.js.add_stream(StreamConfig(name="other", subjects=["lfx.committee.>"])))
    with pytest.raises(StreamConfigError, match=r"lfx\.committee\.>"):
        sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))


def test_events_published_while_nobody_listens_reach_the_consumer_later(
    sync_nats: SyncNats,
) -> None:
    sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    published = [
        ("lfx.committee.created", "c1"),
        ("lfx.committee_member.created", "m1"),
        ("lfx.committee.updated", "c1"),
        ("lfx.committee_member.deleted", "m1"),
    ]

    async def publish_on_core_nats() -> None:
        # Core NATS, fire-and-forget, as the V2 indexer does: no JetStream ack.
        for subject, uid in published:
            await sync_nats.nc.publish(subject, _event(subject, uid))
        await sync_nats.nc.publish("lfx.project.updated", b"{}")  # not captured
        await sync_nats.nc.flush()

    sync_nats.run(publish_on_core_nats())

    async def pull_later() -> list[tuple[str, str]]:
        # A fetch returns what the stream holds when it answers: the events are
        # stored a moment after a core publish, so pull until all of them came.
        subscription = await sync_nats.js.pull_subscribe_bind(CONSUMER, STREAM)
        pulled: list[tuple[str, str]] = []
        deadline = time.monotonic() + FETCH_TIMEOUT
        while len(pulled) < len(published) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                for msg in await subscription.fetch(10, timeout=1.0):
                    await msg.ack()
                    pulled.append((msg.subject, json.loads(msg.data)["object_id"]))
        return pulled

    assert sync_nats.run(pull_later(), timeout=FETCH_TIMEOUT + 5) == published


def test_the_bridge_creates_nothing_of_the_direction_when_the_switch_is_off(
    buckets: NatsServer, redis_server: ValkeyServer, sync_nats: SyncNats
) -> None:
    settings = settings_for(buckets, redis_server)
    assert settings.sync_v2_to_v1 is False
    with BackgroundBridge(settings):
        assert STREAM not in _stream_names(sync_nats)
    with pytest.raises(NotFoundError):
        sync_nats.run(sync_nats.js.consumer_info(STREAM, CONSUMER))


def test_the_bridge_creates_the_capture_at_start_when_the_switch_is_on(
    buckets: NatsServer, redis_server: ValkeyServer, sync_nats: SyncNats
) -> None:
    settings = settings_for(buckets, redis_server, sync_v2_to_v1=True, v2_events_max_age=3600)
    with BackgroundBridge(settings):
        info = sync_nats.run(sync_nats.js.stream_info(STREAM))
        assert info.config.max_age == pytest.approx(3600)
        assert sync_nats.run(sync_nats.js.consumer_info(STREAM, CONSUMER)).name == CONSUMER
    assert capture_from_settings(settings).subjects == CAPTURE.subjects
