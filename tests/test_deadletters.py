"""DeadLetterStore on a real nats-server, and the stored format the operations commands read."""

from __future__ import annotations

import json

import pytest

from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET
from tasks.stores.dead_letters import DeadLetter, DeadLetterStore

KEY = "salesforce-project__c.a0941000002wBz9AAE"
FIELDS = {
    "id",
    "key",
    "revision",
    "operation",
    "error_kind",
    "error_message",
    "status",
    "body_excerpt",
    "attempts",
    "first_failure",
    "last_failure",
    "epoch",
}


def test_add_stores_the_documented_json_under_the_key(sync_nats: SyncNats) -> None:
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    letter = store.add(
        KEY,
        7,
        "PUT",
        error_kind="v2_validation",
        error_message="V2 project POST /projects answered 400",
        status=400,
        body_excerpt='{"message":"bad slug"}',
        attempts=1,
        now=1000.5,
    )
    entry = sync_nats.kv_get(DEFAULT_STATE_BUCKET, f"deadletter.{KEY}")
    assert entry is not None
    raw = bytes(entry.value)
    stored = json.loads(raw)
    assert set(stored) == FIELDS
    assert stored["id"] == f"{KEY}@7"
    assert stored["revision"] == 7
    assert stored["status"] == 400
    assert stored["first_failure"] == stored["last_failure"] == 1000.5
    assert DeadLetter.from_json(raw) == letter
    assert store.get(f"{KEY}@7") == letter
    assert store.count() == 1


def test_adding_again_keeps_first_failure(sync_nats: SyncNats) -> None:
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    store.add(KEY, 7, "PUT", error_kind="v2_5xx", error_message="503", attempts=4, now=100.0)
    again = store.add(
        KEY, 7, "PUT", error_kind="v2_5xx", error_message="503", attempts=8, now=200.0
    )
    assert again.first_failure == 100.0
    assert again.last_failure == 200.0
    assert again.attempts == 8
    assert store.count() == 1


def test_list_is_newest_first_and_skips_malformed(sync_nats: SyncNats) -> None:
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    for revision, when in ((1, 10.0), (2, 30.0), (3, 20.0)):
        store.add(f"{KEY}{revision}", revision, "PUT", error_kind="k", error_message="m", now=when)
    sync_nats.kv_put(DEFAULT_STATE_BUCKET, "deadletter.garbage", b"not json")
    assert [letter.revision for letter in store.list()] == [2, 3, 1]


def test_one_letter_per_key_the_latest_revision_wins(sync_nats: SyncNats) -> None:
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    store.add(KEY, 5, "PUT", error_kind="old", error_message="m", now=1.0)
    store.add(KEY, 9, "PUT", error_kind="new", error_message="m", now=2.0)
    kept = store.add(KEY, 7, "PUT", error_kind="late", error_message="m", now=3.0)
    assert (kept.revision, kept.error_kind) == (9, "new")
    assert [letter.id for letter in store.list()] == [f"{KEY}@9"]
    assert store.get(f"{KEY}@5") is None
    store.remove_settled(KEY, 8)  # an older success leaves a newer failure alone
    assert store.count() == 1
    store.remove_settled(KEY, 9)
    assert store.count() == 0


def test_a_letter_of_another_bucket_life_is_replaced_and_dropped_by_any_success(
    sync_nats: SyncNats,
) -> None:
    """Revisions restart at 1 in a rebuilt ``v1-objects``: 3 of the new life is not older than 9."""
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    store.add(KEY, 9, "PUT", error_kind="old_life", error_message="m", now=1.0, epoch=100)
    kept = store.add(KEY, 3, "PUT", error_kind="new_life", error_message="m", now=2.0, epoch=200)
    assert (kept.revision, kept.epoch, kept.error_kind, kept.first_failure) == (
        3,
        200,
        "new_life",
        2.0,
    )
    assert [letter.id for letter in store.list()] == [f"{KEY}@3"]
    store.add(KEY, 9, "PUT", error_kind="old_life", error_message="m", now=3.0, epoch=100)
    store.remove_settled(KEY, 2, 200)  # a success of the new life: the old life's letter goes
    assert store.count() == 0


def test_letters_survive_an_empty_redis(sync_nats: SyncNats, redis_client: object) -> None:
    """They live in JetStream: FLUSHALL on the broker does not touch them."""
    import redis

    assert isinstance(redis_client, redis.Redis)
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    store.add(KEY, 3, "PUT", error_kind="v2_validation", error_message="400")
    redis_client.flushall()
    assert [letter.id for letter in store.list()] == [f"{KEY}@3"]


def test_remove_and_purge(sync_nats: SyncNats) -> None:
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    for revision in (1, 2, 3):
        store.add(f"{KEY}{revision}", revision, "DEL", error_kind="k", error_message="m")
    assert store.remove(f"{KEY}1@1")
    assert not store.remove(f"{KEY}1@1")
    assert store.get(f"{KEY}1@1") is None
    assert store.get("not a key@1") is None
    assert store.purge() == 2
    assert store.count() == 0
    assert store.list() == []


def test_long_message_and_body_are_cut(sync_nats: SyncNats) -> None:
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    letter = store.add(
        KEY, 1, "PUT", error_kind="k", error_message="m" * 5000, body_excerpt="b" * 5000
    )
    assert len(letter.error_message) <= 1000
    assert letter.body_excerpt is not None
    assert len(letter.body_excerpt) <= 500


def test_from_json_refuses_what_is_not_a_dead_letter() -> None:
    with pytest.raises(ValueError, match="not a dead letter"):
        DeadLetter.from_json('{"id": "x"}')
    with pytest.raises(ValueError, match="not a dead letter"):
        DeadLetter.from_json("[1, 2]")
