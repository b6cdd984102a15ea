"""The bridge's reconciler against real nats-server and valkey.

Each test drives ``Reconciler.sweep()`` (or ``run()``) directly with a short
grace period, writes sync states the way the workers do, and reads back what
landed in the Celery queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from nats.aio.client import Client

from bridge.changes import KvChange
from bridge.messages import TaskMessageEncoder, producer_app
from bridge.metrics import BridgeMetrics
from bridge.publisher import BrokerPublisher, broker_client, database_of
from bridge.reconciler import MAPPED_OUTCOMES, Reconciler, ReconcileTuning
from sandbox.servers import NatsServer, ValkeyServer
from sync_core.broker import broker_transport_options
from sync_core.epochs import bucket_epoch
from sync_core.keys import forward_mapping_key, parse_key
from sync_core.nats_client import SyncNats, connect
from sync_core.sync_state import (
    DEFAULT_STATE_BUCKET,
    RECONCILER_SWEEP_KEY,
    KeyLease,
    PendingRun,
    RunState,
    SweepSummary,
    SyncState,
)
from tests.test_bridge_loop import queued_tasks, task_ids, wait_until

PROJECT = "salesforce-project__c"
COMMITTEE = "platform-collaboration__c"
GRACE = 0.4


@pytest.fixture
def publisher(redis_server: ValkeyServer) -> Iterator[BrokerPublisher]:
    client = broker_client(redis_server.url, broker_transport_options())
    publisher = BrokerPublisher(client)
    yield publisher
    publisher.close()


def reconciler(nc: Client, redis_url: str, publisher: BrokerPublisher, **tuning: Any) -> Reconciler:
    app = producer_app(redis_url, "celery", broker_transport_options())
    encoder = TaskMessageEncoder(app, "celery", database_of(publisher.client))
    values: dict[str, Any] = {"interval": 0.2, "grace": GRACE} | tuning
    return Reconciler(
        nc,
        objects_bucket="v1-objects",
        mappings_bucket="v1-mappings",
        state_bucket=DEFAULT_STATE_BUCKET,
        consumer="no-consumer-in-these-tests",
        encoder=encoder,
        publisher=publisher,
        metrics=BridgeMetrics(),
        tuning=ReconcileTuning(**values),
    )


def objects_epoch(sync_nats: SyncNats) -> int:
    """The current epoch of ``v1-objects`` (what the workers stamp their states with)."""
    return sync_nats.run(bucket_epoch(sync_nats.js, "v1-objects"))


def put_state(sync_nats: SyncNats, state: SyncState, *, mapped: bool = True) -> None:
    """Write ``state`` as a worker would: in the bucket's current life, with the key's
    forward mapping after a sync (unless ``mapped`` is False)."""
    if state.epoch is None:
        state = replace(state, epoch=objects_epoch(sync_nats))
    sync_nats.kv_put(DEFAULT_STATE_BUCKET, state.key, state.to_bytes())
    object_type, record_id = parse_key(state.key)
    if mapped and object_type is not None and state.outcome in MAPPED_OUTCOMES:
        sync_nats.kv_put("v1-mappings", forward_mapping_key(object_type, record_id), b"uid")


def sweep(url: str, redis_url: str, publisher: BrokerPublisher, **tuning: Any) -> SweepSummary:
    async def go() -> SweepSummary:
        nc = await connect(url, "reconcile-test")
        try:
            return await reconciler(nc, redis_url, publisher, **tuning).sweep()
        finally:
            await nc.close()

    return asyncio.run(go())


def test_keys_behind_longer_than_the_grace_are_enqueued_once_per_grace(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    synced = f"{PROJECT}.synced"
    behind = f"{PROJECT}.behind"
    other = "salesforce-account.not-ours"
    synced_rev = sync_nats.kv_put("v1-objects", synced, b"{}")
    behind_rev = sync_nats.kv_put("v1-objects", behind, b"{}")
    sync_nats.kv_put("v1-objects", other, b"{}")
    put_state(sync_nats, SyncState(synced, synced_rev, "created", time.time(), "uid-1"))

    async def scenario() -> list[SweepSummary]:
        nc = await connect(buckets.url, "reconcile-test")
        try:
            one = reconciler(nc, redis_server.url, publisher)
            fresh = await one.sweep()  # written less than a grace ago: the bridge has it
            await asyncio.sleep(GRACE)
            first = await one.sweep()
            again = await one.sweep()  # within a grace of the re-enqueue
            await asyncio.sleep(GRACE)
            queued = queued_tasks(redis_client)
            redis_client.delete("celery")  # the task got lost again (nobody ran it)
            later = await one.sweep()
            return [fresh, first, again, later, queued]
        finally:
            await nc.close()

    fresh, first, again, later, queued = asyncio.run(scenario())
    assert (fresh.keys, fresh.behind, fresh.reenqueued) == (2, 1, 0)
    assert (first.behind, first.reenqueued) == (1, 1)
    assert again.reenqueued == 0
    assert later.reenqueued == 1
    assert task_ids(queued) == [f"{behind}@{behind_rev}"]
    assert task_ids(queued_tasks(redis_client)) == [f"{behind}@{behind_rev}"]
    stored = sync_nats.kv_get(DEFAULT_STATE_BUCKET, RECONCILER_SWEEP_KEY)
    assert stored is not None
    assert SweepSummary.from_bytes(bytes(stored.value)).reenqueued == 1


def test_in_flight_and_dead_lettered_keys_are_left_alone(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    revs = {name: sync_nats.kv_put("v1-objects", f"{PROJECT}.{name}", b"{}") for name in (
        "leased", "retry_due_later", "retry_overdue", "dead", "dead_older", "fresh_state"
    )}  # fmt: skip
    time.sleep(GRACE)
    now = time.time()

    def key(name: str) -> str:
        return f"{PROJECT}.{name}"

    put_state(sync_nats, SyncState(key("leased"), lease=KeyLease("t", now + 30)))
    put_state(
        sync_nats,
        SyncState(
            key("retry_due_later"),
            pending=PendingRun(RunState.RETRY, revs["retry_due_later"], now, due=now + 60),
        ),
    )
    put_state(
        sync_nats,
        SyncState(
            key("retry_overdue"),
            pending=PendingRun(RunState.RETRY, revs["retry_overdue"], now - 60, due=now - 30),
        ),
    )
    put_state(sync_nats, SyncState(key("dead"), revs["dead"], "dead_lettered", now))
    put_state(sync_nats, SyncState(key("dead_older"), revs["dead_older"] - 1, "dead_lettered"))

    summary = sweep(buckets.url, redis_server.url, publisher)

    assert summary.behind == 5  # all but the dead letter at its latest revision
    assert sorted(task_ids(queued_tasks(redis_client))) == sorted(
        [
            f"{key('retry_overdue')}@{revs['retry_overdue']}",
            f"{key('dead_older')}@{revs['dead_older']}",
            f"{key('fresh_state')}@{revs['fresh_state']}",
        ]
    )


def test_revisions_still_waiting_in_the_celery_queue_are_left_alone(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    # A backlog older than the grace: the oldest queued task is for `queued_first`.
    lost = f"{PROJECT}.lost"
    lost_rev = sync_nats.kv_put("v1-objects", lost, b"{}")
    first = f"{PROJECT}.queued_first"
    first_rev = sync_nats.kv_put("v1-objects", first, b"{}")
    later = f"{PROJECT}.queued_later"
    later_rev = sync_nats.kv_put("v1-objects", later, b"{}")
    app = producer_app(redis_server.url, "celery", broker_transport_options())
    encoder = TaskMessageEncoder(app, "celery", database_of(publisher.client))
    publisher.push(
        encoder.encode([KvChange(first, first_rev, "PUT"), KvChange(later, later_rev, "PUT")])
    )
    time.sleep(GRACE)

    summary = sweep(buckets.url, redis_server.url, publisher)

    # Only the revision below the queue floor is known not to be queued any more.
    assert (summary.behind, summary.reenqueued) == (3, 1)
    assert sorted(task_ids(queued_tasks(redis_client))) == sorted(
        [f"{first}@{first_rev}", f"{later}@{later_rev}", f"{lost}@{lost_rev}"]
    )


def test_backpressure_caps_the_batch_at_the_room_left(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    for n in range(10):
        sync_nats.kv_put("v1-objects", f"{PROJECT}.k{n}", b"{}")
    redis_client.lpush("celery", *[f"waiting-{n}" for n in range(6)])
    time.sleep(GRACE)

    summary = sweep(buckets.url, redis_server.url, publisher, max_queue_depth=8)

    assert (summary.behind, summary.reenqueued, summary.deferred) == (10, 2, 8)
    assert redis_client.llen("celery") == 8
    full = sweep(buckets.url, redis_server.url, publisher, max_queue_depth=8)
    assert full.reenqueued == 0


def test_parked_children_are_redriven_when_the_parent_is_mapped_or_the_wait_is_over(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    now = time.time()
    children = {}
    for name, since in (("mapped", now), ("waiting", now), ("expired", now - 100)):
        child = f"{COMMITTEE}.{name}"
        revision = sync_nats.kv_put("v1-objects", child, b"{}")
        children[name] = f"{child}@{revision}"
        pending = PendingRun(RunState.PARKED, revision, since, parent_key=f"project.sfid.{name}")
        put_state(sync_nats, SyncState(child, pending=pending))
    # The parent's run wrote its mapping, then died before releasing the child.
    sync_nats.kv_put("v1-mappings", "project.sfid.mapped", b"uid-parent")

    summary = sweep(buckets.url, redis_server.url, publisher, parent_wait=50)

    assert summary.behind == 3
    assert sorted(task_ids(queued_tasks(redis_client))) == sorted(
        [children["mapped"], children["expired"]]
    )


def test_two_reconcilers_one_sweeps_and_the_other_takes_over_on_stop(
    buckets: NatsServer, redis_server: ValkeyServer, publisher: BrokerPublisher
) -> None:
    async def scenario() -> tuple[int, int, int]:
        nc = await connect(buckets.url, "reconcile-test")
        try:
            first = reconciler(nc, redis_server.url, publisher, interval=0.15)
            second = reconciler(nc, redis_server.url, publisher, interval=0.15)
            stop_first, stop_second = asyncio.Event(), asyncio.Event()
            runs = [
                asyncio.create_task(first.run(stop_first)),
                asyncio.create_task(second.run(stop_second)),
            ]
            await asyncio.sleep(1.2)
            leaders = [r for r in (first, second) if r.sweeps > 0]
            assert len(leaders) == 1, "both reconcilers swept"
            leader, follower = leaders[0], (second if leaders[0] is first else first)
            assert follower.sweeps == 0
            (stop_first if leader is first else stop_second).set()
            taken_over_from = follower.sweeps
            deadline = time.monotonic() + 5
            while follower.sweeps == taken_over_from:
                assert time.monotonic() < deadline, "nobody took over"
                await asyncio.sleep(0.05)
            (stop_second if leader is first else stop_first).set()
            await asyncio.gather(*runs)
            return leader.sweeps, taken_over_from, follower.sweeps
        finally:
            await nc.close()

    leader_sweeps, before, after = asyncio.run(scenario())
    assert leader_sweeps >= 3
    assert before == 0
    assert after >= 1


def test_the_bridge_runs_the_reconciler(
    buckets: NatsServer, redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    """A bridge process wires the reconciler: metrics and the stored sweep appear."""
    from tests.bridge_harness import BackgroundBridge
    from tests.test_bridge_loop import settings_for

    settings = settings_for(buckets, redis_server, reconcile_interval=0.2, reconcile_grace=GRACE)
    bridge = BackgroundBridge(settings).start()
    try:
        reconciler = bridge.service.reconciler
        assert reconciler is not None
        wait_until(lambda: reconciler.sweeps > 0, "a sweep")
        exposition = bridge.metrics.exposition().decode()
        for name in (
            "v1sync_reconcile_keys_behind",
            "v1sync_reconcile_reenqueued_total",
            "v1sync_reconcile_sweep_seconds_bucket",
            "v1sync_reconcile_leader 1.0",
            "v1sync_reconcile_last_sweep_timestamp_seconds",
            # The process's own series and the build, in the bridge's own registry.
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "python_info{",
            'v1sync_build_info{celery="',
        ):
            assert name in exposition
    finally:
        bridge.stop()


def test_a_pending_run_keeps_its_retry_count_in_the_stored_state() -> None:
    """The retry budget spent is durable; states written before the count read as 0."""
    pending = PendingRun(RunState.RETRY, 7, 100.0, due=105.0, attempt=3)
    state = SyncState("salesforce-project__c.a1", revision=5, outcome="created", pending=pending)
    assert SyncState.from_bytes(state.to_bytes(), state.key).pending == pending
    older = b'{"key":"k","revision":5,"pending":{"state":"retry","revision":7,"since":1,"due":2}}'
    read = SyncState.from_bytes(older, "k").pending
    assert read is not None
    assert read.attempt == 0
    # A fresh pending run stores no count, byte for byte as before.
    fresh = SyncState("k", pending=PendingRun(RunState.PARKED, 7, 1.0, parent_key="project.sfid.p"))
    assert b"attempt" not in fresh.to_bytes()


def test_a_sweep_without_a_mappings_bucket_still_redrives_what_is_behind(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    """The mapping check needs ``v1-mappings``; the rest of the sweep does not."""
    sync_nats.run(sync_nats.js.delete_key_value("v1-mappings"))
    behind = f"{PROJECT}.behind"
    revision = sync_nats.kv_put("v1-objects", behind, b"{}")
    time.sleep(GRACE)  # the change must be older than the grace to be re-driven
    summary = sweep(buckets.url, redis_server.url, publisher)
    assert (summary.behind, summary.reenqueued) == (1, 1)
    assert summary.mappings_epoch is None
    assert task_ids(queued_tasks(redis_client)) == [f"{behind}@{revision}"]


def keys_behind_gauge(rec: Reconciler) -> float | None:
    """``v1sync_reconcile_keys_behind`` as the bridge exposes it (None: not exported)."""
    return rec.metrics.registry.get_sample_value("v1sync_reconcile_keys_behind")


def test_keys_behind_counts_only_overdue_keys_not_parked_retrying_or_on_their_way(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    # A bulk load of children whose parents are not there yet: all parked.
    now = time.time()
    for n in range(20):
        child = f"{COMMITTEE}.bulk{n}"
        revision = sync_nats.kv_put("v1-objects", child, b"{}")
        pending = PendingRun(RunState.PARKED, revision, now, parent_key=f"project.sfid.p{n}")
        put_state(sync_nats, SyncState(child, pending=pending))
    retrying = f"{PROJECT}.retrying"
    retry_rev = sync_nats.kv_put("v1-objects", retrying, b"{}")
    put_state(
        sync_nats,
        SyncState(retrying, pending=PendingRun(RunState.RETRY, retry_rev, now, due=now + 60)),
    )
    leased = f"{PROJECT}.leased"
    sync_nats.kv_put("v1-objects", leased, b"{}")
    put_state(sync_nats, SyncState(leased, lease=KeyLease("t", now + 30)))
    lost = f"{PROJECT}.lost"
    sync_nats.kv_put("v1-objects", lost, b"{}")
    queued = f"{PROJECT}.queued"
    queued_rev = sync_nats.kv_put("v1-objects", queued, b"{}")
    app = producer_app(redis_server.url, "celery", broker_transport_options())
    encoder = TaskMessageEncoder(app, "celery", database_of(publisher.client))
    publisher.push(encoder.encode([KvChange(queued, queued_rev, "PUT")]))
    time.sleep(GRACE)
    fresh = f"{PROJECT}.fresh"  # written less than a grace before the sweep
    sync_nats.kv_put("v1-objects", fresh, b"{}")

    async def scenario() -> tuple[SweepSummary, float | None, SweepSummary, float | None]:
        nc = await connect(buckets.url, "reconcile-test")
        try:
            rec = reconciler(nc, redis_server.url, publisher)
            rec.metrics.reconciler_leads(True)
            first = await rec.sweep()
            gauge = keys_behind_gauge(rec)
            # The lost key was re-enqueued just now: still behind at the next sweep.
            again = await rec.sweep()
            return first, gauge, again, keys_behind_gauge(rec)
        finally:
            await nc.close()

    first, gauge, again, gauge_again = asyncio.run(scenario())
    assert first.behind == 25  # every key without a terminal outcome
    assert gauge == 1  # only the lost one
    assert first.reenqueued == 1
    assert again.reenqueued == 0
    assert gauge_again == 1


def test_only_the_lease_holder_exports_keys_behind(
    buckets: NatsServer, redis_server: ValkeyServer, publisher: BrokerPublisher
) -> None:
    async def scenario() -> dict[str, Any]:
        nc = await connect(buckets.url, "reconcile-test")
        try:
            first = reconciler(nc, redis_server.url, publisher, interval=0.15)
            second = reconciler(nc, redis_server.url, publisher, interval=0.15)
            stops = {first: asyncio.Event(), second: asyncio.Event()}
            runs = [asyncio.create_task(r.run(stops[r])) for r in (first, second)]
            deadline = time.monotonic() + 5
            while not (first.sweeps or second.sweeps):
                assert time.monotonic() < deadline, "nobody swept"
                await asyncio.sleep(0.05)
            leader = first if first.sweeps else second
            follower = second if leader is first else first
            seen: dict[str, Any] = {
                "leader": keys_behind_gauge(leader),
                "follower": keys_behind_gauge(follower),
                "leader_flag": leader.metrics.registry.get_sample_value("v1sync_reconcile_leader"),
                "follower_flag": follower.metrics.registry.get_sample_value(
                    "v1sync_reconcile_leader"
                ),
            }
            stops[leader].set()
            before = follower.sweeps
            while follower.sweeps == before:
                assert time.monotonic() < deadline + 5, "nobody took over"
                await asyncio.sleep(0.05)
            seen["old_leader"] = keys_behind_gauge(leader)
            seen["new_leader"] = keys_behind_gauge(follower)
            seen["last_sweep"] = follower.metrics.registry.get_sample_value(
                "v1sync_reconcile_last_sweep_timestamp_seconds"
            )
            stops[follower].set()
            await asyncio.gather(*runs)
            return seen
        finally:
            await nc.close()

    started = time.time()
    seen = asyncio.run(scenario())
    assert seen["leader"] == 0
    assert seen["follower"] is None
    assert (seen["leader_flag"], seen["follower_flag"]) == (1, 0)
    assert seen["old_leader"] is None  # stopped: no stale value left behind
    assert seen["new_leader"] == 0
    assert seen["last_sweep"] >= started
