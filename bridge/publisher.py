"""Writing encoded batches to Redis: one pipelined round trip per batch.

One long-lived ``redis.Redis`` client (``apply_async`` builds a new one per
publish). A batch is one ``LPUSH`` carrying every task message (the list ends
up exactly as with one ``LPUSH`` per task, so workers pop them in order), one
``PUBLISH`` per ``task-sent`` event on the topic kombu's Redis transport uses,
and an ``LLEN`` of the queue for backpressure, all in one pipeline.

The client never retries on its own: a failed pipeline raises, and the bridge
decides (a replayed pipeline could enqueue twice; the task is idempotent, but
the decision belongs to the caller). Socket and connect timeouts come from the
shared broker transport options, so a half-open connection cannot block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.messages import EncodedBatch

# What counts as "the broker is unreachable" for the bridge.
BROKER_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)


def broker_client(url: str, transport_options: Mapping[str, Any]) -> redis.Redis:
    """A Redis client with the broker's socket timeouts and no automatic retry."""
    return redis.Redis.from_url(
        url,
        socket_timeout=transport_options.get("socket_timeout"),
        socket_connect_timeout=transport_options.get("socket_connect_timeout"),
        socket_keepalive=transport_options.get("socket_keepalive"),
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

    def push(self, batch: EncodedBatch) -> int:
        """Write the batch in one round trip; return the queue length after it.

        When this returns, every task of the batch is in Redis. Raises one of
        ``BROKER_ERRORS`` (or another ``redis.RedisError``) when it is not
        known to be.
        """
        pipe = self.client.pipeline(transaction=False)
        if batch.tasks:
            pipe.lpush(batch.queue, *batch.tasks)
        for event in batch.events:
            pipe.publish(batch.event_topic, event)
        pipe.llen(batch.queue)
        results = pipe.execute()
        return int(results[-1])

    def depth(self, queue: str) -> int:
        """The number of task messages waiting in ``queue``."""
        return int(self.client.llen(queue))

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
