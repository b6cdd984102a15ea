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

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import requests

from sync_core.value_repr import short_repr, short_text, type_name
from tasks.clients.auth0 import Auth0TokenSource
from tasks.clients.cached_directory import (
    DEFAULT_FRESH_FOR_SECONDS,
    DEFAULT_LOCK_STALE_AFTER_SECONDS,
    DEFAULT_LOCK_WAIT_SECONDS,
    CachedDirectory,
    DirectorySpec,
    LookupFailure,
    decode_entry,
    encode_entry,
)
from tasks.clients.identity import (
    MACHINE_SUFFIX,
    Identity,
    fallback_identity,
    is_safe_header_name,
    machine_identity,
    safe_email,
)
from tasks.clients.v1api import V1ApiFetcher

if TYPE_CHECKING:
    from sync_core.nats_client import SyncNats
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

USER_KEY_PREFIX = "v1_user."
LOCK_KEY_PREFIX = "v1_user_lock."
USERS_PATH = "v1/users/"
# Platform ids are Salesforce-style ids or UUIDs; anything else cannot be a KV
# key token safely and is not looked up.
PLATFORM_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A user service answer's text fields are kept up to this length (a longer
# username is unusable anyway); the cache entry stays far below NATS's max payload.
USER_FIELD_MAX_CHARS = 1024


class UserLookupError(LookupFailure):
    """The V1 user service gave no user (see ``LookupFailure`` for ``kind``)."""


class UserFetcher(Protocol):
    """Anything that fetches one V1 user's JSON or raises ``UserLookupError``."""

    def fetch(self, platform_id: str) -> dict[str, Any]: ...


class V1UserFetcher(V1ApiFetcher):
    """The V1 user service client: ``GET {LFX_API_GW}v1/users/{id}`` with an Auth0 bearer.

    Thread-safe. A 401 drops the access token and tries once more with a new one.
    ``fetch`` answers the user's JSON (``ID``, ``Username``, ``Email``, …).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        token_source: Auth0TokenSource | None = None,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(
            settings,
            USERS_PATH,
            "V1 user service",
            token_source=token_source,
            session=session,
            error_type=UserLookupError,
        )


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
        fields = {
            "ID": self.id,
            "Username": self.username,
            "Email": self.email,
            "FirstName": self.first_name,
            "LastName": self.last_name,
        }
        return encode_entry(fields, self.last_fetched, self.error)

    @classmethod
    def from_json(cls, raw: bytes) -> CachedUser | None:
        """Parse a cache entry; None when it is not one (treated as absent)."""
        decoded = decode_entry(raw)
        if decoded is None:
            return None
        data, last_fetched, error = decoded
        return cls(
            id=_text(data.get("ID")),
            username=_text(data.get("Username")),
            email=_text(data.get("Email")),
            first_name=_text(data.get("FirstName")),
            last_name=_text(data.get("LastName")),
            last_fetched=last_fetched,
            error=error,
        )


def _text(value: Any) -> str:
    """A text field of an answer or cache entry: "" unless a string of sane length."""
    return value if isinstance(value, str) and len(value) <= USER_FIELD_MAX_CHARS else ""


def is_safe_username(username: str) -> bool:
    """A username fit for ``principal``/``sub`` and the ``X-On-Behalf-Of`` header.

    See ``tasks.clients.identity.is_safe_header_name``: visible ASCII without ``@``,
    bounded in length.
    """
    return is_safe_header_name(username)


def user_identity(user: CachedUser) -> Identity | None:
    """The impersonated identity of a looked-up user; None when it cannot be used.

    An e-mail that ``safe_email`` refuses is left out of the token.
    """
    if user.error or not is_safe_username(user.username):
        return None
    email = safe_email(user.email)
    return Identity(
        principal=user.username, sub=user.username, email=email, on_behalf_of=user.username
    )


USER_CACHE: DirectorySpec[CachedUser] = DirectorySpec(
    what="V1 user",
    id_field="platform_id",
    key_prefix=USER_KEY_PREFIX,
    lock_prefix=LOCK_KEY_PREFIX,
    from_api=CachedUser.from_api,
    failed=CachedUser.failed,
    from_json=CachedUser.from_json,
    thread_prefix="v1-user-refresh",
)


class UserDirectory:
    """Turns ``lastmodifiedbyid`` into the identity V2 writes are made as, and
    V1 platform ids into people (committee members).

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
    The caching is ``tasks.clients.cached_directory``'s.
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
        self._fallback = fallback_identity(client_id)
        self._cache = CachedDirectory(
            nats,
            mappings_bucket,
            USER_CACHE,
            fetcher.fetch,
            fresh_for=fresh_for,
            lock_stale_after=lock_stale_after,
            lock_wait=lock_wait,
            clock=clock,
            cache_writes=cache_writes,
        )

    def __repr__(self) -> str:
        return f"UserDirectory(bucket={self._cache.bucket!r}, fresh_for={self._cache.fresh_for})"

    def identity_for(self, last_modified_by: object) -> Identity:
        """The identity for a record last modified by ``last_modified_by``.

        Machine clients are used as they are and never looked up; platform ids
        are looked up; everything else (a value that is not a string: number,
        list, map, msgpack bytes…; a string that is not an id), and every
        failure, gets the fallback identity with a WARNING naming ``platform_id``
        (bounded). Null and blank are the fallback without a warning. Never raises.
        """
        if last_modified_by is None:
            return self._fallback
        if not isinstance(last_modified_by, str):
            log.warning(
                "lastmodifiedbyid is not a string",
                extra={
                    "platform_id": short_repr(last_modified_by),
                    "type": type_name(last_modified_by),
                },
            )
            return self._fallback
        value = last_modified_by.strip()
        if not value:
            return self._fallback
        if value.endswith(MACHINE_SUFFIX):
            return self._machine(value)
        if not PLATFORM_ID_PATTERN.fullmatch(value):
            log.warning(
                "lastmodifiedbyid is not a platform id", extra={"platform_id": short_text(value)}
            )
            return self._fallback
        user = self._safe_lookup(value)
        if user is None:
            return self._fallback
        identity = user_identity(user)
        if identity is None:
            reason = user.error or "unusable username"
            log.warning(
                "V1 user cannot be impersonated",
                extra={
                    "platform_id": value,
                    "username": short_text(user.username),
                    "reason": reason,
                },
            )
            return self._fallback
        return identity

    def person(self, platform_id: Any) -> CachedUser | None:
        """The V1 user behind a platform id (a member's ``contact_name__c``), or None.

        None for a value that is not a platform id and for every failed lookup
        (logged): the caller syncs without the names. Never raises.
        """
        if not isinstance(platform_id, str) or not PLATFORM_ID_PATTERN.fullmatch(
            platform_id.strip()
        ):
            return None
        user = self._safe_lookup(platform_id.strip())
        return None if user is None or user.error else user

    def lookup(self, platform_id: str) -> CachedUser | None:
        """The cached user, fetched under the lock when absent; None when another
        worker's lookup did not finish within ``lock_wait``.

        A stale entry is returned at once and refreshed in the background.
        """
        return self._cache.lookup(platform_id)

    def cached(self, platform_id: str) -> tuple[CachedUser | None, bool]:
        """The cache entry of ``platform_id`` (None when absent) and whether it is fresh."""
        return self._cache.cached(platform_id)

    def close(self) -> None:
        """Stop the background refreshes (a running one finishes first)."""
        self._cache.close()

    def _safe_lookup(self, platform_id: str) -> CachedUser | None:
        try:
            user = self.lookup(platform_id)
        except Exception:
            # NATS trouble or a bug here must not fail the sync.
            log.warning("V1 user lookup broke", extra={"platform_id": platform_id}, exc_info=True)
            return None
        if user is None:
            log.warning(
                "V1 user lookup is still running elsewhere", extra={"platform_id": platform_id}
            )
        return user

    def _machine(self, value: str) -> Identity:
        name = value.removesuffix(MACHINE_SUFFIX)
        if not is_safe_username(name):
            log.warning("unusable machine client id", extra={"platform_id": short_text(value)})
            return self._fallback
        return machine_identity(value)


def user_directory_from_settings(
    settings: WorkerSettings,
    nats: SyncNats,
    token_source: Auth0TokenSource | None = None,
    *,
    cache_writes: bool = True,
) -> UserDirectory:
    """The worker's directory: V1 user service via Auth0, cache in ``v1-mappings``."""
    return UserDirectory(
        nats,
        settings.v1_mappings_bucket,
        V1UserFetcher(settings, token_source=token_source),
        client_id=settings.heimdall_client_id,
        cache_writes=cache_writes,
    )
