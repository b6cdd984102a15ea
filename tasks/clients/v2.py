"""HTTP client of the V2 services (Project, Committee, and any other a type lives in).

One ``V2Service`` per REST collection; a ``V2ServiceSpec`` says how a worker
opens one (each object kind names its own, ``tasks.kinds``). Every call carries a Heimdall bearer
token (and ``X-On-Behalf-Of`` when impersonating), and every answer that is not
a success becomes one of the ``tasks.errors`` classes, so the task decides on
retries from the exception type alone:

- connection errors, timeouts, 5xx, 429 -> ``TransientError`` (with ``retry_after``);
- 409/412, or 400 ``revision mismatch``, on PUT/DELETE -> ``StaleRevision``;
- 409 on POST -> ``SlugConflict``;
- 401 -> drop the cached tokens, retry once, then ``PermanentError``;
- 400, 403, 404 and other 4xx -> ``PermanentError``.

The HTTP layer (urllib3, one pool manager per thread, no retries, no
redirects, the environment's proxy and CA bundle) is ``tasks.clients.http_pool``,
shared with the V1 write client.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import urllib3
from prometheus_client import Histogram

from tasks.clients.http_pool import (
    TRANSPORT_ERRORS,
    Answer,
    ThreadPools,
    body_excerpt,
    is_timeout,
    parse_retry_after,
    transient_error,
)
from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.errors import (
    PermanentError,
    SlugConflict,
    StaleRevision,
    SyncError,
    TransientError,
)
from tasks.stores.leases import check_write_allowed

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

# Answer and parse_retry_after moved to http_pool with the HTTP layer; still importable here.
__all__ = [
    "Answer",
    "V2Service",
    "V2ServiceSpec",
    "Versioned",
    "member_create_headers",
    "members_of",
    "parse_retry_after",
]

API_VERSION_QUERY = "v=1"
ON_BEHALF_OF_HEADER = "X-On-Behalf-Of"
REVISION_MISMATCH_TEXT = "revision mismatch"
# What requests sent by default (compressed answers are decoded by urllib3).
ACCEPT_ENCODING = "gzip, deflate"
USER_AGENT = "v1-sync-helper"
# Suppresses the welcome e-mail V2 sends a new committee member.
SKIP_NOTIFICATION_HEADER = "X-Skip-Notification"
MEMBERS_COLLECTION = "members"

V2_REQUEST_SECONDS = Histogram(
    "v1sync_v2_request_seconds",
    "Latency of V2 service calls by service, method and HTTP status ('error' on transport errors).",
    ["service", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


@dataclass(frozen=True)
class Versioned:
    """A V2 record with the ``ETag`` to send back as ``If-Match``."""

    record: dict[str, Any]
    etag: str


class V2Service:
    """One V2 REST collection (``projects`` or ``committees``) at ``base_url``.

    Parameters:
        base_url: the service root, e.g. ``PROJECT_SERVICE_URL``.
        collection: the path segment of the collection.
        audience: the ``aud`` of the tokens this service accepts.
        minter: signs (and caches) the tokens.
        timeout: connect and read timeout of each request, in seconds.
        service: the ``service`` label of logs and metrics.
        create_headers: extra headers of every ``POST`` (create).

    ``collection_under`` gives the view of a collection below one object
    (``committees/{uid}/members``) that shares this one's sessions.
    """

    def __init__(
        self,
        base_url: str,
        collection: str,
        audience: str,
        minter: TokenMinter,
        *,
        timeout: float = 10.0,
        service: str = "project",
        create_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.create_headers = dict(create_headers or {})
        self.collection = collection
        self.audience = audience
        self.minter = minter
        self.timeout = timeout
        self.service = service
        self._pools = ThreadPools(self.base_url, timeout)

    def __repr__(self) -> str:
        return (
            f"V2Service(service={self.service!r}, base_url={self.base_url!r}, "
            f"collection={self.collection!r})"
        )

    def collection_under(
        self, parent_uid: str, child: str, *, create_headers: Mapping[str, str] | None = None
    ) -> V2Service:
        """The collection ``{collection}/{parent_uid}/{child}`` of the same service.

        The view shares this service's per-thread sessions (and so its
        connections), token minter and timeout; it is cheap to make per call
        and needs no ``close`` of its own (closing this service closes its
        sessions). ``create_headers`` replaces the extra headers of its creates.
        """
        view = copy.copy(self)  # shallow: the thread-local sessions stay shared
        view.collection = f"{self.collection}/{quote(parent_uid, safe='')}/{child}"
        view.create_headers = dict(create_headers or {})
        return view

    def below(self, uid: str) -> V2Service:
        """The object ``uid`` as the collection of its sub-resources.

        ``below(uid).get("settings")`` is ``GET /{collection}/{uid}/settings``;
        the view shares this service's sessions like ``collection_under``.
        """
        view = copy.copy(self)  # shallow: the thread-local sessions stay shared
        view.collection = f"{self.collection}/{quote(uid, safe='')}"
        view.create_headers = {}
        return view

    def create(self, body: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """``POST /{collection}?v=1`` (plus ``create_headers``); the created record (201).

        Raises ``SlugConflict`` on 409 and ``PermanentError(v2_not_found)`` on 404
        (a committee whose project is unknown).
        """
        path = f"/{self.collection}"
        response = self._call(
            "POST", path, identity, json_body=body, extra_headers=self.create_headers
        )
        return self._json(response, "POST", path)

    def get(self, uid: str, identity: Identity) -> Versioned:
        """``GET /{collection}/{uid}?v=1``: the record and its ``ETag``."""
        path = self._item_path(uid)
        response = self._call("GET", path, identity)
        etag = response.headers.get("ETag")
        if not etag:
            raise TransientError(
                f"V2 {self.service} GET {path} answered without an ETag",
                kind="v2_bad_response",
                status=response.status_code,
            )
        return Versioned(record=self._json(response, "GET", path), etag=etag)

    def update(
        self, uid: str, body: dict[str, Any], etag: str, identity: Identity
    ) -> dict[str, Any]:
        """``PUT /{collection}/{uid}?v=1`` with ``If-Match``; the updated record.

        Raises ``StaleRevision`` when ``etag`` is no longer current.
        """
        path = self._item_path(uid)
        response = self._call("PUT", path, identity, json_body=body, if_match=etag)
        if not response.content:
            return {}
        return self._json(response, "PUT", path)

    def search(self, params: dict[str, str], identity: Identity) -> dict[str, Any]:
        """``GET /{collection}?v=1&…params``: the JSON answer of a listing or search."""
        path = f"/{self.collection}"
        response = self._call("GET", path, identity, params=params)
        return self._json(response, "GET", path)

    def delete(self, uid: str, etag: str, identity: Identity) -> None:
        """``DELETE /{collection}/{uid}?v=1`` with ``If-Match`` (204)."""
        self._call("DELETE", self._item_path(uid), identity, if_match=etag)

    def close(self) -> None:
        """Close every thread's session (their connections go with them)."""
        self._pools.close()

    def _item_path(self, uid: str) -> str:
        return f"/{self.collection}/{quote(uid, safe='')}"

    def _session(self) -> urllib3.PoolManager:
        """This thread's pool manager, created on its first call."""
        return self._pools.session()

    def _call(
        self,
        method: str,
        path: str,
        identity: Identity,
        *,
        json_body: dict[str, Any] | None = None,
        if_match: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        """Send once; on a 401 refresh the token and send once more; raise on failure.

        A write is sent only while the run's key lease is known to be held.
        """
        if method != "GET":
            check_write_allowed()
        response = self._send(method, path, identity, json_body, if_match, extra_headers, params)
        if response.status_code == 401:
            self.minter.invalidate()
            response = self._send(
                method, path, identity, json_body, if_match, extra_headers, params
            )
        if response.status_code >= 300:
            raise self._classify(method, path, response)
        return response

    def _send(
        self,
        method: str,
        path: str,
        identity: Identity,
        json_body: dict[str, Any] | None,
        if_match: str | None,
        extra_headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        token = self.minter.token(self.audience, identity)
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
            **(extra_headers or {}),
            "Authorization": f"Bearer {token}",
        }
        if identity.on_behalf_of:
            headers[ON_BEHALF_OF_HEADER] = identity.on_behalf_of
        if if_match is not None:
            headers["If-Match"] = if_match
        url = f"{self.base_url}{path}?{API_VERSION_QUERY}"
        if params:
            url += "&" + urlencode(params)
        body = None
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = self._pools.request(method, url, body, headers, token)
        except TRANSPORT_ERRORS as error:
            self._observe(method, "error", started)
            raise self._transport_error(method, path, error) from None
        self._observe(method, str(response.status_code), started)
        if response.status_code >= 300:
            log.warning(
                "V2 call answered %s",
                response.status_code,
                extra={
                    "service": self.service,
                    "method": method,
                    "path": path,
                    "status": response.status_code,
                    "username": identity.username,
                },
            )
        return response

    def _observe(self, method: str, status: str, started: float) -> None:
        V2_REQUEST_SECONDS.labels(service=self.service, method=method, status=status).observe(
            time.perf_counter() - started
        )

    def _transport_error(self, method: str, path: str, error: Exception) -> TransientError:
        # Only the exception's type: its text can hold the full URL and headers.
        kind = "v2_timeout" if is_timeout(error) else "v2_unavailable"
        log.warning(
            "V2 call failed: %s",
            type(error).__name__,
            extra={"service": self.service, "method": method, "path": path, "status": "error"},
        )
        return TransientError(
            f"V2 {self.service} {method} {path} failed: {type(error).__name__}", kind=kind
        )

    def _classify(self, method: str, path: str, response: Answer) -> SyncError:
        """The error a non-success answer stands for (see the module docstring)."""
        status = response.status_code
        excerpt = body_excerpt(response)
        message = f"V2 {self.service} {method} {path} answered {status}"
        fields: dict[str, Any] = {"status": status, "body_excerpt": excerpt}
        transient = transient_error(response, message, "v2", fields)
        if transient is not None:
            return transient
        if method in ("PUT", "DELETE") and (
            status in (409, 412)
            or (status == 400 and REVISION_MISMATCH_TEXT in (excerpt or "").lower())
        ):
            return StaleRevision(message, kind="stale_revision", **fields)
        if method == "POST" and status == 409:
            return SlugConflict(message, kind="conflict", **fields)
        if status == 401:
            return PermanentError(message, kind="v2_unauthorized", **fields)
        if status == 403:
            return PermanentError(message, kind="v2_forbidden", **fields)
        if status == 404:
            return PermanentError(message, kind="v2_not_found", **fields)
        if status in (400, 422):
            return PermanentError(message, kind="v2_validation", **fields)
        return PermanentError(message, kind="v2_unexpected_status", **fields)

    def _json(self, response: Answer, method: str, path: str) -> dict[str, Any]:
        """The JSON object of a success answer, or ``TransientError(v2_bad_response)``."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TransientError(
                f"V2 {self.service} {method} {path} answered {response.status_code} "
                "without a JSON object",
                kind="v2_bad_response",
                status=response.status_code,
                body_excerpt=body_excerpt(response),
            )
        return data


@dataclass(frozen=True)
class V2ServiceSpec:
    """A V2 service an object type lives in, and how a worker opens it.

    Parameters:
        name: the service's name: the ``service`` label of the V2 call metrics,
            and its key in ``Runtime.services``.
        collection: the top-level REST collection (``projects``).
        audience: the ``aud`` of the tokens the service accepts.
        url_setting: the ``WorkerSettings`` field with the service root; None or
            empty when the service is not configured (its types are then skipped).
        missing_reason: the skip reason of a key whose service is not configured.
    """

    name: str
    collection: str
    audience: str
    url_setting: str
    missing_reason: str

    def open(self, settings: WorkerSettings, minter: TokenMinter) -> V2Service | None:
        """The service's collection, or None when the settings do not configure it."""
        url = getattr(settings, self.url_setting)
        if not url:
            return None
        return V2Service(
            url,
            self.collection,
            self.audience,
            minter,
            timeout=settings.http_timeout,
            service=self.name,
        )


def member_create_headers(settings: WorkerSettings) -> dict[str, str]:
    """``X-Skip-Notification: true`` unless ``SYNC_MEMBER_NOTIFICATIONS=true``.

    A sync from V1 must not e-mail thousands of people a welcome.
    """
    return {} if settings.sync_member_notifications else {SKIP_NOTIFICATION_HEADER: "true"}


def members_of(committees: V2Service, committee_uid: str, settings: WorkerSettings) -> V2Service:
    """The ``committees/{committee_uid}/members`` collection, sharing the sessions."""
    return committees.collection_under(
        committee_uid, MEMBERS_COLLECTION, create_headers=member_create_headers(settings)
    )
