"""Epochs of ``v1-objects`` (issue 22): records of another life of the bucket count as unknown.

Pure checks of the state and sweep decisions, and the worker's epoch cache and
the reconciler against a real nats-server whose bucket is rebuilt.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import pytest

from bridge.reconciler import Latest, Reconciler, ReconcileTuning, mappings_check_due
from sandbox.servers import NatsServer
from sync_core.epochs import BucketLife, bucket_epoch, epoch_of, format_epoch
from sync_core.keys import forward_mapping_key
from sync_core.nats_client import OBJECTS_BUCKET_HISTORY, SyncNats, ensure_bucket
from sync_core.sync_state import (
    KeyLease,
    ParkedChild,
    PendingRun,
    RunState,
    SweepSummary,
    SyncState,
    decode_state,
)
from tasks.stores.id_mappings import COMMITTEE_SFID, MEMBER_SFID, PROJECT_SFID
from tasks.stores.objects_epoch import ObjectsEpoch

KEY = "salesforce-project__c.a0941000002wBz9AAE"
OLD, NEW = 1_700_000_000_000_000, 1_800_000_000_000_000


def test_a_state_of_another_life_reads_as_a_key_never_synced() -> None:
    lease = KeyLease("token", time.time() + 5)
    pending = PendingRun(RunState.RETRY, 500, 1.0, due=2.0)
    old = SyncState(KEY, 500, "updated", 1.0, "uid-1", pending, lease, epoch=OLD)
    assert old.in_life(OLD) is old
    fresh = old.in_life(NEW)
    assert (fresh.revision, fresh.outcome, fresh.pending, fresh.epoch) == (-1, None, None, NEW)
    assert (fresh.uid, fresh.lease) == ("uid-1", lease)  # facts of no life stay
    assert not fresh.synced(3)
    assert not fresh.settled(3)
    legacy = decode_state(b'{"key":"k","revision":900,"outcome":"created"}', KEY)
    assert legacy.epoch is None
    assert not legacy.in_life(NEW).settled(1)


def test_finishing_a_revision_of_a_new_life_replaces_a_higher_one_of_the_old() -> None:
    old = SyncState(KEY, 500, "dead_lettered", 1.0, "uid-1", epoch=OLD)
    done = old.finished(3, "unchanged", 2.0, None, epoch=NEW)
    assert (done.revision, done.outcome, done.epoch, done.uid) == (3, "unchanged", NEW, "uid-1")
    assert done.finished(2, "updated", 3.0, "uid-2", epoch=NEW) == done  # older news, same life
    assert SyncState.from_bytes(done.to_bytes(), KEY) == done


def test_parked_children_and_sweep_summaries_keep_their_epoch_and_read_old_forms() -> None:
    child = ParkedChild(KEY, 4, 1.5, NEW)
    assert ParkedChild.from_bytes(child.to_bytes()) == child
    assert ParkedChild.from_bytes(b'{"key":"k","revision":4,"since":1.5}').epoch is None
    summary = SweepSummary(1.0, 0.1, 3, 1, 1, 0, "h", NEW, 2, 1, OLD, 40, 0)
    assert SweepSummary.from_bytes(summary.to_bytes()) == summary
    old_form = b'{"at":1,"duration":0.1,"keys":3,"behind":1,"reenqueued":1,"holder":"h"}'
    assert SweepSummary.from_bytes(old_form).epoch is None


def test_the_epoch_is_the_stream_creation_time_in_microseconds() -> None:
    class Info:
        created = datetime.datetime(2026, 12, 7, 0, 8, 4, 123456, tzinfo=datetime.UTC)

    epoch = epoch_of(Info())  # type: ignore[arg-type]
    assert epoch == int(Info.created.timestamp()) * 1_000_000 + 123456
    assert format_epoch(epoch) == "2026-12-07T00:08:04.123456Z"


def test_forward_mapping_keys_match_the_mapping_store() -> None:
    """The reconciler (layer 1, no tasks import) builds the same keys as the workers."""
    from sync_core.keys import ObjectType

    assert forward_mapping_key(ObjectType.PROJECT, "x") == PROJECT_SFID + "x"
    assert forward_mapping_key(ObjectType.COMMITTEE, "x") == COMMITTEE_SFID + "x"
    assert forward_mapping_key(ObjectType.COMMITTEE_MEMBER, "x") == MEMBER_SFID + "x"


def summary(**fields: Any) -> SweepSummary:
    values: dict[str, Any] = dict(
        at=1.0, duration=0.1, keys=1, behind=0, reenqueued=0, deferred=0, holder="h"
    )
    return SweepSummary(**(values | fields))


def test_the_mappings_are_listed_only_when_entries_may_have_vanished() -> None:
    now = BucketLife(OLD, 40)
    seen = dict(mappings_epoch=OLD, mappings_messages=40)
    assert mappings_check_due(now, None)  # no sweep before: unknown
    assert mappings_check_due(now, summary())  # a sweep of before this signal
    assert not mappings_check_due(now, summary(**seen))
    assert not mappings_check_due(BucketLife(OLD, 45), summary(**seen))  # grew: normal use
    assert mappings_check_due(BucketLife(OLD, 39), summary(**seen))  # purged
    assert mappings_check_due(BucketLife(NEW, 90), summary(**seen))  # rebuilt
    assert mappings_check_due(now, summary(**seen, unmapped=2))  # not all found again yet


def rebuild_objects(sync_nats: SyncNats) -> None:
    async def go() -> None:
        await sync_nats.js.delete_key_value("v1-objects")
        await ensure_bucket(sync_nats.js, "v1-objects", OBJECTS_BUCKET_HISTORY)

    sync_nats.run(go())


def test_the_worker_reads_the_epoch_once_and_again_only_for_a_different_stamp(
    sync_nats: SyncNats,
) -> None:
    clock = [0.0]
    epochs = ObjectsEpoch(sync_nats, "v1-objects", clock=lambda: clock[0])
    first = epochs.current()
    for _ in range(100):
        assert epochs.of_task(first) == first
    assert epochs.reads == 1  # the common case costs no request
    rebuild_objects(sync_nats)
    second = sync_nats.run(bucket_epoch(sync_nats.js, "v1-objects"))
    assert second > first
    assert epochs.of_task(second) == second  # a newer stamp: the cache was stale
    assert epochs.reads == 2
    assert epochs.of_task(first) is None  # a task of the life that is gone
    assert epochs.of_task(first) is None
    assert epochs.reads == 2  # old-life backlogs cost no request each
    assert epochs.of_task(None) == second  # unstamped: the cache, while fresh
    clock[0] += 31.0
    assert epochs.of_task(None) == second
    assert epochs.reads == 3


def test_the_reconciler_redrives_keys_whose_state_is_of_another_or_no_life(
    buckets: NatsServer, sync_nats: SyncNats
) -> None:
    epoch = sync_nats.run(bucket_epoch(sync_nats.js, "v1-objects"))
    keys = {name: f"salesforce-project__c.{name}" for name in ("same", "older", "legacy", "none")}
    latest = {key: Latest(3, "PUT", 0.0) for key in keys.values()}
    states = {
        keys["same"]: SyncState(keys["same"], 3, "created", epoch=epoch),
        keys["older"]: SyncState(keys["older"], 500, "created", epoch=epoch - 1),
        keys["legacy"]: SyncState(keys["legacy"], 500, "created"),
    }

    async def plan() -> list[str]:
        from nats.aio.client import Client

        nc = Client()
        await nc.connect(buckets.url)
        try:
            reconciler = Reconciler(
                nc,
                objects_bucket="v1-objects",
                mappings_bucket="v1-mappings",
                state_bucket="v1-sync-state",
                consumer="none",
                encoder=None,  # type: ignore[arg-type]
                publisher=None,  # type: ignore[arg-type]
                metrics=None,  # type: ignore[arg-type]
                tuning=ReconcileTuning(grace=0.0),
            )
            found = await reconciler.plan(latest, states, None, time.time(), epoch=epoch)
            assert found.behind == 3
            return sorted(change.key for change in found.changes)
        finally:
            await nc.close()

    assert asyncio.run(plan()) == sorted([keys["older"], keys["legacy"], keys["none"]])


@pytest.mark.parametrize("mapped", [True, False])
def test_unmapped_keys_are_the_synced_ones_without_a_forward_mapping(
    buckets: NatsServer, sync_nats: SyncNats, mapped: bool
) -> None:
    epoch = sync_nats.run(bucket_epoch(sync_nats.js, "v1-objects"))
    synced = f"salesforce-project__c.{'a' * 18}"
    dead = f"salesforce-project__c.{'b' * 18}"
    latest = {synced: Latest(3, "PUT", 0.0), dead: Latest(4, "PUT", 0.0)}
    states = {
        synced: SyncState(synced, 3, "created", epoch=epoch),
        dead: SyncState(dead, 4, "dead_lettered", epoch=epoch),
    }
    if mapped:
        sync_nats.kv_put("v1-mappings", PROJECT_SFID + "a" * 18, b"uid")
    sync_nats.kv_put("v1-mappings", PROJECT_SFID + "c" * 18, b"uid")  # someone else's

    async def unmapped() -> set[str]:
        from nats.aio.client import Client

        nc = Client()
        await nc.connect(buckets.url)
        try:
            reconciler = Reconciler(
                nc,
                objects_bucket="v1-objects",
                mappings_bucket="v1-mappings",
                state_bucket="v1-sync-state",
                consumer="none",
                encoder=None,  # type: ignore[arg-type]
                publisher=None,  # type: ignore[arg-type]
                metrics=None,  # type: ignore[arg-type]
                tuning=ReconcileTuning(grace=0.0),
            )
            return await reconciler.unmapped_keys(latest, states, epoch)
        finally:
            await nc.close()

    assert asyncio.run(unmapped()) == (set() if mapped else {synced})
