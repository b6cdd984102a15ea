"""NATS access shared by every process: connecting, the buckets, a sync facade.

Workers and the operations commands are synchronous code; ``SyncNats`` runs one
NATS connection on an event loop in a daemon thread and lets blocking code
call into it. One instance per process is enough: nats-py multiplexes.

Two guards keep one bad record from breaking the connection for every later
task. Keys are checked against the KV key alphabet and ``KV_KEY_MAX_CHARS``
before they leave the process (``InvalidKVKey``): a subject over the server's
control-line limit (4 KiB) makes nats-server answer ``-ERR`` and drop the
connection, and nats-py then closes the client for good, whatever
``max_reconnect_attempts`` says. And should the server close the connection
anyway, the next call opens a new one (logged once per replacement).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from sync_core.keys import check_kv_key
from sync_core.nats_connection import (
    NatsTarget,
    connect_options,
    describe_connect_error,
    new_client,
)
from sync_core.nats_kv import LeanKeyValue, ReplyInbox
from sync_core.sync_state import DEFAULT_STATE_BUCKET

log = logging.getLogger(__name__)

OBJECTS_BUCKET_HISTORY = 20
DEFAULT_TIMEOUT = 10.0
# Inactive threshold (seconds) of the consumer behind a one-off KV listing: the
# server deletes it this long after the listing ends (stopping a nats-py watcher
# does not, and its default of 5 minutes lets listings pile consumers up).
LISTING_CONSUMER_TTL = 10.0

T = TypeVar("T")


async def connect(target: NatsTarget | str, name: str) -> Client:
    """Connect with endless reconnects: a worker or bridge outlives NATS restarts.

    ``target``: the servers, credentials and TLS (``settings.nats_target``), or a
    bare URL for an unsecured server (tests, benches, the local stack).
    """

    async def on_error(error: Exception) -> None:
        log.warning("nats error", extra={"error": describe_connect_error(error)})

    nc = new_client(target)

    async def on_disconnect() -> None:
        # A deliberate close also reports a disconnect: only a lost link is news.
        if not nc.is_closed:
            log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    await nc.connect(
        **connect_options(target),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    return nc


async def ensure_buckets(
    js: JetStreamContext, objects: str, mappings: str, state: str = DEFAULT_STATE_BUCKET
) -> None:
    """Create the KV buckets when they do not exist (bridge start-up, local stack, tests)."""
    for bucket, history in ((objects, OBJECTS_BUCKET_HISTORY), (mappings, 1), (state, 1)):
        await ensure_bucket(js, bucket, history)


async def ensure_bucket(js: JetStreamContext, bucket: str, history: int = 1) -> None:
    """Create one KV bucket unless it exists."""
    try:
        await js.key_value(bucket)
    except BucketNotFoundError:
        await js.create_key_value(KeyValueConfig(bucket=bucket, history=history))


# How a ``SyncNats`` opens its connection: the retrying ``connect`` of long-lived
# processes, or a one-shot command's fail-fast connector.
Connector = Callable[[NatsTarget | str, str], Coroutine[Any, Any, Client]]


class SyncNats:
    """A blocking facade over one NATS connection owned by a background loop."""

    def __init__(
        self,
        url: NatsTarget | str,
        name: str,
        connector: Connector = connect,
    ) -> None:
        """Connect to ``url`` (a ``NatsTarget`` or a bare URL) with ``connector``.

        One-shot commands pass a fail-fast connector.
        """
        self._url = url
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"nats-{name}", daemon=True
        )
        self._thread.start()
        self._kv: dict[str, LeanKeyValue] = {}
        self._replace_lock = threading.Lock()
        self._closing = False
        self._connector = connector
        try:
            self.nc: Client = self.run(connector(url, name))
        except BaseException:
            self._stop_loop()
            raise
        self.js: JetStreamContext = self.nc.jetstream()
        self._inbox = ReplyInbox(self.nc)

    def live(self) -> Client:
        """The connection, replaced first when the server closed it for good.

        nats-py reconnects after a lost link by itself, but a protocol error
        (``-ERR``) closes the client permanently; without a new one every later
        call of the process would fail with ``ConnectionClosedError``.
        """
        nc = self.nc
        if not nc.is_closed or self._closing:
            return nc
        with self._replace_lock:
            if self.nc is nc:  # no other thread replaced it meanwhile
                error = nc.last_error
                log.warning(
                    "nats connection replaced",
                    extra={"error": str(error) if error else "closed", "client": self._name},
                )
                fresh = self.run(self._connector(self._url, self._name))
                self.js = fresh.jetstream()
                self._inbox = ReplyInbox(fresh)
                self._kv = {}
                self.nc = fresh
            return self.nc

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = DEFAULT_TIMEOUT) -> T:
        """Run ``coro`` on the connection's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = DEFAULT_TIMEOUT
    ) -> T:
        """Call an async function of the connection and wait for it."""

        async def invoke() -> T:
            return await fn(*args)

        return self.run(invoke(), timeout)

    def kv(self, bucket: str) -> LeanKeyValue:
        """The bucket handle of the live connection, looked up once per connection.

        A ``LeanKeyValue``: nats-py's handle with cheaper gets and writes.
        """
        self.live()
        handles = self._kv
        if bucket not in handles:
            handles[bucket] = LeanKeyValue(self.run(self.js.key_value(bucket)), self._inbox)
        return handles[bucket]

    def kv_get(self, bucket: str, key: str) -> Any | None:
        """The current entry of ``key``, or None when absent or deleted.

        ``InvalidKVKey`` for a key the server would refuse.
        """
        check_kv_key(key)
        try:
            return self.run(self.kv(bucket).get(key))
        except KeyNotFoundError:
            return None

    def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        """Write ``value`` and return the new revision (``InvalidKVKey`` for a bad key)."""
        check_kv_key(key)
        return self.run(self.kv(bucket).put(key, value))

    def request(self, subject: str, payload: bytes, timeout: float = 5.0) -> bytes:
        """A request-reply round trip; returns the reply's data."""
        reply = self.run(self.live().request(subject, payload, timeout=timeout), timeout + 1)
        return bytes(reply.data)

    def close(self) -> None:
        """Drain the connection and stop the loop thread."""
        if self._loop.is_closed():
            return
        self._closing = True
        try:
            self.run(self.nc.drain(), timeout=5)
        except Exception:
            log.debug("nats drain failed", exc_info=True)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
