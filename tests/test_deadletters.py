"""DeadLetterStore against a real valkey, and the stored format the operations commands read."""

from __future__ import annotations

import json

import pytest
import redis

from tasks.deadletters import DEAD_LETTERS_KEY, DeadLetter, DeadLetterStore

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
}


def test_add_stores_the_documented_json_under_the_task_id(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client)
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
    raw = redis_client.hget(DEAD_LETTERS_KEY, f"{KEY}@7")
    assert raw is not None
    stored = json.loads(raw)
    assert set(stored) == FIELDS
    assert stored["id"] == f"{KEY}@7"
    assert stored["revision"] == 7
    assert stored["status"] == 400
    assert stored["first_failure"] == stored["last_failure"] == 1000.5
    assert DeadLetter.from_json(raw) == letter
    assert store.get(f"{KEY}@7") == letter
    assert store.count() == 1


def test_adding_again_keeps_first_failure(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client)
    store.add(KEY, 7, "PUT", error_kind="v2_5xx", error_message="503", attempts=4, now=100.0)
    again = store.add(
        KEY, 7, "PUT", error_kind="v2_5xx", error_message="503", attempts=8, now=200.0
    )
    assert again.first_failure == 100.0
    assert again.last_failure == 200.0
    assert again.attempts == 8
    assert store.count() == 1


def test_list_is_newest_first_and_skips_malformed(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client)
    for revision, when in ((1, 10.0), (2, 30.0), (3, 20.0)):
        store.add(KEY, revision, "PUT", error_kind="k", error_message="m", now=when)
    redis_client.hset(DEAD_LETTERS_KEY, "garbage@1", "not json")
    assert [letter.revision for letter in store.list()] == [2, 3, 1]


def test_remove_and_purge(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client)
    for revision in (1, 2, 3):
        store.add(KEY, revision, "DEL", error_kind="k", error_message="m")
    assert store.remove(f"{KEY}@1")
    assert not store.remove(f"{KEY}@1")
    assert store.get(f"{KEY}@1") is None
    assert store.purge() == 2
    assert store.count() == 0
    assert store.list() == []


def test_long_message_and_body_are_cut(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client)
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
