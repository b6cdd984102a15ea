"""Writing encoded batches to Redis: one pipelined round trip per batch.

One long-lived ``redis.Redis`` client (``apply_async`` builds a new one per
publish). A batch is one pipeline of three commands: an ``LPUSH`` carrying
every task message (the list ends up exactly as with one ``LPUSH`` per task,
so workers pop them in order), the ``task-sent`` events, and an ``LLEN`` of
the queue for backpressure. Tasks go first, events after, as ``apply_async``
does.

The events are ``PUBLISH``-ed on the topic kombu's Redis transport uses, by a
short Lua script that publishes each of its arguments: redis-py spends ~6 us
of CPU packing and parsing every ``PUBLISH`` of its own, more than the rest of
the batch write. Subscribers (Flower, ``celery events``) receive the same
messages either way. Should the server refuse scripts (an ACL, a managed
service), the publisher falls back to one ``PUBLISH`` per event for good.

The client never retries on its own: a failed write raises, and the bridge
decides (a replayed pipeline could enqueue twice; the task is idempotent, but
the decision belongs to the caller). Socket and connect timeouts come from the
shared broker transport options, so a half-open connection cannot block.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from bridge.messages import EncodedBatch
from sync_core.redis_connection import RedisTarget, redis_client

log = logging.getLogger(__name__)

PUBLISH_EACH = (
    "local topic = ARGV[1] "
    "for i = 2, #ARGV do redis.call('PUBLISH', topic, ARGV[i]) end "
    "return #ARGV - 1"
)


def broker_client(target: RedisTarget | str, transport_options: Mapping[str, Any]) -> redis.Redis:
    """A Redis client with the broker's socket timeouts and no automatic retry.

    With a Sentinel target it follows the current master: after a failover the
    push that meets the dead master raises, and the bridge's next push (its
    own retry) reaches the promoted one.
    """
    return redis_client(
        target,
        socket_timeout=transport_options.get("socket_timeout"),
        socket_connect_timeout=transport_options.get("socket_connect_timeout"),
        socket_keepalive=bool(transport_options.get("socket_keepalive", True)),
        health_check_interval=transport_options.get("health_check_interval", 0),
        retry=Retry(NoBackoff(), 0),
        client_name="v1-sync-bridge",
    )


def database_of(client: redis.Redis) -> int:
    """The Redis database number the client talks to (part of kombu's fanout topics)."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


class BrokerPublisher:
    """Pushes batches of task messages and reads the queue depth."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.scripted_events = True

    def push(self, batch: EncodedBatch) -> int:
        """Write the batch in one round trip; return the queue length after it.

        When this returns, every task of the batch is in Redis. Raises a
        ``redis.RedisError`` (or ``OSError``) when that is not known. A failure
        of the events alone does not raise: the tasks are what matters.
        """
        if not batch.tasks:
            return self.depth(batch.queue)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(batch.queue, *batch.tasks)
        self._add_events(pipe, batch)
        pipe.llen(batch.queue)
        pushed, *events, depth = pipe.execute(raise_on_error=False)
        if isinstance(pushed, Exception):
            raise pushed
        failed = next((r for r in events if isinstance(r, Exception)), None)
        if failed is not None:
            self._events_failed(failed, batch)
        # LLEN cannot fail once LPUSH on the same key worked; 0 if it somehow did.
        return 0 if isinstance(depth, Exception) else int(depth)

    def _add_events(self, pipe: Pipeline, batch: EncodedBatch) -> None:
        if not batch.events:
            return
        if self.scripted_events:
            pipe.eval(PUBLISH_EACH, 0, batch.event_topic, *batch.events)
        else:
            for event in batch.events:
                pipe.publish(batch.event_topic, event)

    def _events_failed(self, error: Exception, batch: EncodedBatch) -> None:
        """Switch to plain PUBLISH when scripts are refused, and resend this batch's events."""
        if not self.scripted_events:
            log.warning("task-sent events not published", extra={"failure": repr(error)})
            return
        log.warning(
            "the broker refused the event script: publishing events one by one",
            extra={"failure": repr(error)},
        )
        self.scripted_events = False
        pipe = self.client.pipeline(transaction=False)
        self._add_events(pipe, batch)
        try:
            pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as resend_error:
            # The tasks are in Redis: a lost event must not make the caller push again.
            log.warning("task-sent events not published", extra={"failure": repr(resend_error)})

    def depth(self, queue: str) -> int:
        """The number of task messages waiting in ``queue``."""
        return int(self.client.llen(queue))

    def oldest(self, queue: str) -> bytes | None:
        """The task message that has waited longest in ``queue`` (consumed next), if any.

        kombu's Redis transport pushes on the left and pops on the right.
        """
        raw = self.client.lindex(queue, -1)
        return raw if isinstance(raw, bytes) else None

    def oldest_few(self, queue: str, count: int) -> list[bytes]:
        """Up to ``count`` task messages that have waited longest in ``queue``, oldest first."""
        raw = self.client.lrange(queue, -count, -1)
        return [item for item in reversed(raw) if isinstance(item, bytes)]

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
