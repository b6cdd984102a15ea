"""Putting sync tasks into the Celery queue by hand, with the bridge's backpressure.

``requeue``, ``dlq requeue`` and ``replay`` all go through ``TaskQueue``: one
place that publishes ordinary ``sync_kv_entry`` task messages (task id
``key@revision``) and reads the queue depth, and ``wait_for_room`` which holds
a large batch back while the queue is above ``BRIDGE_MAX_QUEUE_DEPTH``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bridge.changes import KvChange
from bridge.loop import LOW_WATER_FRACTION
from bridge.messages import TaskMessageEncoder, producer_app
from bridge.publisher import BrokerPublisher, broker_client, database_of
from sync_core.broker import V2_EVENT_TASK_NAME, broker_transport_options
from sync_core.epochs import EPOCH_TASK_KWARG
from sync_core.redis_connection import RedisTarget
from sync_core.redis_connection import redis_client as connect_redis
from sync_core.v2_events import V2_KEY_PREFIX

# kombu's Redis transport keeps one list per priority step: "celery",
# "celery\x06\x163", … A depth that ignores them undercounts prioritised tasks.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"

REDIS_TIMEOUT = 5.0
# ``replay``: a full resync; a key still retrying goes on with the budget it has left.
MANUAL_TASK_KWARGS = {"force": True}
# ``requeue``: an operator asks for this key again, so its retries start afresh.
REQUEUE_TASK_KWARGS = {**MANUAL_TASK_KWARGS, "fresh_budget": True}
# A dead letter re-queued by an operator is a decision: a fresh retry budget, and a
# delete held back by SYNC_DELETE_BUDGET (``delete_budget_exceeded``) runs past it.
DEAD_LETTER_TASK_KWARGS = {**REQUEUE_TASK_KWARGS, "release_delete_budget": True}
# ``replay`` of V2 objects (``v2.…``): only events not settled are sent, and a run that
# finds its event settled meanwhile stops there (no ``force``); budgets go on.
REPLAY_V2_TASK_KWARGS: dict[str, Any] = {}
DRAIN_POLL_SECONDS = 1.0


class BrokerUnavailable(RuntimeError):
    """The broker did not accept the tasks (nothing after the failure was enqueued)."""


def redis_client(target: RedisTarget | str) -> redis.Redis:
    """A Redis client with short timeouts: a command never hangs on a dead broker.

    Plain, TLS or Sentinel like the workers' (``sync_core.redis_connection``).
    """
    return connect_redis(target, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that together hold ``queue``'s messages."""
    return [queue if pri == 0 else f"{queue}{PRIORITY_SEPARATOR}{pri}" for pri in PRIORITY_STEPS]


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (all priority lists, one round trip)."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return int(sum(pipe.execute()))


class TaskQueue:
    """Publishes sync tasks to the Celery queue and reports its depth.

    The messages are the bridge's: ordinary ``sync_kv_entry`` task messages
    plus their ``task-sent`` events (so Flower shows them as queued), a whole
    batch in one Redis round trip.
    """

    def __init__(
        self, broker: RedisTarget | str, queue: str, task_kwargs: dict[str, Any] | None = None
    ) -> None:
        """``task_kwargs``: the keyword arguments of every task (default: ``force``)."""
        options = broker_transport_options()
        self.queue = queue
        self._redis = redis_client(broker)
        self._app = producer_app(broker, queue, options)
        self._publisher = BrokerPublisher(broker_client(broker, options))
        # A sync asked for by hand must run even when that revision was synced
        # already (after a mapping fix, or a change made directly in V2).
        self._encoder = TaskMessageEncoder(
            self._app,
            queue,
            database_of(self._publisher.client),
            task_kwargs=MANUAL_TASK_KWARGS if task_kwargs is None else task_kwargs,
        )
        # Keys of V2 objects (``v2.…``, V2 -> V1) go to their own task with the same options.
        self._v2_encoder = TaskMessageEncoder(
            self._app,
            queue,
            database_of(self._publisher.client),
            task_kwargs=MANUAL_TASK_KWARGS if task_kwargs is None else task_kwargs,
            task_name=V2_EVENT_TASK_NAME,
        )

    def publish(self, changes: Sequence[KvChange], epoch: int | None = None) -> None:
        """Enqueue every change; raise ``BrokerUnavailable`` unless all are in Redis.

        ``epoch``: the life of ``v1-objects`` the revisions belong to
        (``sync_core.epochs``); None: the current one, as the worker sees it.
        """
        if not changes:
            return
        encoder = self._encoder
        if epoch is not None:
            encoder = encoder.with_kwargs({EPOCH_TASK_KWARG: epoch})
        v1_changes = [c for c in changes if not c.key.startswith(V2_KEY_PREFIX)]
        v2_changes = [c for c in changes if c.key.startswith(V2_KEY_PREFIX)]
        try:
            if v1_changes:
                self._publisher.push(encoder.encode(v1_changes))
            if v2_changes:
                self._publisher.push(self._v2_encoder.encode(v2_changes))
        except (redis.RedisError, OSError) as error:
            raise BrokerUnavailable(f"the broker did not accept the tasks: {error}") from None

    def depth(self) -> int:
        """Messages waiting in the queue; ``BrokerUnavailable`` when Redis is down."""
        try:
            return queue_depth(self._redis, self.queue)
        except (redis.RedisError, OSError) as error:
            raise BrokerUnavailable(f"cannot read the queue depth: {error}") from None

    @property
    def redis(self) -> redis.Redis:
        """The Redis connection (the dead letters live in the same database)."""
        return self._redis

    def close(self) -> None:
        """Release the broker connections."""
        self._publisher.close()
        self._app.close()
        self._redis.close()

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_for_room(
    queue: TaskQueue,
    max_depth: int,
    on_wait: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return at once while the queue is at or below ``max_depth``; else wait for it to drain.

    Waits until the depth falls to the bridge's low-water mark, with no deadline (the
    operator interrupts with Ctrl-C). ``on_wait(depth)`` is called once per pause.
    """
    depth = queue.depth()
    if depth <= max_depth:
        return
    if on_wait is not None:
        on_wait(depth)
    low_water = int(max_depth * LOW_WATER_FRACTION)
    while depth > low_water:
        sleep(DRAIN_POLL_SECONDS)
        depth = queue.depth()
