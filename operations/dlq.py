"""Re-queuing dead letters: enqueue first, then remove what is still as it was read.

A re-queued task can fail again before the command gets to remove its dead
letter; the worker then rewrites the entry (a newer ``last_failure``). Removing
by id alone would erase that new failure, so each removal is a delete
conditional on the KV revision that was read (``DeadLetterStore.remove_unchanged``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.changes import KvChange
from operations.enqueue import TaskQueue, wait_for_room
from tasks.stores.dead_letters import DeadLetter, DeadLetterStore

# Tasks per broker round trip.
REQUEUE_BATCH = 500


def requeue_letters(
    queue: TaskQueue,
    store: DeadLetterStore,
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
        # Each letter's task says which life of v1-objects its revision is of: one
        # of a bucket rebuilt since ends superseded instead of syncing a stranger.
        for epoch in dict.fromkeys(letter.epoch for letter in batch):
            changes = [KvChange(x.key, x.revision, x.operation) for x in batch if x.epoch == epoch]
            queue.publish(changes, epoch)
        store.remove_unchanged(batch)
        if on_batch is not None:
            on_batch(batch)
