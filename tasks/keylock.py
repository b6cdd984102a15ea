"""A per-key lock in Redis, so two workers never sync one V1 key at once.

``SET lock token NX PX ttl`` takes it; a Lua compare-and-delete releases it
only while it still holds our token, so a holder whose lock expired cannot
release the next holder's. The TTL outlives the task's hard time limit: a
killed worker's lock expires on its own, a running task's never does.
"""

from __future__ import annotations

import logging
import secrets
from types import TracebackType

import redis

from sync_core.broker import TASK_HARD_TIME_LIMIT

log = logging.getLogger(__name__)

LOCK_PREFIX = "v1sync:lock:"
# Above the hard time limit, so a live task never loses its lock.
DEFAULT_TTL_MS = (TASK_HARD_TIME_LIMIT + 30) * 1000

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class KeyLock:
    """The lock of one V1 key.

    Parameters:
        client: the Redis client.
        key: the V1 key (the lock lives at ``v1sync:lock:{key}``).
        ttl_ms: how long the lock lives unless released.

    Use ``acquire()``/``release()``, or ``with lock:`` after a successful
    ``acquire()`` to release on the way out.
    """

    def __init__(self, client: redis.Redis, key: str, ttl_ms: int = DEFAULT_TTL_MS) -> None:
        self._client = client
        self.name = LOCK_PREFIX + key
        self.ttl_ms = ttl_ms
        self._token = secrets.token_hex(16)
        self.held = False

    def __repr__(self) -> str:
        return f"KeyLock(name={self.name!r}, held={self.held})"

    def acquire(self) -> bool:
        """Take the lock if it is free; True when we hold it now."""
        self.held = bool(self._client.set(self.name, self._token, nx=True, px=self.ttl_ms))
        return self.held

    def release(self) -> bool:
        """Release the lock if it is still ours; True when it was."""
        if not self.held:
            return False
        self.held = False
        released = self._client.eval(_RELEASE_SCRIPT, 1, self.name, self._token)
        if not released:
            log.warning("key lock expired before release", extra={"lock": self.name})
        return bool(released)

    def __enter__(self) -> KeyLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except redis.RedisError:
            # The TTL frees it; a failed release must not hide the task's own outcome.
            log.warning("key lock release failed", extra={"lock": self.name}, exc_info=True)
