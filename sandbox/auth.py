"""Authentication as the real services do it: Heimdall JWTs, Auth0, V1 tokens.

- ``HeimdallVerifier`` checks the bearer JWT of every V2 call (PS256, ``kid``
  in the JWKS, ``iss``, ``aud`` per service, time claims with 5 s leeway,
  ``principal``, ``sub``, ``jti``) and serves the JWKS document.
- ``Auth0Issuer`` is the token endpoint: client credentials with a private-key
  JWT client assertion (RS256), and the access tokens it hands out, which the
  V1 user service accepts until they expire.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from sandbox.api_error import ApiError

HEIMDALL_ISSUER = "heimdall"
HEIMDALL_ALGORITHM = "PS256"
CLOCK_SKEW_SECONDS = 5
REQUIRED_V2_CLAIMS = ("exp", "nbf", "iat", "iss", "aud", "sub", "jti")

AUTH0_ASSERTION_ALGORITHM = "RS256"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REQUIRED_ASSERTION_CLAIMS = ("iss", "sub", "aud", "exp", "jti")
ACCESS_TOKEN_PREFIX = "sbx_at_"  # noqa: S105 - a prefix, not a secret


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class HeimdallVerifier:
    """Verifies V2 bearer tokens against the Heimdall keys the sandbox serves."""

    def __init__(self, keys: Mapping[str, RSAPublicKey]) -> None:
        self._keys = dict(keys)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document: one RSA key per ``kid``."""
        documents = []
        for kid, key in self._keys.items():
            jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
            documents.append(
                {
                    "kid": kid,
                    "kty": "RSA",
                    "alg": HEIMDALL_ALGORITHM,
                    "use": "sig",
                    "n": jwk["n"],
                    "e": jwk["e"],
                }
            )
        return {"keys": documents}

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims of the request's bearer JWT, or a 401 ``ApiError``."""
        token = bearer_token(authorization)
        if token is None:
            raise _unauthorized("missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthorized("malformed token") from None
        if header.get("alg") != HEIMDALL_ALGORITHM:
            raise _unauthorized(f"token algorithm must be {HEIMDALL_ALGORITHM}")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise _unauthorized("token kid is not in the JWKS")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[HEIMDALL_ALGORITHM],
                audience=audience,
                issuer=HEIMDALL_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": list(REQUIRED_V2_CLAIMS)},
            )
        except jwt.InvalidTokenError as error:
            raise _unauthorized(f"invalid token: {error}") from None
        principal = claims.get("principal")
        if not isinstance(principal, str) or not principal.strip():
            raise _unauthorized("token principal claim is missing or empty")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise _unauthorized("token sub claim is missing or empty")
        return claims


def _oauth_error(status: int, error: str, description: str) -> ApiError:
    return ApiError(status, description, body={"error": error, "error_description": description})


class Auth0Issuer:
    """The fake Auth0 tenant: client-credential grants and their access tokens.

    Parameters:
        clients: client id -> public key of its client assertions.
        base_url: the tenant URL; assertions must carry ``aud`` = ``base_url + "/"``.
        api_audience: the only API audience the tenant knows (``LFX_API_GW``).
        token_lifetime: ``expires_in`` of the access tokens, in seconds.
    """

    def __init__(
        self,
        clients: Mapping[str, RSAPublicKey],
        base_url: str,
        api_audience: str,
        token_lifetime: int,
    ) -> None:
        self._clients = dict(clients)
        self.base_url = base_url
        self.api_audience = api_audience
        self.token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self._token_clients: dict[str, str] = {}  # access token -> the client it was issued to
        self._used_jti: set[str] = set()

    def grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Answer ``POST /oauth/token``, or raise an OAuth-shaped ``ApiError``."""
        grant_type = form.get("grant_type", "")
        if grant_type != "client_credentials":
            raise _oauth_error(
                400, "unsupported_grant_type", f"Unsupported grant type: {grant_type!r}"
            )
        client_id = form.get("client_id", "")
        assertion = form.get("client_assertion", "")
        if not client_id or not assertion or not form.get("audience"):
            raise _oauth_error(
                400,
                "invalid_request",
                "client_id, audience and client_assertion are required",
            )
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise _oauth_error(
                400, "invalid_request", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
            )
        key = self._clients.get(client_id)
        if key is None:
            raise _oauth_error(401, "invalid_client", "Unknown client")
        self._verify_assertion(assertion, client_id, key)
        if form["audience"] != self.api_audience:
            # Auth0 answers an audience it has no API for with 403.
            raise _oauth_error(403, "access_denied", f"Service not found: {form['audience']}")
        token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + self.token_lifetime
            self._token_clients[token] = client_id
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
        }

    def _verify_assertion(self, assertion: str, client_id: str, key: RSAPublicKey) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
            if header.get("alg") != AUTH0_ASSERTION_ALGORITHM:
                raise jwt.InvalidAlgorithmError(
                    f"assertion algorithm must be {AUTH0_ASSERTION_ALGORITHM}"
                )
            claims = jwt.decode(
                assertion,
                key=key,
                algorithms=[AUTH0_ASSERTION_ALGORITHM],
                audience=self.base_url + "/",
                issuer=client_id,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": list(REQUIRED_ASSERTION_CLAIMS)},
            )
        except jwt.InvalidTokenError as error:
            raise _oauth_error(
                401, "invalid_client", f"Invalid client assertion: {error}"
            ) from None
        if claims.get("sub") != client_id:
            raise _oauth_error(
                401, "invalid_client", "Invalid client assertion: sub must equal the client id"
            )
        jti = str(claims["jti"])
        with self._lock:
            if jti in self._used_jti:
                raise _oauth_error(
                    401, "invalid_client", "Invalid client assertion: jti has already been used"
                )
            self._used_jti.add(jti)

    def check_access_token(self, authorization: str | None) -> None:
        """Accept a bearer token this tenant issued and that has not expired, else 401."""
        token = bearer_token(authorization)
        with self._lock:
            expires_at = self._tokens.get(token or "")
        if expires_at is None:
            raise ApiError(401, "Unauthorized", body={"message": "Unauthorized"})
        if expires_at <= time.time():
            raise ApiError(401, "token expired", body={"message": "Token has expired"})

    def client_of(self, authorization: str | None) -> str:
        """The client id a valid bearer token was issued to (401 as ``check_access_token``).

        V1 records its writes as ``{client_id}@clients``.
        """
        self.check_access_token(authorization)
        with self._lock:
            return self._token_clients[bearer_token(authorization) or ""]

    def expire_tokens(self) -> None:
        """Make every access token issued so far expired (tests of the refresh path)."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0
