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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import requests

from tasks.auth0 import Auth0TokenSource
from tasks.cached_directory import (
    DEFAULT_FRESH_FOR_SECONDS,
    DEFAULT_LOCK_STALE_AFTER_SECONDS,
    DEFAULT_LOCK_WAIT_SECONDS,
    CachedDirectory,
    DirectorySpec,
    LookupFailure,
)
from tasks.identity import MACHINE_SUFFIX, Identity, fallback_identity, machine_identity
from tasks.v1api import V1ApiFetcher

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

    Thread-safe; one per worker process. ``close()`` stops the refresh threads.
    The caching is ``tasks.cached_directory``'s.
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
        )

    def __repr__(self) -> str:
        return f"UserDirectory(bucket={self._cache.bucket!r}, fresh_for={self._cache.fresh_for})"

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
        user = self._safe_lookup(value)
        if user is None:
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
            log.warning("unusable machine client id", extra={"platform_id": value})
            return self._fallback
        return machine_identity(value)


def user_directory_from_settings(
    settings: WorkerSettings, nats: SyncNats, token_source: Auth0TokenSource | None = None
) -> UserDirectory:
    """The worker's directory: V1 user service via Auth0, cache in ``v1-mappings``."""
    return UserDirectory(
        nats,
        settings.v1_mappings_bucket,
        V1UserFetcher(settings, token_source=token_source),
        client_id=settings.heimdall_client_id,
    )
