"""The bridge loop against real nats-server and valkey: enqueue, ack, outages, sharing."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
from nats.js.api import ConsumerInfo

from bridge.consumer import ConsumerSpec, ensure_consumer
from bridge.loop import LoopTuning
from bridge.messages import decode_envelope
from sandbox.servers import NatsServer, ValkeyServer
from sync_core.broker import SYNC_TASK_NAME
from sync_core.epochs import bucket_epoch
from sync_core.nats_client import OBJECTS_BUCKET_HISTORY, SyncNats, ensure_bucket
from sync_core.settings import BridgeSettings
from tests.bridge_harness import BackgroundBridge

BUCKET = "v1-objects"
STREAM = f"KV_{BUCKET}"
CONSUMER = "v1-sync-helper-kv-consumer"
QUEUE = "celery"
DEADLINE = 20.0
PUT_WINDOW = 200
RECORD = b'{"sfid":"a0x","name":"P"}'


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it is true or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def put_many(sync_nats: SyncNats, keys: list[str]) -> list[int]:
    """Put every key once; return the revisions, in order."""

    async def put_all() -> list[int]:
        kv = await sync_nats.js.key_value(BUCKET)
        revisions: list[int] = []
        for start in range(0, len(keys), PUT_WINDOW):
            window = keys[start : start + PUT_WINDOW]
            revisions += await asyncio.gather(*(kv.put(k, RECORD) for k in window))
        return revisions

    return sync_nats.run(put_all(), timeout=60)


def consumer_info(sync_nats: SyncNats, name: str = CONSUMER) -> ConsumerInfo:
    return sync_nats.run(sync_nats.js.consumer_info(STREAM, name))


def queued_tasks(client: redis.Redis) -> list[dict[str, Any]]:
    """Every task message in the queue, oldest first (the order workers take them)."""
    return [decode_envelope(raw) for raw in reversed(client.lrange(QUEUE, 0, -1))]


def task_ids(tasks: list[dict[str, Any]]) -> list[str]:
    return [t["headers"]["id"] for t in tasks]


def settings_for(nats: NatsServer, valkey: ValkeyServer, **values: Any) -> BridgeSettings:
    return BridgeSettings(
        nats_url=nats.url, redis_url=valkey.url, port=0, bind="127.0.0.1", **values
    )


@pytest.fixture
def make_bridge(
    buckets: NatsServer, redis_server: ValkeyServer
) -> Iterator[Callable[..., BackgroundBridge]]:
    """Start bridges on the test servers; every one is stopped at teardown."""
    started: list[BackgroundBridge] = []

    def make(
        spec: ConsumerSpec | None = None, serve_http: bool = False, **tuning: Any
    ) -> BackgroundBridge:
        bridge = BackgroundBridge(
            settings_for(buckets, redis_server),
            spec=spec,
            tuning=LoopTuning(**{"batch_size": 100, **tuning}),
            serve_http=serve_http,
        )
        started.append(bridge)
        return bridge.start()

    yield make
    errors = []
    for bridge in started:
        try:
            bridge.stop()
        except Exception as error:
            errors.append(error)
    assert not errors


def test_every_put_becomes_one_task_and_the_consumer_ends_clean(
    sync_nats: SyncNats, redis_client: redis.Redis, make_bridge: Callable[..., BackgroundBridge]
) -> None:
    keys = [f"salesforce-project__c.a0x{i:05d}" for i in range(350)]
    revisions = put_many(sync_nats, keys)
    bridge = make_bridge()
    wait_until(lambda: redis_client.llen(QUEUE) >= len(keys), "every task")
    wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "every ack")

    tasks = queued_tasks(redis_client)
    assert task_ids(tasks) == [f"{k}@{r}" for k, r in zip(keys, revisions, strict=True)]
    assert {t["headers"]["task"] for t in tasks} == {SYNC_TASK_NAME}
    assert [t["body"][0] for t in tasks] == [
        [k, r, "PUT"] for k, r in zip(keys, revisions, strict=True)
    ]
    info = consumer_info(sync_nats)
    assert info.num_pending == 0
    assert info.num_ack_pending == 0
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq == revisions[-1]
    assert info.num_redelivered == 0
    metrics = bridge.metrics
    assert metrics.enqueued._value.get() == len(keys)
    assert metrics.acked._value.get() == len(keys)


def test_tasks_carry_the_bucket_epoch_and_a_rebuilt_bucket_brings_the_new_one(
    sync_nats: SyncNats, redis_client: redis.Redis, make_bridge: Callable[..., BackgroundBridge]
) -> None:
    """Revisions restart at 1 in a rebuilt bucket: each task says which life it is of."""
    make_bridge()
    first = sync_nats.run(bucket_epoch(sync_nats.js, BUCKET))
    sync_nats.kv_put(BUCKET, "salesforce-project__c.before", RECORD)
    wait_until(lambda: redis_client.llen(QUEUE) >= 1, "the first task")

    async def rebuild() -> None:
        await sync_nats.js.delete_key_value(BUCKET)
        await ensure_bucket(sync_nats.js, BUCKET, OBJECTS_BUCKET_HISTORY)
        # Another bridge (or the chart) creates the consumer on the new stream: this
        # bridge's pull subscription, bound by name, is served by it without a resubscribe.
        await ensure_consumer(sync_nats.js, ConsumerSpec(CONSUMER, BUCKET))

    sync_nats.run(rebuild())
    second = sync_nats.run(bucket_epoch(sync_nats.js, BUCKET))
    assert second != first
    sync_nats.kv_put(BUCKET, "salesforce-project__c.after", RECORD)
    wait_until(lambda: redis_client.llen(QUEUE) >= 2, "the task of the new life")
    stamps = {t["body"][0][0]: t["body"][1] for t in queued_tasks(redis_client)}
    assert stamps == {
        "salesforce-project__c.before": {"epoch": first},
        "salesforce-project__c.after": {"epoch": second},
    }


def test_deletes_and_purges_become_tasks_with_their_operation(
    sync_nats: SyncNats, redis_client: redis.Redis, make_bridge: Callable[..., BackgroundBridge]
) -> None:
    kv = sync_nats.kv(BUCKET)
    put_rev = sync_nats.kv_put(BUCKET, "salesforce-project__c.del", RECORD)
    sync_nats.run(kv.delete("salesforce-project__c.del"))
    sync_nats.kv_put(BUCKET, "salesforce-project__c.purge", RECORD)
    sync_nats.run(kv.purge("salesforce-project__c.purge"))
    make_bridge()
    # The purge rolled up the key's earlier PUT: three messages are left.
    wait_until(lambda: redis_client.llen(QUEUE) >= 3, "three tasks")
    args = [t["body"][0] for t in queued_tasks(redis_client)]
    assert args == [
        ["salesforce-project__c.del", put_rev, "PUT"],
        ["salesforce-project__c.del", put_rev + 1, "DEL"],
        ["salesforce-project__c.purge", put_rev + 3, "PURGE"],
    ]
    wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "every ack")


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_a_redis_outage_loses_nothing_and_spends_no_delivery(
    sync_nats: SyncNats,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    make_bridge: Callable[..., BackgroundBridge],
) -> None:
    # A short ack wait, so the outage lasts several ack waits in a few seconds.
    spec = ConsumerSpec(CONSUMER, BUCKET, ack_wait=1.5)
    # No idle broker checks: the bridge must learn of the outage from a failed
    # push, with a batch in hand, whatever the timing of the puts below.
    bridge = make_bridge(spec=spec, serve_http=True, batch_size=40, idle_broker_check=3600.0)
    first = put_many(sync_nats, [f"salesforce-project__c.w1-{i}" for i in range(100)])
    wait_until(lambda: redis_client.llen(QUEUE) == 100, "the first wave")
    wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "the first acks")
    seen = set(task_ids(queued_tasks(redis_client)))
    assert _readyz(bridge.http_port) == 200

    redis_server.stop()
    second = put_many(sync_nats, [f"salesforce-project__c.w2-{i}" for i in range(100)])
    wait_until(lambda: bridge.metrics.broker_down._value.get() == 1, "the broker-down gauge")
    wait_until(lambda: bridge.metrics.in_progress._value.get() > 0, "in_progress signals")
    outage_ends = time.monotonic() + 3 * spec.ack_wait
    while time.monotonic() < outage_ends:
        info = consumer_info(sync_nats)
        assert info.ack_floor is not None
        assert info.ack_floor.stream_seq == first[-1]
        assert info.num_ack_pending is not None
        assert 0 < info.num_ack_pending <= 40, "fetching must stop while the broker is down"
        assert info.num_redelivered == 0
        assert _readyz(bridge.http_port) == 503
        time.sleep(0.1)
    assert bridge.metrics.acked._value.get() == 100

    redis_server.start()
    wait_until(lambda: consumer_info(sync_nats).num_pending == 0, "the backlog to be fetched")
    wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "every ack")
    wait_until(lambda: _readyz(bridge.http_port) == 200, "ready again")
    seen |= set(task_ids(queued_tasks(redis_client)))
    expected = {f"salesforce-project__c.w1-{i}@{r}" for i, r in enumerate(first)}
    expected |= {f"salesforce-project__c.w2-{i}@{r}" for i, r in enumerate(second)}
    assert seen == expected
    info = consumer_info(sync_nats)
    assert info.num_redelivered == 0
    assert bridge.metrics.broker_down._value.get() == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.http_port}/metrics") as reply:
        text = reply.read().decode()
    assert "v1sync_bridge_broker_down 0.0" in text
    assert "v1sync_bridge_tasks_enqueued_total 200.0" in text
    assert "v1sync_bridge_enqueue_seconds_bucket" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.http_port}/livez") as reply:
        assert reply.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.http_port}/readyz") as reply:
        assert json.loads(reply.read())["checks"] == {
            "nats": True,
            "subscription": True,
            "broker": True,
        }


def test_two_bridges_share_one_consumer(
    sync_nats: SyncNats, redis_client: redis.Redis, make_bridge: Callable[..., BackgroundBridge]
) -> None:
    one = make_bridge(batch_size=50)
    two = make_bridge(batch_size=50)
    keys = [f"salesforce-project__c.s{i:05d}" for i in range(1500)]
    revisions = put_many(sync_nats, keys)
    wait_until(lambda: redis_client.llen(QUEUE) >= len(keys), "every task")
    wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "every ack")
    ids = task_ids(queued_tasks(redis_client))
    assert sorted(ids) == sorted(f"{k}@{r}" for k, r in zip(keys, revisions, strict=True))
    fetched = [one.metrics.fetched._value.get(), two.metrics.fetched._value.get()]
    assert sum(fetched) == len(keys)
    assert min(fetched) > 0, f"one bridge did all the work: {fetched}"


def test_a_deep_queue_pauses_fetching_until_it_drains(
    sync_nats: SyncNats, redis_client: redis.Redis, make_bridge: Callable[..., BackgroundBridge]
) -> None:
    bridge = make_bridge(batch_size=40, max_queue_depth=100)
    keys = [f"salesforce-project__c.b{i:04d}" for i in range(400)]
    put_many(sync_nats, keys)
    metrics = bridge.metrics
    wait_until(lambda: metrics.backpressure_pauses._value.get() >= 1, "a backpressure pause")
    held_at = metrics.fetched._value.get()
    assert 100 < redis_client.llen(QUEUE) <= 100 + 40
    # Paused: over a few drain polls, nothing more is fetched and updates wait in JetStream.
    quiet_until = time.monotonic() + 1.0
    while time.monotonic() < quiet_until:
        assert metrics.fetched._value.get() == held_at
        time.sleep(0.05)
    assert consumer_info(sync_nats).num_pending == len(keys) - held_at

    # Play the workers: take tasks off the queue until every update came through.
    taken: list[str] = []

    def drain() -> bool:
        while (raw := redis_client.rpop(QUEUE)) is not None:
            taken.append(decode_envelope(cast(bytes, raw))["headers"]["id"])
        return len(taken) == len(keys)

    wait_until(drain, "every task after draining")
    assert len(set(taken)) == len(keys)
    assert metrics.queue_depth._value.get() <= 100 + 40
