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
channel in place, like ``sync_core.kombu_redis_fix``, rather than naming a
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
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps
from redis.commands.core import Script

_PATCHED_MARK = "_v1sync_shared_client"
_SHARED_ATTRIBUTE = "_v1sync_client"

# KEYS: the unacked index (sorted set), the unacked hash; ARGV: time, tag, payload.
_APPEND_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
"""
# KEYS: as above; ARGV: the delivery tag.
_REMOVE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
"""
# Bytes: the digest needs no client's encoder; every call passes its client.
_APPEND = Script(None, _APPEND_SCRIPT.encode())  # type: ignore[arg-type]
_REMOVE = Script(None, _REMOVE_SCRIPT.encode())  # type: ignore[arg-type]
# How a server says it does not run scripts (ACL, renamed or disabled commands).
_REFUSALS = ("NOPERM", "unknown command")


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


def _run_script(qos: Any, script: Any, args: list[Any]) -> bool:
    """Run ``script`` on the QoS's two keys; False when the server refuses scripts."""
    global _scripts_refused
    if _scripts_refused:
        return False
    with qos.channel.conn_or_acquire() as client:
        try:
            script(keys=[qos.unacked_index_key, qos.unacked_key], args=args, client=client)
        except redis.ResponseError as error:
            if not any(refusal in str(error) for refusal in _REFUSALS):
                raise
            _scripts_refused = True
            return False
    return True


def _append(self: Any, message: Any, delivery_tag: str) -> None:
    """kombu's ``QoS.append`` as one script: index and hash entries of a delivered message."""
    delivery = message.delivery_info
    payload = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
    if not _run_script(self, _APPEND, [time.time(), delivery_tag, payload]):
        _original_append(self, message, delivery_tag)
        return
    kombu_redis.virtual.QoS.append(self, message, delivery_tag)


def _ack(self: Any, delivery_tag: str) -> None:
    """kombu's ``QoS.ack`` as one script: the message leaves both keys."""
    if not _run_script(self, _REMOVE, [delivery_tag]):
        _original_ack(self, delivery_tag)
        return
    kombu_redis.virtual.QoS.ack(self, delivery_tag)


def _reject(self: Any, delivery_tag: str, requeue: bool = False) -> None:
    """kombu's ``QoS.reject``; without requeue the same script as an ack."""
    if requeue:
        _original_reject(self, delivery_tag, requeue=True)
        return
    _ack(self, delivery_tag)


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
