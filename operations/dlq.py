"""Re-queuing dead letters: enqueue first, then remove what is still as it was read.

A re-queued task can fail again before the command gets to remove its dead
letter; the worker then rewrites the entry (a newer ``last_failure``). Removing
by id alone would erase that new failure, so the removal is conditional and
runs in one WATCHed transaction per batch (the workers' ``add`` WATCHes the
same hash).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import cast

import redis

from bridge.changes import KvChange
from operations.enqueue import TaskQueue, wait_for_room
from tasks.deadletters import DEAD_LETTERS_KEY, DeadLetter

# Tasks per broker round trip.
REQUEUE_BATCH = 500


def _last_failure(raw: bytes | str) -> float | None:
    try:
        return float(json.loads(raw)["last_failure"])
    except (ValueError, KeyError, TypeError):
        return None


def remove_unchanged(client: redis.Redis, letters: Sequence[DeadLetter]) -> list[str]:
    """Delete the dead letters still stored as read; return the ids deleted.

    An entry a worker rewrote since (the task failed again) stays.
    """
    if not letters:
        return []
    ids = [letter.id for letter in letters]
    expected = {letter.id: letter.last_failure for letter in letters}

    def delete_unchanged(pipe: redis.client.Pipeline) -> list[str]:
        current = pipe.hmget(DEAD_LETTERS_KEY, ids)
        unchanged = [
            task_id
            for task_id, raw in zip(ids, current, strict=True)
            if raw is not None and _last_failure(raw) == expected[task_id]
        ]
        pipe.multi()
        if unchanged:
            pipe.hdel(DEAD_LETTERS_KEY, *unchanged)
        return unchanged

    # The callable's return value is what ``transaction`` returns (after EXEC).
    removed = client.transaction(
        delete_unchanged,  # type: ignore[arg-type]
        DEAD_LETTERS_KEY,
        value_from_callable=True,
    )
    return cast(list[str], removed)


def requeue_letters(
    queue: TaskQueue,
    letters: Sequence[DeadLetter],
    max_depth: int | None = None,
    on_wait: Callable[[int], None] | None = None,
    on_batch: Callable[[Sequence[DeadLetter]], None] | None = None,
) -> None:
    """Enqueue the letters' tasks in batches; remove each batch once it is in the broker.

    With ``max_depth`` set, each batch first waits for the queue to have room
    (the bridge's backpressure limit). Raises ``BrokerUnavailable`` at the
    first batch the broker refuses; that batch and the rest stay dead letters.
    """
    for start in range(0, len(letters), REQUEUE_BATCH):
        batch = letters[start : start + REQUEUE_BATCH]
        if max_depth is not None:
            wait_for_room(queue, max_depth, on_wait=on_wait)
        queue.publish([KvChange(x.key, x.revision, x.operation) for x in batch])
        remove_unchanged(queue.redis, batch)
        if on_batch is not None:
            on_batch(batch)
