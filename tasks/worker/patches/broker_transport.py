"""kombu's Redis transport made cheaper per message: one client, one command per index update.

kombu's Redis channel builds a new ``redis.Redis`` object for nearly every
command it sends outside the BRPOP loop (``Channel.conn_or_acquire``): each
late ack, each unacked-index update and each Flower event ``PUBLISH``. The
object shares the channel's connection pool, so only its construction is
new, and that costs: building the response-callback table took about a sixth
of the worker's consumer thread (three events and two index updates per task).

``apply()`` makes the channel keep one client per connection pool and hand it
out instead. A ``redis.Redis`` over a pool is thread-safe (every command takes
a pool connection), commands and replies are the same, and a new pool (after a
reconnect or a Sentinel failover) gets a new client. It patches kombu's base
channel in place, like ``tasks.worker.patches.kombu_redis_fix``, rather than naming a
transport class of our own: every scheme of ``sync_core.redis_connection``
(``redis``, ``rediss``, ``sentinel``, whose channel subclasses the base one)
gets it, and Celery's log lines keep the broker URL's own scheme
("Connected to redis://…", which operators and tests look for).

kombu's ack emulation (``QoS``) also records every delivered message in two
keys, the unacked hash and its time index, and removes it again on ack: each
a ``MULTI``/``EXEC`` transaction of two commands, four replies to parse, and
together close to half of the consumer thread's time for a task that does
nothing. ``apply()`` makes each one a single ``EVALSHA`` of a two-line script
doing the same two commands atomically: same keys, same values, one reply.
kombu's restores (visibility timeout, shutdown) read the same keys as before.
A server that refuses scripts (``EVAL`` disabled by ACL) gets kombu's own
transactions back, for good, after the first refusal.

In a worker (``AckBatching``, a consumer step) an ack goes one step further:
kombu forgets the message at once (prefetch, shutdown restores), and its two
Redis entries leave with the script of the next delivery, or with the step's
flush every ``ACK_FLUSH_INTERVAL_SECONDS`` when nothing arrives: one script
per task instead of two. A worker killed in between leaves those entries
behind; kombu restores such a message after the visibility timeout and the
run finds its revision synced (``unchanged``, no V2 call). Processes without
the step (operator commands, tests) ack at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import bootsteps
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps
from redis.commands.core import Script

log = logging.getLogger(__name__)

_PATCHED_MARK = "_v1sync_shared_client"
_SHARED_ATTRIBUTE = "_v1sync_client"

# KEYS: the unacked index (sorted set), the unacked hash; ARGV: time, tag,
# payload, then the tags of acked messages to remove.
_APPEND_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
for i = 4, #ARGV do
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
end
"""
# KEYS: as above; ARGV: the tags of acked messages.
_REMOVE_SCRIPT = """
for i = 1, #ARGV do
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
end
"""
ACK_FLUSH_INTERVAL_SECONDS = 0.05
# Bytes: the digest needs no client's encoder; every call passes its client.
_APPEND = Script(None, _APPEND_SCRIPT.encode())  # type: ignore[arg-type]
_REMOVE = Script(None, _REMOVE_SCRIPT.encode())  # type: ignore[arg-type]
# How a server says it does not know EVALSHA (renamed or disabled); an ACL
# refusal is redis-py's ``NoPermissionError``.
_UNKNOWN_COMMAND = "unknown command"


@contextmanager
def _conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
    """kombu's ``conn_or_acquire``: the given client, else the one client of the current pool."""
    if client:
        yield client
        return
    shared = getattr(self, _SHARED_ATTRIBUTE, None)
    if shared is None or shared.connection_pool is not self.pool:
        shared = self._create_client()
        setattr(self, _SHARED_ATTRIBUTE, shared)
    yield shared


setattr(_conn_or_acquire, _PATCHED_MARK, True)

_original_append = kombu_redis.QoS.append
_original_ack = kombu_redis.QoS.ack
_original_reject = kombu_redis.QoS.reject
_scripts_refused = False
# Acks not yet removed from Redis, per QoS (channel); only while a worker defers.
_deferred: dict[Any, list[str]] = {}
_deferred_lock = threading.Lock()
_deferring = False


def _run_script(qos: Any, script: Any, args: list[Any]) -> bool:
    """Run ``script`` on the QoS's two keys; False when the server refuses scripts."""
    global _scripts_refused
    if _scripts_refused:
        return False
    with qos.channel.conn_or_acquire() as client:
        try:
            script(keys=[qos.unacked_index_key, qos.unacked_key], args=args, client=client)
        except redis.exceptions.NoPermissionError:
            _scripts_refused = True
        except redis.ResponseError as error:
            if _UNKNOWN_COMMAND not in str(error):
                raise
            _scripts_refused = True
    if _scripts_refused:
        log.warning("the broker refuses scripts: kombu's own ack bookkeeping is used")
        return False
    return True


def _append(self: Any, message: Any, delivery_tag: str) -> None:
    """kombu's ``QoS.append`` as one script: index and hash entries of a delivered
    message (and the removal of the messages acked since the last one)."""
    delivery = message.delivery_info
    payload = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
    acked = _take_deferred(self)
    try:
        ran = _run_script(self, _APPEND, [time.time(), delivery_tag, payload, *acked])
    except Exception:
        _defer(self, acked)  # the next script or flush tries them again
        raise
    if not ran:
        _original_append(self, message, delivery_tag)
        _remove_each(self, acked)
        return
    kombu_redis.virtual.QoS.append(self, message, delivery_tag)


def _ack(self: Any, delivery_tag: str) -> None:
    """kombu's ``QoS.ack``: deferred to the next delivery in a worker, else one script."""
    if _deferring and not _scripts_refused:
        _defer(self, [delivery_tag])
    elif not _run_script(self, _REMOVE, [delivery_tag]):
        _original_ack(self, delivery_tag)
        return
    kombu_redis.virtual.QoS.ack(self, delivery_tag)


def _reject(self: Any, delivery_tag: str, requeue: bool = False) -> None:
    """kombu's ``QoS.reject``; without requeue the same script as an ack."""
    if requeue:
        _original_reject(self, delivery_tag, requeue=True)
        return
    _ack(self, delivery_tag)


def _defer(qos: Any, tags: list[str]) -> None:
    if tags:
        with _deferred_lock:
            _deferred.setdefault(qos, []).extend(tags)


def _take_deferred(qos: Any) -> list[str]:
    with _deferred_lock:
        return _deferred.pop(qos, [])


def _remove_each(qos: Any, tags: list[str]) -> None:
    """kombu's own index removal, one transaction per tag (scripts refused)."""
    for tag in tags:
        qos._remove_from_indices(tag).execute()


def defer_acks(enabled: bool) -> None:
    """Whether acks wait for the next delivery or the flush (see the module)."""
    global _deferring
    _deferring = enabled


def flush_deferred_acks() -> None:
    """Remove every deferred ack's entries from Redis now."""
    with _deferred_lock:
        pending = list(_deferred.items())
        _deferred.clear()
    for qos, tags in pending:
        try:
            if not _run_script(qos, _REMOVE, tags):
                _remove_each(qos, tags)
        except Exception:
            # Broker away: the messages come back after the visibility timeout
            # and end ``unchanged``; nothing is lost.
            log.warning("could not remove acked messages from Redis", exc_info=True)


class AckBatching(bootsteps.StartStopStep):
    """Consumer step: acks leave Redis with the next delivery or on a short timer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        if c.hub is None or self._timer is not None:
            return
        defer_acks(True)
        self._timer = c.hub.call_repeatedly(ACK_FLUSH_INTERVAL_SECONDS, flush_deferred_acks)

    def stop(self, c: Any) -> None:
        defer_acks(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        flush_deferred_acks()

    def shutdown(self, c: Any) -> None:
        self.stop(c)


def apply() -> None:
    """Make kombu's Redis channels reuse one client per pool, and index updates
    one command each (idempotent)."""
    channel_class: Any = kombu_redis.Channel
    if not is_applied():
        channel_class.conn_or_acquire = _conn_or_acquire
        qos_class: Any = kombu_redis.QoS
        qos_class.append = _append
        qos_class.ack = _ack
        qos_class.reject = _reject


def is_applied() -> bool:
    """Whether ``apply()`` has patched kombu's Redis channel in this process."""
    return bool(getattr(kombu_redis.Channel.conn_or_acquire, _PATCHED_MARK, False))
