"""NATS access shared by every process: connecting, the buckets, a sync facade.

Workers and the operations commands are synchronous code; ``SyncNats`` runs one
NATS connection on an event loop in a daemon thread and lets blocking code
call into it. One instance per process is enough: nats-py multiplexes.
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
from nats.js.kv import KeyValue

from sync_core.sync_state import DEFAULT_STATE_BUCKET

log = logging.getLogger(__name__)

OBJECTS_BUCKET_HISTORY = 20
DEFAULT_TIMEOUT = 10.0

T = TypeVar("T")


async def connect(url: str, name: str) -> Client:
    """Connect with endless reconnects: a worker or bridge outlives NATS restarts."""

    async def on_error(error: Exception) -> None:
        log.warning("nats error", extra={"error": str(error)})

    nc = Client()

    async def on_disconnect() -> None:
        # A deliberate close also reports a disconnect: only a lost link is news.
        if not nc.is_closed:
            log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    await nc.connect(
        servers=[u.strip() for u in url.split(",")],
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


class SyncNats:
    """A blocking facade over one NATS connection owned by a background loop."""

    def __init__(
        self,
        url: str,
        name: str,
        connector: Callable[[str, str], Coroutine[Any, Any, Client]] = connect,
    ) -> None:
        """Connect to ``url`` with ``connector`` (one-shot commands pass a fail-fast one)."""
        self._url = url
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"nats-{name}", daemon=True
        )
        self._thread.start()
        self._kv: dict[str, KeyValue] = {}
        try:
            self.nc: Client = self.run(connector(url, name))
        except BaseException:
            self._stop_loop()
            raise
        self.js: JetStreamContext = self.nc.jetstream()

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

    def kv(self, bucket: str) -> KeyValue:
        """The bucket handle, looked up once."""
        if bucket not in self._kv:
            self._kv[bucket] = self.run(self.js.key_value(bucket))
        return self._kv[bucket]

    def kv_get(self, bucket: str, key: str) -> Any | None:
        """The current entry of ``key``, or None when absent or deleted."""
        try:
            return self.run(self.kv(bucket).get(key))
        except KeyNotFoundError:
            return None

    def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        """Write ``value`` and return the new revision."""
        return self.run(self.kv(bucket).put(key, value))

    def request(self, subject: str, payload: bytes, timeout: float = 5.0) -> bytes:
        """A request-reply round trip; returns the reply's data."""
        reply = self.run(self.nc.request(subject, payload, timeout=timeout), timeout + 1)
        return bytes(reply.data)

    def close(self) -> None:
        """Drain the connection and stop the loop thread."""
        if self._loop.is_closed():
            return
        try:
            self.run(self.nc.drain(), timeout=5)
        except Exception:
            log.debug("nats drain failed", exc_info=True)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
