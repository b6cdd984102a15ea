"""kombu's Redis channel reusing one client per connection pool for its commands.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

_PATCHED_MARK = "_v1sync_shared_client"
_SHARED_ATTRIBUTE = "_v1sync_client"


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


def apply() -> None:
    """Make kombu's Redis channels reuse one client per pool (idempotent)."""
    channel_class: Any = kombu_redis.Channel
    if not is_applied():
        channel_class.conn_or_acquire = _conn_or_acquire


def is_applied() -> bool:
    """Whether ``apply()`` has patched kombu's Redis channel in this process."""
    return bool(getattr(kombu_redis.Channel.conn_or_acquire, _PATCHED_MARK, False))
