"""A V1 lookup cached in ``v1-mappings``, shared by every worker: users, organizations.

Each entry lives under ``{key_prefix}{id}`` as JSON with ``_last_fetched`` (and
``_error`` when the lookup failed, so a broken id costs one call per freshness
period). A KV lock ``{lock_prefix}{id}`` makes sure that across all workers only
one V1 API call per id is in flight: the others wait for its result (up to
``lock_wait``). A stale entry is served at once and refreshed in the
background. A transient failure (an outage says nothing about the id) keeps
the last good entry for another period.

A fresh entry a lookup read or fetched is also kept in the process for up to
``memo_for`` seconds (never past its freshness): most runs ask for the same
few ids, and each saved read is a NATS round trip off the run.

``CachedDirectory`` is that machinery, parameterised by a ``DirectorySpec``
(key prefixes, how an entry is built, parsed and serialised) and a fetch
function; ``tasks.clients.users`` and ``tasks.clients.organizations`` are its two users.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

if TYPE_CHECKING:
    from sync_core.nats_client import SyncNats

log = logging.getLogger(__name__)

DEFAULT_FRESH_FOR_SECONDS = 3600.0
DEFAULT_LOCK_STALE_AFTER_SECONDS = 10.0
DEFAULT_LOCK_WAIT_SECONDS = 1.0
# How often a caller waiting on another worker's lookup re-reads the cache.
LOCK_POLL_INTERVAL_SECONDS = 0.025
# create → get → take over can race with a release; a few rounds settle it.
LOCK_ATTEMPTS = 3
# Background refreshes run on a small pool: many entries can go stale at once.
REFRESH_THREADS = 4
# How long a fresh entry is answered from the process's memory (a minute of
# another worker's refresh may go unseen; the entry is fresh either way).
DEFAULT_MEMO_SECONDS = 60.0
# At most this many entries are kept in memory; the oldest go first.
MEMO_MAX_ENTRIES = 10_000
# Answers that say something about the id itself (not an outage).
PERMANENT_LOOKUP_KINDS = frozenset({"not_found", "invalid_response"})


class LookupFailure(Exception):
    """A V1 service gave no answer for an id. ``kind`` is a short stable label.

    ``transient`` failures (timeouts, 5xx, Auth0 trouble) say nothing about the
    id; ``not_found`` and ``invalid_response`` do.
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def transient(self) -> bool:
        return self.kind not in PERMANENT_LOOKUP_KINDS


class CacheEntry(Protocol):
    """What the directory needs of an entry: when it was fetched and whether it failed."""

    @property
    def last_fetched(self) -> float: ...

    @property
    def error(self) -> str | None: ...

    def to_json(self) -> bytes: ...


E = TypeVar("E", bound=CacheEntry)


@dataclass(frozen=True)
class DirectorySpec(Generic[E]):
    """What one directory caches and how.

    Parameters:
        what: the thing looked up, for log messages (``V1 user``).
        id_field: the log field naming the id (``platform_id``, ``org_sfid``).
        key_prefix: the cache entries' key prefix (``v1_user.``).
        lock_prefix: the locks' key prefix (``v1_user_lock.``).
        from_api: the entry for a service answer ``(id, body, now)``.
        failed: the entry remembering a failed lookup ``(id, kind, now)``.
        from_json: parse a stored entry; None when it is not one.
        thread_prefix: the name prefix of the refresh threads.
    """

    what: str
    id_field: str
    key_prefix: str
    lock_prefix: str
    from_api: Callable[[str, dict[str, Any], float], E]
    failed: Callable[[str, str, float], E]
    from_json: Callable[[bytes], E | None]
    thread_prefix: str


class CachedDirectory(Generic[E]):
    """Looks ids up through ``fetch`` with the shared cache and lock (module doc).

    Parameters:
        nats: the process's NATS facade.
        bucket: the ``v1-mappings`` bucket (entries and locks live there).
        spec: what is cached and how.
        fetch: the V1 call for one id; raises ``LookupFailure``.
        fresh_for: seconds an entry is used without a refresh.
        lock_stale_after: seconds after which another worker's lock is taken over.
        lock_wait: seconds a caller waits for another worker's lookup.
        clock: the time source (Unix seconds) for entry ages and lock times.
        cache_writes: False for a dry run (``explain``): the cache is read, never
            written, no lock is taken and nothing is refreshed; an id not in the
            cache is fetched and not cached (nor kept in memory).
        memo_for: seconds a fresh entry is answered from memory (0: never).

    Thread-safe; one per worker process and spec. ``close()`` stops the refreshes.
    """

    def __init__(
        self,
        nats: SyncNats,
        bucket: str,
        spec: DirectorySpec[E],
        fetch: Callable[[str], dict[str, Any]],
        *,
        fresh_for: float = DEFAULT_FRESH_FOR_SECONDS,
        lock_stale_after: float = DEFAULT_LOCK_STALE_AFTER_SECONDS,
        lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS,
        clock: Callable[[], float] = time.time,
        cache_writes: bool = True,
        memo_for: float = DEFAULT_MEMO_SECONDS,
    ) -> None:
        self.cache_writes = cache_writes
        self.memo_for = memo_for if cache_writes else 0.0
        # id -> (entry, until): fresh entries answered without a read (``_remembered``).
        self._memo: OrderedDict[str, tuple[E, float]] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._nats = nats
        self.bucket = bucket
        self.spec = spec
        self._fetch_one = fetch
        self.fresh_for = fresh_for
        self._lock_stale_after = lock_stale_after
        self._lock_wait = lock_wait
        self._clock = clock
        self._refresher = ThreadPoolExecutor(REFRESH_THREADS, thread_name_prefix=spec.thread_prefix)
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"CachedDirectory(what={self.spec.what!r}, bucket={self.bucket!r}, "
            f"fresh_for={self.fresh_for})"
        )

    def lookup(self, entry_id: str) -> E | None:
        """The cached entry, fetched under the lock when absent; None when another
        worker's lookup did not finish within ``lock_wait``.

        A stale entry is returned at once and refreshed in the background.
        """
        remembered = self._remembered(entry_id)
        if remembered is not None:
            return remembered
        cached = self._read(entry_id)
        if not self.cache_writes:
            return cached if cached is not None else self._fetch(entry_id, previous=None)
        if cached is not None:
            if self._is_fresh(cached):
                self._remember(entry_id, cached)
            else:
                self._refresh_in_background(entry_id)
            return cached
        return self._fetch_under_lock(entry_id, wait=True)

    def cached(self, entry_id: str) -> tuple[E | None, bool]:
        """The cache entry of ``entry_id`` (None when absent) and whether it is fresh."""
        entry = self._read(entry_id)
        return entry, entry is not None and self._is_fresh(entry)

    def close(self) -> None:
        """Stop the background refreshes (a running one finishes first)."""
        with self._refreshing_lock:
            self._closed = True
        self._refresher.shutdown(wait=True, cancel_futures=True)

    def _ids(self, entry_id: str) -> dict[str, Any]:
        return {self.spec.id_field: entry_id}

    # The cache ---------------------------------------------------------

    def _read(self, entry_id: str) -> E | None:
        entry = self._nats.kv_get(self.bucket, self.spec.key_prefix + entry_id)
        if entry is None or not entry.value:
            return None
        parsed = self.spec.from_json(entry.value)
        if parsed is None:
            log.warning(
                f"ignoring a malformed {self.spec.what} cache entry", extra=self._ids(entry_id)
            )
        return parsed

    def _write(self, entry_id: str, entry: E) -> None:
        self._nats.kv_put(self.bucket, self.spec.key_prefix + entry_id, entry.to_json())
        self._remember(entry_id, entry)

    def _remembered(self, entry_id: str) -> E | None:
        """The entry kept in memory, while it is within ``memo_for`` and fresh."""
        if self.memo_for <= 0:
            return None
        with self._memo_lock:
            kept = self._memo.get(entry_id)
            if kept is None:
                return None
            if self._clock() < kept[1]:
                return kept[0]
            del self._memo[entry_id]
            return None

    def _remember(self, entry_id: str, entry: E) -> None:
        if self.memo_for <= 0:
            return
        until = min(self._clock() + self.memo_for, entry.last_fetched + self.fresh_for)
        with self._memo_lock:
            self._memo[entry_id] = (entry, until)
            self._memo.move_to_end(entry_id)
            while len(self._memo) > MEMO_MAX_ENTRIES:
                self._memo.popitem(last=False)

    def _is_fresh(self, entry: E) -> bool:
        return self._clock() - entry.last_fetched < self.fresh_for

    # Fetching under the cross-worker lock ------------------------------

    def _fetch_under_lock(self, entry_id: str, *, wait: bool) -> E | None:
        """Fetch and cache the entry while holding its lock.

        When another worker holds a fresh lock: wait for its result when
        ``wait``, else (a background refresh) leave the work to it.
        """
        revision = self._acquire_lock(entry_id)
        if revision is None:
            return self._wait_for_cache(entry_id) if wait else None
        try:
            # Another worker may have finished between our read and our lock.
            cached = self._read(entry_id)
            if cached is not None and self._is_fresh(cached):
                return cached
            fetched = self._fetch(entry_id, previous=cached)
            self._write(entry_id, fetched)
            return fetched
        finally:
            self._release_lock(entry_id, revision)

    def _fetch(self, entry_id: str, previous: E | None) -> E:
        """Ask the V1 service; a failure becomes a cache entry, never an exception."""
        now = self._clock()
        what = self.spec.what
        try:
            body = self._fetch_one(entry_id)
        except LookupFailure as error:
            log.warning(
                f"{what} lookup failed",
                extra=self._ids(entry_id) | {"reason": error.kind, "status": error.status},
            )
            if error.transient and previous is not None and previous.error is None:
                # An outage says nothing about the id: keep what we knew a period longer.
                return replace(previous, last_fetched=now)  # type: ignore[type-var]
            return self.spec.failed(entry_id, error.kind, now)
        except Exception:
            log.warning(f"{what} lookup broke", extra=self._ids(entry_id), exc_info=True)
            return self.spec.failed(entry_id, "unexpected", now)
        fetched = self.spec.from_api(entry_id, body, now)
        log.info(f"looked up {what}", extra=self._ids(entry_id))
        return fetched

    def _wait_for_cache(self, entry_id: str) -> E | None:
        """Poll the cache until another worker's lookup lands or ``lock_wait`` ends."""
        deadline = time.monotonic() + self._lock_wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(LOCK_POLL_INTERVAL_SECONDS, remaining))
            cached = self._read(entry_id)
            if cached is not None:
                return cached

    def _acquire_lock(self, entry_id: str) -> int | None:
        """Create the lock (or take over a stale one); its revision, or None if held."""
        kv = self._nats.kv(self.bucket)
        key = self.spec.lock_prefix + entry_id
        for _ in range(LOCK_ATTEMPTS):
            now = self._clock()
            stamp = f"{now:.3f}".encode()
            try:
                return self._nats.run(kv.create(key, stamp))
            except KeyWrongLastSequenceError:
                pass
            except KeyNotFoundError:
                continue  # deleted while create looked at it: try again
            try:
                entry = self._nats.run(kv.get(key))
            except KeyNotFoundError:
                continue  # released meanwhile: try to create it again
            held_since = _lock_time(entry.value)
            if held_since is not None and abs(now - held_since) <= self._lock_stale_after:
                return None
            try:
                revision = self._nats.run(kv.update(key, stamp, last=entry.revision))
            except KeyWrongLastSequenceError:
                return None  # another worker took it over first
            log.warning(
                f"took over a stale {self.spec.what} lock",
                extra=self._ids(entry_id) | {"held_since": held_since},
            )
            return revision
        return None

    def _release_lock(self, entry_id: str, revision: int) -> None:
        """Delete our lock unless another worker has taken it over meanwhile."""
        kv = self._nats.kv(self.bucket)
        try:
            self._nats.run(kv.delete(self.spec.lock_prefix + entry_id, last=revision))
        except APIError:
            log.debug(f"{self.spec.what} lock was taken over", extra=self._ids(entry_id))
        except Exception:
            # It goes stale in lock_stale_after seconds anyway.
            log.warning(f"cannot release a {self.spec.what} lock", extra=self._ids(entry_id))

    # Background refresh ------------------------------------------------

    def _refresh_in_background(self, entry_id: str) -> None:
        with self._refreshing_lock:
            if self._closed or entry_id in self._refreshing:
                return
            self._refreshing.add(entry_id)
        try:
            self._refresher.submit(self._refresh, entry_id)
        except RuntimeError:  # shut down meanwhile
            with self._refreshing_lock:
                self._refreshing.discard(entry_id)

    def _refresh(self, entry_id: str) -> None:
        try:
            self._fetch_under_lock(entry_id, wait=False)
        except Exception:
            log.warning(f"{self.spec.what} refresh broke", extra=self._ids(entry_id), exc_info=True)
        finally:
            with self._refreshing_lock:
                self._refreshing.discard(entry_id)


def encode_entry(fields: dict[str, str], last_fetched: float, error: str | None) -> bytes:
    """A cache entry's bytes: the V1 answer's ``fields`` plus ``_last_fetched[, _error]``."""
    data: dict[str, Any] = {**fields, "_last_fetched": last_fetched}
    if error:
        data["_error"] = error
    return json.dumps(data, separators=(",", ":")).encode()


def decode_entry(raw: bytes) -> tuple[dict[str, Any], float, str | None] | None:
    """The fields, fetch time and error of a cache entry; None when it is not one."""
    try:
        data = json.loads(raw)
        last_fetched = float(data["_last_fetched"])
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("_error")
    return data, last_fetched, error if isinstance(error, str) and error else None


def _lock_time(raw: bytes | None) -> float | None:
    """The Unix time a lock was taken, or None when unreadable (treated as stale)."""
    try:
        return float(raw or b"")
    except ValueError:
        return None
