"""The dry-run ports of ``tasks.run.dry_run`` against real nats-server and valkey.

Reads reach the servers; writes land in the overlay (KV) or the record (Redis)
and nothing changes on the servers, while the stores' compare-and-set logic
sees the same answers it would get from them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from sandbox.servers import NatsServer, ValkeyServer
from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET, SyncState
from tasks.run.deletes import BUDGET_KEY, DeleteBudget
from tasks.run.dry_run import DryRunNats, DryRunRedis, WriteLog
from tasks.run.outcomes import count_outcome
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore, retry_pending

MAPPINGS = "v1-mappings"


@pytest.fixture
def dry_nats(buckets: NatsServer) -> Iterator[DryRunNats]:
    nats = DryRunNats(buckets.url, "dry-run-tests", WriteLog())
    yield nats
    nats.close()


def last_seq(nats: SyncNats, bucket: str) -> int:
    return int(nats.run(nats.js.stream_info(f"KV_{bucket}")).state.last_seq)


def test_kv_writes_land_in_the_overlay_with_the_servers_cas_rules(
    sync_nats: SyncNats, dry_nats: DryRunNats
) -> None:
    real_revision = sync_nats.kv_put(MAPPINGS, "project.sfid.a", b"uid-1")
    before = last_seq(sync_nats, MAPPINGS)
    kv = dry_nats.kv(MAPPINGS)

    assert bytes(dry_nats.run(kv.get("project.sfid.a")).value) == b"uid-1"
    with pytest.raises(KeyWrongLastSequenceError):
        dry_nats.run(kv.update("project.sfid.a", b"x", last=real_revision - 1))
    written = dry_nats.run(kv.update("project.sfid.a", b"uid-2", last=real_revision))
    assert bytes(dry_nats.run(kv.get("project.sfid.a")).value) == b"uid-2"
    dry_nats.run(kv.delete("project.sfid.a", last=written))
    with pytest.raises(KeyNotFoundError):
        dry_nats.run(kv.get("project.sfid.a"))
    # nats-py's create of a deleted key (its re-create path) runs on the overlay too.
    dry_nats.run(kv.create("project.sfid.a", b"uid-3"))
    assert dry_nats.kv_get(MAPPINGS, "project.sfid.a").value == b"uid-3"

    assert last_seq(sync_nats, MAPPINGS) == before
    assert bytes(sync_nats.kv_get(MAPPINGS, "project.sfid.a").value) == b"uid-1"
    assert [(w.action, w.key, w.value) for w in dry_nats.writes.all()] == [
        ("update", "project.sfid.a", "uid-2"),
        ("delete", "project.sfid.a", None),
        ("create", "project.sfid.a", "uid-3"),
    ]


def test_the_stores_run_unchanged_on_the_dry_buckets(
    sync_nats: SyncNats, dry_nats: DryRunNats
) -> None:
    sync_nats.kv_put(MAPPINGS, "project.sfid.t", b"!del")
    mappings = MappingStore(dry_nats, MAPPINGS)
    assert mappings.clear_tombstone("project.sfid.t")
    assert mappings.read("project.sfid.t") is None
    state = StateStore(dry_nats, DEFAULT_STATE_BUCKET)
    state.set_pending("k.1", retry_pending(3, 1.0, 2.0, attempt=2), None, epoch=1)
    assert state.get("k.1").pending == retry_pending(3, 1.0, 2.0, attempt=2)
    assert dry_nats.run(dry_nats.kv(DEFAULT_STATE_BUCKET).has_any("k.>"))

    assert StateStore(sync_nats, DEFAULT_STATE_BUCKET).get("k.1") == SyncState("k.1")
    assert sync_nats.kv_get(MAPPINGS, "project.sfid.t") is not None
    assert set(dry_nats.overlay(DEFAULT_STATE_BUCKET)) == {"k.1"}


def test_redis_reads_pass_and_writes_are_recorded(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    writes = WriteLog()
    dry = DryRunRedis(redis.Redis.from_url(redis_server.url), writes)
    redis_client.set("v1sync:synced:k", "5")
    seconds, _ = redis_client.time()
    redis_client.zadd(BUDGET_KEY, {"other@1": seconds})
    before = {key: redis_client.dump(key) for key in redis_client.scan_iter()}

    assert dry.get("v1sync:synced:k") == b"5"
    count_outcome(dry, "created")  # a pipeline of HINCRBY and EXPIRE
    assert DeleteBudget(dry, 2).take("mine@2")
    assert not DeleteBudget(dry, 1).take("mine@2")
    assert DeleteBudget(dry, 1).take("other@1")  # counted already: passes
    assert DeleteBudget(dry, 1).take("mine@2", released=True)
    dry.close()

    assert {key: redis_client.dump(key) for key in redis_client.scan_iter()} == before
    assert [w.action for w in writes.all()] == ["HINCRBY", "EXPIRE"] + [
        "EVAL take the delete budget"
    ] * 4
