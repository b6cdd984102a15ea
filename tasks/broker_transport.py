"""kombu's Redis transports with one reused client per channel for its commands.

kombu's Redis channel builds a new ``redis.Redis`` object for nearly every
command it sends outside the BRPOP loop (``Channel.conn_or_acquire``): each
late ack, each unacked-index update and each Flower event ``PUBLISH``. The
object shares the channel's connection pool, so only its construction is
new, and that costs: building the response-callback table took about a sixth
of the worker's consumer thread (three events and two index updates per task).

These channels keep one client per connection pool and hand it out instead.
A ``redis.Redis`` over a pool is thread-safe (every command takes a pool
connection), commands and replies are the same, and a new pool (after a
reconnect or a Sentinel failover) gets a new client. Every scheme
``sync_core.redis_connection`` accepts has its transport here: ``redis://`` and
``rediss://`` (kombu serves both with one transport) and ``sentinel://``.
The detached-transport fix of ``sync_core.kombu_redis_fix`` patches kombu's
base channel, so these subclasses inherit it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from sync_core.redis_connection import SENTINEL_SCHEME, TLS_SCHEME, RedisTarget, as_target

TRANSPORT_PATH = "tasks.broker_transport:Transport"
SENTINEL_TRANSPORT_PATH = "tasks.broker_transport:SentinelTransport"
PLAIN_SCHEMES = frozenset({"redis", TLS_SCHEME})


class SharedClientMixin:
    """``conn_or_acquire`` that hands out one client per pool instead of a new one per call."""

    _shared_client: Any = None
    pool: Any

    def _create_client(self, asynchronous: bool = False) -> Any:  # provided by kombu's Channel
        raise NotImplementedError

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Channel(SharedClientMixin, kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel reusing one client for its own commands."""


class SentinelChannel(SharedClientMixin, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """kombu's Sentinel channel reusing one client (per master pool) for its own commands."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport (``redis://``, ``rediss://``) with ``Channel`` above."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with ``SentinelChannel`` above."""

    Channel = SentinelChannel


def transport_for(target: RedisTarget | str) -> str | None:
    """The ``broker_transport`` for ``target``'s scheme; None (kombu's own) for another."""
    scheme = as_target(target).scheme
    if scheme == SENTINEL_SCHEME:
        return SENTINEL_TRANSPORT_PATH
    return TRANSPORT_PATH if scheme in PLAIN_SCHEMES else None
