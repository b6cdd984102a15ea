"""V1 organizations (a member's ``account__c``): their names, cached for every worker.

``GET {LFX_API_GW}organization-service/v1/orgs/{sfid}`` with the same Auth0
bearer as the user service answers ``{"ID", "Name", "Domains"}``. Entries are
cached in ``v1-mappings`` as ``v1_org.{sfid}`` with the same freshness,
background refresh and cross-worker lock as the users
(``tasks.clients.cached_directory``), so a thousand members of one company make one
call. A failed lookup leaves the organization's name unset; it never fails
the sync.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.clients.auth0 import Auth0TokenSource
from tasks.clients.cached_directory import (
    CachedDirectory,
    DirectorySpec,
    decode_entry,
    encode_entry,
)
from tasks.clients.v1api import V1ApiFetcher

if TYPE_CHECKING:
    from sync_core.nats_client import SyncNats
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

ORG_KEY_PREFIX = "v1_org."
ORG_LOCK_PREFIX = "v1_org_lock."
ORGS_PATH = "organization-service/v1/orgs/"
# Salesforce account ids; anything else is not looked up (nor made a KV key).
ORG_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class CachedOrganization:
    """One ``v1_org.{sfid}`` cache entry; ``error`` is set when the lookup failed."""

    id: str
    name: str
    last_fetched: float
    error: str | None = None

    @classmethod
    def from_api(cls, sfid: str, body: dict[str, Any], now: float) -> CachedOrganization:
        """The entry for an organization service answer (a non-text name becomes "")."""
        name = body.get("Name")
        found = body.get("ID")
        return cls(
            id=found if isinstance(found, str) and found else sfid,
            name=name.strip() if isinstance(name, str) else "",
            last_fetched=now,
        )

    @classmethod
    def failed(cls, sfid: str, kind: str, now: float) -> CachedOrganization:
        """The entry that remembers a failed lookup until it expires."""
        return cls(sfid, "", last_fetched=now, error=kind)

    def to_json(self) -> bytes:
        """``{ID, Name, _last_fetched[, _error]}``."""
        return encode_entry({"ID": self.id, "Name": self.name}, self.last_fetched, self.error)

    @classmethod
    def from_json(cls, raw: bytes) -> CachedOrganization | None:
        """Parse a cache entry; None when it is not one (treated as absent)."""
        decoded = decode_entry(raw)
        if decoded is None:
            return None
        data, last_fetched, error = decoded
        found, name = data.get("ID"), data.get("Name")
        return cls(
            id=found if isinstance(found, str) else "",
            name=name if isinstance(name, str) else "",
            last_fetched=last_fetched,
            error=error,
        )


ORG_CACHE: DirectorySpec[CachedOrganization] = DirectorySpec(
    what="V1 organization",
    id_field="org_sfid",
    key_prefix=ORG_KEY_PREFIX,
    lock_prefix=ORG_LOCK_PREFIX,
    from_api=CachedOrganization.from_api,
    failed=CachedOrganization.failed,
    from_json=CachedOrganization.from_json,
    thread_prefix="v1-org-refresh",
)


class OrganizationDirectory:
    """The names of V1 organizations, through the shared cache.

    Parameters:
        cache: the ``CachedDirectory`` over the organization service.
        fetcher: its HTTP client, closed with the directory.
    """

    def __init__(
        self, cache: CachedDirectory[CachedOrganization], fetcher: V1ApiFetcher | None = None
    ) -> None:
        self._cache = cache
        self._fetcher = fetcher

    def __repr__(self) -> str:
        return f"OrganizationDirectory({self._cache!r})"

    def name_of(self, sfid: Any) -> str | None:
        """The organization's name, or None (not an id, unknown, a failed lookup). Never raises."""
        if not isinstance(sfid, str) or not ORG_ID_PATTERN.fullmatch(sfid.strip()):
            return None
        try:
            organization = self._cache.lookup(sfid.strip())
        except Exception:
            log.warning("V1 organization lookup broke", extra={"org_sfid": sfid}, exc_info=True)
            return None
        if organization is None or organization.error or not organization.name:
            return None
        return organization.name

    def close(self) -> None:
        """Stop the background refreshes and close the HTTP client."""
        self._cache.close()
        if self._fetcher is not None:
            self._fetcher.close()


def organization_directory_from_settings(
    settings: WorkerSettings,
    nats: SyncNats,
    token_source: Auth0TokenSource | None = None,
    *,
    cache_writes: bool = True,
) -> OrganizationDirectory:
    """The worker's organization directory; pass the user service's ``token_source``.

    ``cache_writes=False``: a dry run (``explain``) reads the cache only.
    """
    fetcher = V1ApiFetcher(
        settings, ORGS_PATH, "V1 organization service", token_source=token_source
    )
    return OrganizationDirectory(
        CachedDirectory(
            nats,
            settings.v1_mappings_bucket,
            ORG_CACHE,
            fetcher.fetch,
            cache_writes=cache_writes,
        ),
        fetcher,
    )
