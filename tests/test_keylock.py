"""The per-key Redis lock, against a real valkey."""

from __future__ import annotations

import threading
import time

import redis

from sync_core.broker import TASK_HARD_TIME_LIMIT
from tasks.keylock import DEFAULT_TTL_MS, LOCK_PREFIX, KeyLock

KEY = "salesforce-project__c.a0941000002wBz9AAE"


def test_second_holder_is_refused_until_release(redis_client: redis.Redis) -> None:
    first, second = KeyLock(redis_client, KEY), KeyLock(redis_client, KEY)
    assert first.acquire()
    assert not second.acquire()
    assert first.release()
    assert second.acquire()
    assert second.release()


def test_locks_of_different_keys_are_independent(redis_client: redis.Redis) -> None:
    one, other = KeyLock(redis_client, KEY), KeyLock(redis_client, KEY + "X")
    assert one.acquire()
    assert other.acquire()


def test_ttl_outlives_the_hard_time_limit(redis_client: redis.Redis) -> None:
    lock = KeyLock(redis_client, KEY)
    assert lock.acquire()
    ttl_ms = redis_client.pttl(LOCK_PREFIX + KEY)
    assert TASK_HARD_TIME_LIMIT * 1000 < ttl_ms <= DEFAULT_TTL_MS


def test_expired_lock_is_free_and_old_holder_cannot_release_new_one(
    redis_client: redis.Redis,
) -> None:
    old = KeyLock(redis_client, KEY, ttl_ms=50)
    assert old.acquire()
    new = KeyLock(redis_client, KEY)
    deadline = time.monotonic() + 5
    while not new.acquire():
        assert time.monotonic() < deadline, "the expired lock was never freed"
        time.sleep(0.01)
    assert not old.release()
    assert redis_client.exists(LOCK_PREFIX + KEY)
    assert new.release()
    assert not redis_client.exists(LOCK_PREFIX + KEY)


def test_context_manager_releases_on_error(redis_client: redis.Redis) -> None:
    lock = KeyLock(redis_client, KEY)
    assert lock.acquire()
    try:
        with lock:
            raise ValueError("boom")
    except ValueError:
        pass
    assert not redis_client.exists(LOCK_PREFIX + KEY)


def test_only_one_of_many_concurrent_acquirers_wins(redis_client: redis.Redis) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def contend() -> None:
        lock = KeyLock(redis_client, KEY)
        barrier.wait()
        results.append(lock.acquire())

    threads = [threading.Thread(target=contend) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [False] * 15 + [True]
