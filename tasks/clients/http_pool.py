"""The HTTP layer of the clients that write to a service: urllib3, one pool per thread.

Shared by the V2 client (``tasks.clients.v2``) and the V1 write client
(``tasks.clients.v1_committees``). urllib3 directly, not requests: requests'
per-call machinery (preparing the request, merging session settings, hooks,
cookies, adapters) was most of the HTTP cost of a task and none of it is
needed here. What requests would read from the environment (a proxy for the
service's URL, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) is read once per
pool manager, certificates are verified (certifi's bundle, as requests does),
redirects are not followed and urllib3 never retries: the task retries with
backoff and knows what is safe to repeat.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import certifi
import urllib3
import urllib3.exceptions
from requests.utils import get_environ_proxies

from tasks.errors import TransientError

# Connections kept per thread and host; a thread makes one call at a time.
POOL_MAXSIZE = 2
REDACTED = "<redacted>"
# The longest part of an answer's body an error keeps before the excerpt cut.
EXCERPT_SOURCE_CHARS = 2000


@dataclass(frozen=True)
class Answer:
    """One answer: status, headers (case-insensitive), body.

    ``sent_token`` is the bearer token of the request, so a body echoing it
    can be blanked in excerpts; it never appears in ``repr``.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    sent_token: str = field(default="", repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The decoded JSON body (``ValueError`` when it is not JSON)."""
        return json.loads(self.content)


class HasHeaders(Protocol):
    """Anything with a case-insensitive ``headers`` mapping."""

    @property
    def headers(self) -> Mapping[str, str]: ...


class ThreadPools:
    """One urllib3 pool manager per thread for one service at ``base_url``.

    A worker runs a thread pool: each thread keeps its own connections open
    between tasks. Copies of a client that share this object share the pools.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._local = threading.local()
        self._managers: list[urllib3.PoolManager] = []
        self._lock = threading.Lock()

    def session(self) -> urllib3.PoolManager:
        """This thread's pool manager, created on its first call."""
        manager: urllib3.PoolManager | None = getattr(self._local, "manager", None)
        if manager is None:
            # Read once, for this service's URL, as requests would on every call.
            options: dict[str, Any] = {
                "maxsize": POOL_MAXSIZE,
                "retries": False,
                "timeout": urllib3.Timeout(connect=self.timeout, read=self.timeout),
                "cert_reqs": "CERT_REQUIRED",
                "ca_certs": environ_ca_bundle() or certifi.where(),
            }
            proxy = proxy_for(self.base_url)
            manager = (
                urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
            )
            self._local.manager = manager
            with self._lock:
                self._managers.append(manager)
        return manager

    def request(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], token: str
    ) -> Answer:
        """Send once; transport failures raise urllib3's or the OS's exception as they are."""
        raw = self.session().request(
            method, url, body=body, headers=dict(headers), redirect=False, preload_content=True
        )
        return Answer(raw.status, raw.headers, raw.data, token)

    def close(self) -> None:
        """Close every thread's pool manager (their connections go with them)."""
        with self._lock:
            managers, self._managers = self._managers, []
        for manager in managers:
            manager.clear()
        self._local = threading.local()


def environ_ca_bundle() -> str | None:
    """The CA bundle requests would take from the environment (``trust_env``)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def is_timeout(error: Exception) -> bool:
    """Whether a transport error is a timeout (a refused connection is not, as in requests)."""
    return isinstance(error, urllib3.exceptions.TimeoutError | TimeoutError) and not isinstance(
        error, urllib3.exceptions.NewConnectionError
    )


TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``NO_PROXY`` respected), as requests would."""
    proxies = get_environ_proxies(url)
    scheme = url.split("://", 1)[0].lower()
    return proxies.get(scheme) or proxies.get("all") or None


def body_excerpt(response: Answer) -> str:
    """The start of the answer's body, with our bearer token blanked should it echo it."""
    text = response.text[:EXCERPT_SOURCE_CHARS]
    token = response.sent_token
    if token and token in text:
        text = text.replace(token, REDACTED)
    return text


def parse_retry_after(response: HasHeaders, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return max(0.0, (when - current).total_seconds())


# Answers a retry may cure, whatever the service: rate limits, server errors, timeouts.
RATE_LIMITED_STATUS = 429
REQUEST_TIMEOUT_STATUS = 408
SERVER_ERROR_STATUS = 500


def transient_error(
    answer: Answer, message: str, prefix: str, fields: dict[str, Any]
) -> TransientError | None:
    """The ``TransientError`` a non-success ``answer`` stands for, or None when it is not one.

    ``prefix`` names the service in the error kinds (``v2`` -> ``v2_rate_limited``,
    ``v2_5xx``, ``v2_timeout``); a ``Retry-After`` is honoured where one is sent.
    """
    status = answer.status_code
    if status == RATE_LIMITED_STATUS:
        return TransientError(
            message, kind=f"{prefix}_rate_limited", retry_after=parse_retry_after(answer), **fields
        )
    if status >= SERVER_ERROR_STATUS:
        return TransientError(
            message, kind=f"{prefix}_5xx", retry_after=parse_retry_after(answer), **fields
        )
    if status == REQUEST_TIMEOUT_STATUS:
        return TransientError(message, kind=f"{prefix}_timeout", **fields)
    return None
