"""A fix for workers dying when Redis restarts while they hold unacked messages.

Celery 5.7 / kombu 5.7 (the versions pinned here), on a lost broker connection
with tasks held (prefetched, countdown retries, ETA), do this in
``Consumer.on_connection_error_after_connected``:

1. ``connection.collect()``: the Redis transport has no ``_collect``, so kombu
   closes what it can and then detaches the transport (``transport.client =
   None``), but keeps the default channel, whose QoS still lists the unacked
   deliveries;
2. ``ignore_errors(connection, connection.close)``: closing that channel
   restores the unacked messages, which builds a new Redis pool from
   ``transport.client``, now None: ``AttributeError: 'NoneType' object has no
   attribute 'hostname'`` in ``Channel._connparams``. ``ignore_errors`` only
   swallows connection and channel errors, so the AttributeError escapes, the
   worker logs ``Unrecoverable error`` and stops (reproduced in
   ``tests/test_worker_broker_restart.py``; the same shape as celery/kombu#970
   and #582, where ``_connparams`` met a connection that was gone).

The fix sits at the line that fails: ``_connparams`` on a detached transport
raises a Redis ``ConnectionError`` (one of the transport's connection errors)
instead of dereferencing None. ``ignore_errors`` then swallows it, the consumer
reconnects as for any other connection loss, and the messages it could not
restore stay in kombu's unacked hash in Redis, from where ``restore_visible``
(any worker, after the visibility timeout) or the reconciler brings them back.
A restore could not have reached Redis at that moment anyway: the connection
had just failed. The settings alone (``broker_connection_retry``,
``broker_connection_max_retries``) cannot help: the error is not a connection
error, so Celery never retries it.

``apply()`` is idempotent and is called by the worker app at import.
"""

from __future__ import annotations

import functools
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_PATCHED_MARK = "_v1sync_detached_transport_fix"

DETACHED_MESSAGE = (
    "the broker connection was collected after a connection loss: "
    "unacked messages stay in Redis until they are restored"
)


def apply() -> None:
    """Make ``Channel._connparams`` raise a connection error on a detached transport."""
    channel_class: Any = kombu_redis.Channel
    original = channel_class._connparams
    if getattr(original, _PATCHED_MARK, False):
        return

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError(DETACHED_MESSAGE)
        return dict(original(self, asynchronous=asynchronous))

    setattr(_connparams, _PATCHED_MARK, True)
    channel_class._connparams = _connparams


def is_applied() -> bool:
    """Whether ``apply()`` has patched kombu's Redis channel in this process."""
    return bool(getattr(kombu_redis.Channel._connparams, _PATCHED_MARK, False))
