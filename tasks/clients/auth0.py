"""Auth0 access tokens for the V1 API gateway: client credentials, private-key JWT.

The worker proves who it is to Auth0 with a short-lived RS256 client assertion
signed by ``AUTH0_PRIVATE_KEY`` (no client secret), as ``v2-contract.md``
describes, and gets back an access token for ``LFX_API_GW``. That token lives
for hours; it is reused until ``REFRESH_MARGIN_SECONDS`` before it expires, and
only one thread per process asks Auth0 for a new one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

GRANT_TYPE = "client_credentials"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHM = "RS256"
# Auth0 accepts assertions that live at most a few minutes; two is the contract.
ASSERTION_LIFETIME_SECONDS = 120
# Ask for a new access token this long before the current one expires, so a
# token never expires between our check and the gateway verifying it.
REFRESH_MARGIN_SECONDS = 60
# When Auth0 omits ``expires_in`` (it should not), assume a short life.
DEFAULT_EXPIRES_IN_SECONDS = 300


class Auth0Error(Exception):
    """Auth0 gave no usable access token. The message never holds a secret."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _AccessToken:
    value: str
    refresh_at: float

    def __repr__(self) -> str:
        return f"_AccessToken(refresh_at={self.refresh_at})"


class Auth0TokenSource:
    """Client-credentials access tokens for one Auth0 client and API audience.

    Parameters:
        token_url: ``{AUTH0_BASE_URL}/oauth/token``.
        assertion_audience: the assertion's ``aud``, ``{AUTH0_BASE_URL}/``.
        client_id: ``AUTH0_CLIENT_ID``; the assertion's ``iss`` and ``sub``.
        signing_key: the parsed ``AUTH0_PRIVATE_KEY``.
        api_audience: the ``audience`` form field, ``LFX_API_GW`` as configured.
        timeout: seconds for the token request.
        session: the HTTP session to use (one is created when omitted).
        clock: the time source (Unix seconds) for the token's reuse; tests
            inject their own.

    Thread-safe.
    """

    def __init__(
        self,
        *,
        token_url: str,
        assertion_audience: str,
        client_id: str,
        signing_key: RSAPrivateKey,
        api_audience: str,
        timeout: float,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.assertion_audience = assertion_audience
        self.client_id = client_id
        self.api_audience = api_audience
        self.timeout = timeout
        self._signing_key = signing_key
        self._session = session or requests.Session()
        self._clock = clock
        self._current: _AccessToken | None = None
        # Held while asking Auth0, so concurrent callers wait for one refresh.
        self._refresh_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Auth0TokenSource(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"api_audience={self.api_audience!r})"
        )

    __str__ = __repr__

    def access_token(self) -> str:
        """A valid access token: the cached one, or a fresh one from Auth0.

        Raises ``Auth0Error`` when Auth0 cannot be reached or refuses.
        """
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        with self._refresh_lock:
            # Another thread may have refreshed while this one waited.
            current = self._current
            if current is not None and self._clock() < current.refresh_at:
                return current.value
            self._current = self._request_token()
            return self._current.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the gateway rejected it); the next call gets a new one."""
        with self._refresh_lock:
            if self._current is not None and self._current.value == token:
                self._current = None

    def client_assertion(self) -> str:
        """A fresh RS256 client assertion: ``iss`` = ``sub`` = client id, unique ``jti``.

        Stamped with the real time, not ``clock``: Auth0 checks it against its own.
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.assertion_audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._signing_key, algorithm=ASSERTION_ALGORITHM)

    def _request_token(self) -> _AccessToken:
        form = {
            "grant_type": GRANT_TYPE,
            "client_id": self.client_id,
            "audience": self.api_audience,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        requested_at = self._clock()
        try:
            response = self._session.post(self.token_url, data=form, timeout=self.timeout)
        except requests.RequestException as error:
            raise Auth0Error(f"Auth0 token request failed: {type(error).__name__}") from None
        if response.status_code != 200:
            # Auth0's error bodies name the problem (``invalid_client``) and hold no secret.
            raise Auth0Error(
                f"Auth0 answered {response.status_code}: {response.text[:200]}",
                status=response.status_code,
            )
        token = _parse_token_response(response, requested_at)
        log.info(
            "got an Auth0 access token",
            extra={
                "client_id": self.client_id,
                "refresh_in": round(token.refresh_at - requested_at),
            },
        )
        return token


def _parse_token_response(response: requests.Response, requested_at: float) -> _AccessToken:
    """The token and when to refresh it, from Auth0's JSON reply."""
    try:
        body = response.json()
    except ValueError:
        raise Auth0Error("Auth0 answered with something that is not JSON") from None
    value = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise Auth0Error("Auth0's reply has no access_token")
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN_SECONDS)
    if not isinstance(expires_in, int | float) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN_SECONDS
    # A token shorter-lived than twice the margin is still reused for half its life.
    margin = min(REFRESH_MARGIN_SECONDS, expires_in / 2)
    return _AccessToken(value=value, refresh_at=requested_at + expires_in - margin)


def token_source_from_settings(
    settings: WorkerSettings, session: requests.Session | None = None
) -> Auth0TokenSource:
    """The worker's token source (the key is parsed once per process)."""
    return Auth0TokenSource(
        token_url=settings.auth0_token_url,
        assertion_audience=settings.auth0_audience_url,
        client_id=settings.auth0_client_id,
        signing_key=settings.auth0_signing_key(),
        api_audience=settings.lfx_api_gw,
        timeout=settings.http_timeout,
        session=session,
    )
