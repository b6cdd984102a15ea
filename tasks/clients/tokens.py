"""Heimdall-style PS256 JWTs for the V2 services, minted locally and reused.

The V2 services verify every call's bearer token against the JWKS at
``HEIMDALL_JWKS_URL`` (see ``v2-contract.md``). We hold the private key, so the
worker signs its own tokens: ``iss`` ``heimdall``, ``aud`` per service, the
identity's ``sub``/``principal``/``email``, and a five-minute lifetime. The key
is parsed once per process (~35 ms per parse) and a token is reused for the
same audience and identity until shortly before it expires (signing costs
~1 ms; reuse costs a dict lookup). ``bench/token_minting.py`` measures both.
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

from tasks.clients.identity import Identity, is_safe_identity
from tasks.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

SIGNING_ALGORITHM = "PS256"
DEFAULT_ISSUER = "heimdall"
DEFAULT_LIFETIME_SECONDS = 300
# Sign ``nbf`` in the past: the services allow only ~5 s of clock skew.
NOT_BEFORE_LEEWAY_SECONDS = 30
# A cached token is handed out only while it has at least this much life left,
# so it cannot expire between signing and the service verifying it.
REUSE_MARGIN_SECONDS = 60
# Above this many cached tokens, expired ones are dropped on the next insert
# (one entry per audience and impersonated user).
CACHE_PRUNE_THRESHOLD = 1024


@dataclass(frozen=True)
class _CachedToken:
    token: str
    expires_at: int


class TokenMinter:
    """Signs and caches the bearer tokens of one Heimdall key.

    Parameters:
        private_key: the parsed RSA key (never parse a PEM per token).
        key_id: the header ``kid``; when ``None`` the first key's ``kid`` of the
            JWKS at ``jwks_url`` is used, fetched on first use and again after
            ``invalidate()``.
        jwks_url: Heimdall's JWKS endpoint.
        issuer: the ``iss`` claim.
        lifetime: seconds from ``iat`` to ``exp``.
        http_timeout: timeout of the JWKS request.
        clock: the time source (Unix seconds); tests inject their own.

    Thread-safe: worker threads share one minter.
    """

    def __init__(
        self,
        private_key: RSAPrivateKey,
        *,
        key_id: str | None,
        jwks_url: str,
        issuer: str = DEFAULT_ISSUER,
        lifetime: int = DEFAULT_LIFETIME_SECONDS,
        http_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._private_key = private_key
        self._configured_key_id = key_id or None
        self._jwks_key_id: str | None = None
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.lifetime = lifetime
        self.http_timeout = http_timeout
        self._clock = clock
        self._cache: dict[tuple[str, Identity], _CachedToken] = {}
        self._cache_lock = threading.Lock()
        # Bumped by ``invalidate()`` so a token signed before it is not cached after it.
        self._generation = 0
        # Held while fetching the JWKS so concurrent first calls fetch it once.
        self._jwks_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TokenMinter(issuer={self.issuer!r}, key_id={self._configured_key_id!r}, "
            f"jwks_url={self.jwks_url!r}, lifetime={self.lifetime})"
        )

    __str__ = __repr__

    def token(self, audience: str, identity: Identity) -> str:
        """A bearer token for ``audience`` on behalf of ``identity``.

        Returns the cached token while it has more than ``REUSE_MARGIN_SECONDS``
        left, else signs a new one. Raises ``TransientError`` when the kid must
        come from the JWKS and the JWKS cannot be fetched, and
        ``PermanentError(unsafe_identity)`` for an identity whose ``principal``,
        ``sub`` or ``X-On-Behalf-Of`` fails ``tasks.clients.identity.is_safe_identity``
        (the user directory never hands one out: this is the last guard before
        a header a server would refuse).
        """
        if not is_safe_identity(identity):
            raise PermanentError(
                "the identity cannot be carried by the token and headers", kind="unsafe_identity"
            )
        cache_key = (audience, identity)
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(cache_key)
            generation = self._generation
        if cached is not None and now < cached.expires_at - REUSE_MARGIN_SECONDS:
            return cached.token
        # Sign outside the cache lock: two threads missing together may both
        # sign, which is harmless and cheaper than serialising every signature.
        minted = self._sign(audience, identity, self.key_id(), int(now))
        with self._cache_lock:
            if generation == self._generation:
                if len(self._cache) >= CACHE_PRUNE_THRESHOLD:
                    self._prune(now)
                self._cache[cache_key] = minted
        return minted.token

    def invalidate(self) -> None:
        """Forget every cached token and a JWKS-derived kid (call after a 401)."""
        with self._cache_lock:
            self._cache.clear()
            self._generation += 1
        with self._jwks_lock:
            self._jwks_key_id = None
        log.info("dropped cached V2 tokens", extra={"jwks_url": self.jwks_url})

    def key_id(self) -> str:
        """The header ``kid``: configured, or the first key of the JWKS."""
        if self._configured_key_id:
            return self._configured_key_id
        with self._jwks_lock:
            if self._jwks_key_id is None:
                self._jwks_key_id = fetch_first_kid(self.jwks_url, self.http_timeout)
            return self._jwks_key_id

    def _sign(self, audience: str, identity: Identity, kid: str, now: int) -> _CachedToken:
        expires_at = now + self.lifetime
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": identity.sub,
            "principal": identity.principal,
            "iat": now,
            "nbf": now - NOT_BEFORE_LEEWAY_SECONDS,
            "exp": expires_at,
            "jti": str(uuid.uuid4()),
        }
        if identity.email:
            claims["email"] = identity.email
        token = jwt.encode(
            claims, self._private_key, algorithm=SIGNING_ALGORITHM, headers={"kid": kid}
        )
        return _CachedToken(token=token, expires_at=expires_at)

    def _prune(self, now: float) -> None:
        """Drop tokens too old to hand out again (caller holds the cache lock)."""
        stale = [
            key
            for key, entry in self._cache.items()
            if now >= entry.expires_at - REUSE_MARGIN_SECONDS
        ]
        for key in stale:
            del self._cache[key]


def fetch_first_kid(jwks_url: str, timeout: float) -> str:
    """The ``kid`` of the first key in the JWKS at ``jwks_url``.

    Raises ``TransientError`` (``jwks_unavailable`` or ``jwks_invalid``): the
    task retries, since Heimdall may be restarting or rotating keys.
    """
    try:
        response = requests.get(jwks_url, timeout=timeout)
    except requests.RequestException as error:
        raise TransientError(
            f"cannot fetch the Heimdall JWKS: {type(error).__name__}", kind="jwks_unavailable"
        ) from None
    if response.status_code != 200:
        raise TransientError(
            f"the Heimdall JWKS answered {response.status_code}",
            kind="jwks_unavailable",
            status=response.status_code,
            body_excerpt=response.text,
        )
    try:
        keys = response.json()["keys"]
        kid = keys[0]["kid"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise TransientError(
            "the Heimdall JWKS has no key with a kid",
            kind="jwks_invalid",
            status=response.status_code,
            body_excerpt=response.text,
        ) from None
    if not isinstance(kid, str) or not kid:
        raise TransientError("the Heimdall JWKS's first kid is empty", kind="jwks_invalid")
    log.info("using the first Heimdall JWKS key", extra={"jwks_url": jwks_url, "kid": kid})
    return kid


def minter_from_settings(settings: WorkerSettings) -> TokenMinter:
    """A minter for the worker's Heimdall key (the key is parsed once per process)."""
    return TokenMinter(
        settings.heimdall_signing_key(),
        key_id=settings.heimdall_key_id,
        jwks_url=settings.heimdall_jwks_url,
        http_timeout=settings.http_timeout,
    )
