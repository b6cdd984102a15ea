"""The V2 events consumer's pending counts as bridge gauges (``bridge.consumer_watch``).

Against a real nats-server: the gauges follow the durable consumer's
``num_pending`` and ``num_ack_pending``; the bridge serves them only with
``SYNC_V2_TO_V1`` on.
"""

from __future__ import annotations

import json
import time

import pytest
from nats.js.errors import NotFoundError

from bridge.consumer_watch import ConsumerWatch
from bridge.metrics import BridgeMetrics
from sandbox.servers import NatsServer, ValkeyServer
from sync_core.nats_client import SyncNats
from sync_core.v2_events import V2EventCapture, ensure_v2_event_capture
from tests.bridge_harness import BackgroundBridge
from tests.test_bridge_loop import settings_for

STREAM = "committee_events"
CONSUMER = "v1-sync-helper-v2-events-consumer"
CAPTURE = V2EventCapture(
    stream=STREAM,
    subjects=("lfx.committee.>", "lfx.committee_member.>"),
    max_age=3600.0,
    consumer=CONSUMER,
)
FETCH_TIMEOUT = 5.0
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05
PENDING = "v1sync_bridge_v2_events_pending"
ACK_PENDING = "v1sync_bridge_v2_events_ack_pending"


def gauge(metrics: BridgeMetrics, name: str) -> float | None:
    """A gauge's value as the bridge serves it (None: not served)."""
    return metrics.registry.get_sample_value(name)


def publish(sync_nats: SyncNats, count: int) -> None:
    for number in range(count):
        body = json.dumps({"object_id": f"c{number}", "object_type": "committee"}).encode()
        sync_nats.run(sync_nats.js.publish("lfx.committee.updated", body))


def test_the_gauges_follow_the_consumers_pending_and_unacked_events(sync_nats: SyncNats) -> None:
    sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    metrics = BridgeMetrics()
    watch = ConsumerWatch(sync_nats.js, STREAM, CONSUMER, metrics)
    assert gauge(metrics, PENDING) is None  # not served before the direction's loop starts
    metrics.export_v2_events_consumer()
    metrics.export_v2_events_consumer()  # once only: a second call registers nothing twice
    publish(sync_nats, 3)
    assert sync_nats.run(watch.look()) is True
    assert (gauge(metrics, PENDING), gauge(metrics, ACK_PENDING)) == (3, 0)

    async def fetch_two_without_ack() -> int:
        subscription = await sync_nats.js.pull_subscribe_bind(CONSUMER, STREAM)
        return len(await subscription.fetch(2, timeout=FETCH_TIMEOUT))

    assert sync_nats.run(fetch_two_without_ack(), timeout=FETCH_TIMEOUT + 5) == 2
    assert sync_nats.run(watch.look()) is True
    assert (gauge(metrics, PENDING), gauge(metrics, ACK_PENDING)) == (1, 2)


def test_a_missing_consumer_keeps_the_last_values(sync_nats: SyncNats) -> None:
    sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    metrics = BridgeMetrics()
    metrics.export_v2_events_consumer()
    publish(sync_nats, 2)
    watch = ConsumerWatch(sync_nats.js, STREAM, CONSUMER, metrics)
    assert sync_nats.run(watch.look()) is True
    sync_nats.run(sync_nats.js.delete_consumer(STREAM, CONSUMER))
    with pytest.raises(NotFoundError):
        sync_nats.run(sync_nats.js.consumer_info(STREAM, CONSUMER))
    assert sync_nats.run(watch.look()) is False
    assert gauge(metrics, PENDING) == 2


def test_the_bridge_serves_the_gauges_only_with_the_direction_on(
    buckets: NatsServer, redis_server: ValkeyServer, sync_nats: SyncNats
) -> None:
    off = settings_for(buckets, redis_server)
    with BackgroundBridge(off) as bridge:
        assert b"v1sync_bridge_v2_events" not in bridge.metrics.exposition()
    on = settings_for(buckets, redis_server, sync_v2_to_v1=True, v2_events_max_age=3600)
    with BackgroundBridge(on) as bridge:
        deadline = time.monotonic() + WAIT_SECONDS
        while gauge(bridge.metrics, PENDING) is None:
            assert time.monotonic() < deadline, "the bridge never served the gauge"
            time.sleep(POLL_SECONDS)
        # The bridge drains the stream as it goes: nothing was published, nothing pending.
        assert gauge(bridge.metrics, PENDING) == 0
        assert gauge(bridge.metrics, ACK_PENDING) == 0
