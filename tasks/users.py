"""Whom a V2 write is attributed to: the V1 user directory and the principal rules.

A V1 record's ``lastmodifiedbyid`` is a machine client (``…@clients``), a V1
platform id, or empty. Platform ids are looked up in the V1 user service
(``GET {LFX_API_GW}v1/users/{id}`` with an Auth0 bearer) and the answer is
cached in the ``v1-mappings`` bucket under ``v1_user.{id}``, shared by every
worker. A KV lock ``v1_user_lock.{id}`` makes sure that across all workers only
one V1 API call per user is in flight. Failures are cached too, so a broken id
costs one call an hour; a failed lookup never fails the sync, it falls back to
the service's own identity.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import requests
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

from tasks.auth0 import Auth0Error, Auth0TokenSource, token_source_from_settings
from tasks.identity import MACHINE_SUFFIX, Identity, fallback_identity, machine_identity

if TYPE_CHECKING:
    from sync_core.nats_client import SyncNats
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

USER_KEY_PREFIX = "v1_user."
LOCK_KEY_PREFIX = "v1_user_lock."
DEFAULT_FRESH_FOR_SECONDS = 3600.0
DEFAULT_LOCK_STALE_AFTER_SECONDS = 10.0
DEFAULT_LOCK_WAIT_SECONDS = 1.0
# How often a caller waiting on another worker's lookup re-reads the cache.
LOCK_POLL_INTERVAL_SECONDS = 0.025
# create → get → take over can race with a release; a few rounds settle it.
LOCK_ATTEMPTS = 3
# Background refreshes run on a small pool: many users can go stale at once.
REFRESH_THREADS = 4
# Platform ids are Salesforce-style ids or UUIDs; anything else cannot be a KV
# key token safely and is not looked up.
PLATFORM_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


class UserLookupError(Exception):
    """The V1 user service gave no user. ``kind`` is a short stable label.

    ``transient`` errors (timeouts, 5xx, Auth0 trouble) say nothing about the
    user; ``not_found`` and ``invalid_response`` do.
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def transient(self) -> bool:
        return self.kind not in ("not_found", "invalid_response")


class UserFetcher(Protocol):
    """Anything that fetches one V1 user's JSON or raises ``UserLookupError``."""

    def fetch(self, platform_id: str) -> dict[str, Any]: ...


class V1UserFetcher:
    """The V1 user service client: ``GET {LFX_API_GW}v1/users/{id}`` with an Auth0 bearer.

    Thread-safe. A 401 drops the access token and tries once more with a new one.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        token_source: Auth0TokenSource | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self._session = session or requests.Session()
        self._tokens = token_source or token_source_from_settings(settings, self._session)
        gateway = settings.lfx_api_gw
        # The audience stays as configured; only the URL needs the separator.
        self.base_url = gateway if gateway.endswith("/") else gateway + "/"
        self.timeout = settings.http_timeout

    def __repr__(self) -> str:
        return f"V1UserFetcher(base_url={self.base_url!r})"

    def fetch(self, platform_id: str) -> dict[str, Any]:
        """The user's JSON (``ID``, ``Username``, ``Email``, …); ``UserLookupError`` otherwise."""
        token = self._access_token()
        response = self._get(platform_id, token)
        if response.status_code == 401:
            # The gateway may have revoked or rotated the token before its expiry.
            self._tokens.invalidate(token)
            response = self._get(platform_id, self._access_token())
        if response.status_code == 404:
            raise UserLookupError("no such V1 user", kind="not_found", status=404)
        if response.status_code in (401, 403):
            raise UserLookupError(
                f"the V1 user service refused the token ({response.status_code})",
                kind="unauthorized",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise UserLookupError(
                f"the V1 user service answered {response.status_code}",
                kind="server_error",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UserLookupError(
                "the V1 user service answered with no JSON object", kind="invalid_response"
            )
        return body

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def _access_token(self) -> str:
        try:
            return self._tokens.access_token()
        except Auth0Error as error:
            raise UserLookupError(str(error), kind="auth0", status=error.status) from None

    def _get(self, platform_id: str, token: str) -> requests.Response:
        url = f"{self.base_url}v1/users/{quote(platform_id, safe='')}"
        try:
            return self._session.get(
                url, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout
            )
        except requests.Timeout:
            raise UserLookupError("the V1 user service timed out", kind="timeout") from None
        except requests.RequestException as error:
            raise UserLookupError(
                f"the V1 user service is unreachable: {type(error).__name__}", kind="unavailable"
            ) from None


@dataclass(frozen=True)
class CachedUser:
    """One ``v1_user.{id}`` cache entry; ``error`` is set when the lookup failed."""

    id: str
    username: str
    email: str
    first_name: str
    last_name: str
    last_fetched: float
    error: str | None = None

    @classmethod
    def from_api(cls, platform_id: str, body: dict[str, Any], now: float) -> CachedUser:
        """The entry for a user service answer (missing or non-text fields become "")."""
        return cls(
            id=_text(body.get("ID")) or platform_id,
            username=_text(body.get("Username")),
            email=_text(body.get("Email")),
            first_name=_text(body.get("FirstName")),
            last_name=_text(body.get("LastName")),
            last_fetched=now,
        )

    @classmethod
    def failed(cls, platform_id: str, kind: str, now: float) -> CachedUser:
        """The entry that remembers a failed lookup until it expires."""
        return cls(platform_id, "", "", "", "", last_fetched=now, error=kind)

    def to_json(self) -> bytes:
        """``{ID, Username, Email, FirstName, LastName, _last_fetched[, _error]}``."""
        data: dict[str, Any] = {
            "ID": self.id,
            "Username": self.username,
            "Email": self.email,
            "FirstName": self.first_name,
            "LastName": self.last_name,
            "_last_fetched": self.last_fetched,
        }
        if self.error:
            data["_error"] = self.error
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CachedUser | None:
        """Parse a cache entry; None when it is not one (treated as absent)."""
        try:
            data = json.loads(raw)
            last_fetched = float(data["_last_fetched"])
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(data, dict):
            return None
        error = data.get("_error")
        return cls(
            id=_text(data.get("ID")),
            username=_text(data.get("Username")),
            email=_text(data.get("Email")),
            first_name=_text(data.get("FirstName")),
            last_name=_text(data.get("LastName")),
            last_fetched=last_fetched,
            error=error if isinstance(error, str) and error else None,
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def is_safe_username(username: str) -> bool:
    """A username fit for ``principal``/``sub`` and the ``X-On-Behalf-Of`` header.

    Not empty, no ``@`` (it would read as an email or a machine client), no
    space or other whitespace or control character (header injection).
    """
    return bool(username) and all(
        ch != "@" and ch.isprintable() and not ch.isspace() for ch in username
    )


def user_identity(user: CachedUser) -> Identity | None:
    """The impersonated identity of a looked-up user; None when it cannot be used."""
    if user.error or not is_safe_username(user.username):
        return None
    email = user.email.strip() or None
    return Identity(
        principal=user.username, sub=user.username, email=email, on_behalf_of=user.username
    )


class UserDirectory:
    """Turns ``lastmodifiedbyid`` into the identity V2 writes are made as.

    Parameters:
        nats: the process's NATS facade.
        mappings_bucket: the ``v1-mappings`` bucket (cache and locks live there).
        fetcher: the V1 user service client.
        client_id: ``HEIMDALL_CLIENT_ID``, for the fallback identity.
        fresh_for: seconds a cache entry is used without a refresh.
        lock_stale_after: seconds after which another worker's lock is taken over.
        lock_wait: seconds a caller waits for another worker's lookup.
        clock: the time source (Unix seconds) for cache ages and lock times.
        cache_writes: False for a dry run (``explain``): the cache is read, never
            written, no lock is taken and nothing is refreshed; a user not in
            the cache is fetched from the user service and not cached.

    Thread-safe; one per worker process. ``close()`` stops the refresh threads.
    """

    def __init__(
        self,
        nats: SyncNats,
        mappings_bucket: str,
        fetcher: UserFetcher,
        *,
        client_id: str,
        fresh_for: float = DEFAULT_FRESH_FOR_SECONDS,
        lock_stale_after: float = DEFAULT_LOCK_STALE_AFTER_SECONDS,
        lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS,
        clock: Callable[[], float] = time.time,
        cache_writes: bool = True,
    ) -> None:
        self.cache_writes = cache_writes
        self._nats = nats
        self._bucket = mappings_bucket
        self._fetcher = fetcher
        self._fallback = fallback_identity(client_id)
        self._fresh_for = fresh_for
        self._lock_stale_after = lock_stale_after
        self._lock_wait = lock_wait
        self._clock = clock
        self._refresher = ThreadPoolExecutor(REFRESH_THREADS, thread_name_prefix="v1-user-refresh")
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"UserDirectory(bucket={self._bucket!r}, fresh_for={self._fresh_for})"

    def identity_for(self, last_modified_by: str | None) -> Identity:
        """The identity for a record last modified by ``last_modified_by``.

        Machine clients are used as they are and never looked up; platform ids
        are looked up; everything else, and every failure, gets the fallback
        identity with a WARNING naming ``platform_id``. Never raises.
        """
        value = (last_modified_by or "").strip()
        if not value:
            return self._fallback
        if value.endswith(MACHINE_SUFFIX):
            return self._machine(value)
        if not PLATFORM_ID_PATTERN.fullmatch(value):
            log.warning("lastmodifiedbyid is not a platform id", extra={"platform_id": value})
            return self._fallback
        try:
            user = self.lookup(value)
        except Exception:
            # NATS trouble or a bug here must not fail the sync.
            log.warning("V1 user lookup broke", extra={"platform_id": value}, exc_info=True)
            return self._fallback
        if user is None:
            log.warning("V1 user lookup is still running elsewhere", extra={"platform_id": value})
            return self._fallback
        identity = user_identity(user)
        if identity is None:
            reason = user.error or "unusable username"
            log.warning(
                "V1 user cannot be impersonated",
                extra={"platform_id": value, "username": user.username, "reason": reason},
            )
            return self._fallback
        return identity

    def lookup(self, platform_id: str) -> CachedUser | None:
        """The cached user, fetched under the lock when absent; None when another
        worker's lookup did not finish within ``lock_wait``.

        A stale entry is returned at once and refreshed in the background.
        """
        cached = self._read(platform_id)
        if not self.cache_writes:
            return cached if cached is not None else self._fetch(platform_id, previous=None)
        if cached is not None:
            if not self._is_fresh(cached):
                self._refresh_in_background(platform_id)
            return cached
        return self._fetch_under_lock(platform_id, wait=True)

    def cached(self, platform_id: str) -> tuple[CachedUser | None, bool]:
        """The cache entry of ``platform_id`` (None when absent) and whether it is fresh."""
        user = self._read(platform_id)
        return user, user is not None and self._is_fresh(user)

    def close(self) -> None:
        """Stop the background refreshes (a running one finishes first)."""
        with self._refreshing_lock:
            self._closed = True
        self._refresher.shutdown(wait=True, cancel_futures=True)

    # The cache ---------------------------------------------------------

    def _read(self, platform_id: str) -> CachedUser | None:
        entry = self._nats.kv_get(self._bucket, USER_KEY_PREFIX + platform_id)
        if entry is None or not entry.value:
            return None
        user = CachedUser.from_json(entry.value)
        if user is None:
            log.warning(
                "ignoring a malformed V1 user cache entry", extra={"platform_id": platform_id}
            )
        return user

    def _write(self, platform_id: str, user: CachedUser) -> None:
        self._nats.kv_put(self._bucket, USER_KEY_PREFIX + platform_id, user.to_json())

    def _is_fresh(self, user: CachedUser) -> bool:
        return self._clock() - user.last_fetched < self._fresh_for

    # Fetching under the cross-worker lock ------------------------------

    def _fetch_under_lock(self, platform_id: str, *, wait: bool) -> CachedUser | None:
        """Fetch and cache the user while holding its lock.

        When another worker holds a fresh lock: wait for its result when
        ``wait``, else (a background refresh) leave the work to it.
        """
        revision = self._acquire_lock(platform_id)
        if revision is None:
            return self._wait_for_cache(platform_id) if wait else None
        try:
            # Another worker may have finished between our read and our lock.
            cached = self._read(platform_id)
            if cached is not None and self._is_fresh(cached):
                return cached
            user = self._fetch(platform_id, previous=cached)
            self._write(platform_id, user)
            return user
        finally:
            self._release_lock(platform_id, revision)

    def _fetch(self, platform_id: str, previous: CachedUser | None) -> CachedUser:
        """Ask the user service; a failure becomes a cache entry, never an exception."""
        now = self._clock()
        try:
            body = self._fetcher.fetch(platform_id)
        except UserLookupError as error:
            log.warning(
                "V1 user lookup failed",
                extra={"platform_id": platform_id, "reason": error.kind, "status": error.status},
            )
            if error.transient and previous is not None and previous.error is None:
                # An outage says nothing about the user: keep what we knew an hour longer.
                return replace(previous, last_fetched=now)
            return CachedUser.failed(platform_id, error.kind, now)
        except Exception:
            log.warning("V1 user lookup broke", extra={"platform_id": platform_id}, exc_info=True)
            return CachedUser.failed(platform_id, "unexpected", now)
        user = CachedUser.from_api(platform_id, body, now)
        log.info("looked up V1 user", extra={"platform_id": platform_id, "username": user.username})
        return user

    def _wait_for_cache(self, platform_id: str) -> CachedUser | None:
        """Poll the cache until another worker's lookup lands or ``lock_wait`` ends."""
        deadline = time.monotonic() + self._lock_wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(LOCK_POLL_INTERVAL_SECONDS, remaining))
            cached = self._read(platform_id)
            if cached is not None:
                return cached

    def _acquire_lock(self, platform_id: str) -> int | None:
        """Create the lock (or take over a stale one); its revision, or None if held."""
        kv = self._nats.kv(self._bucket)
        key = LOCK_KEY_PREFIX + platform_id
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
                "took over a stale V1 user lock",
                extra={"platform_id": platform_id, "held_since": held_since},
            )
            return revision
        return None

    def _release_lock(self, platform_id: str, revision: int) -> None:
        """Delete our lock unless another worker has taken it over meanwhile."""
        kv = self._nats.kv(self._bucket)
        try:
            self._nats.run(kv.delete(LOCK_KEY_PREFIX + platform_id, last=revision))
        except APIError:
            log.debug("V1 user lock was taken over", extra={"platform_id": platform_id})
        except Exception:
            # It goes stale in lock_stale_after seconds anyway.
            log.warning("cannot release a V1 user lock", extra={"platform_id": platform_id})

    # Background refresh ------------------------------------------------

    def _refresh_in_background(self, platform_id: str) -> None:
        with self._refreshing_lock:
            if self._closed or platform_id in self._refreshing:
                return
            self._refreshing.add(platform_id)
        try:
            self._refresher.submit(self._refresh, platform_id)
        except RuntimeError:  # shut down meanwhile
            with self._refreshing_lock:
                self._refreshing.discard(platform_id)

    def _refresh(self, platform_id: str) -> None:
        try:
            self._fetch_under_lock(platform_id, wait=False)
        except Exception:
            log.warning("V1 user refresh broke", extra={"platform_id": platform_id}, exc_info=True)
        finally:
            with self._refreshing_lock:
                self._refreshing.discard(platform_id)

    def _machine(self, value: str) -> Identity:
        name = value.removesuffix(MACHINE_SUFFIX)
        if not is_safe_username(name):
            log.warning("unusable machine client id", extra={"platform_id": value})
            return self._fallback
        return machine_identity(value)


def _lock_time(raw: bytes | None) -> float | None:
    """The Unix time a lock was taken, or None when unreadable (treated as stale)."""
    try:
        return float(raw or b"")
    except ValueError:
        return None


def user_directory_from_settings(
    settings: WorkerSettings, nats: SyncNats, *, cache_writes: bool = True
) -> UserDirectory:
    """The worker's directory: V1 user service via Auth0, cache in ``v1-mappings``."""
    return UserDirectory(
        nats,
        settings.v1_mappings_bucket,
        V1UserFetcher(settings),
        client_id=settings.heimdall_client_id,
        cache_writes=cache_writes,
    )
