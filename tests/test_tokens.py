"""Heimdall token minting: claims, header, kid source, reuse and invalidation.

Tokens are decoded with PyJWT and the public key, as the V2 services do. The
JWKS comes from a small ``http.server`` on a loopback port, over real HTTP.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

from sandbox.servers import free_port
from sync_core.settings import WorkerSettings
from tasks.clients.identity import Identity, fallback_identity
from tasks.clients.tokens import REUSE_MARGIN_SECONDS, TokenMinter, minter_from_settings
from tasks.errors import TransientError
from tasks.kinds.committees import COMMITTEE_AUDIENCE
from tasks.kinds.projects import PROJECT_AUDIENCE

START = 1_900_000_000.0
USER = Identity(principal="jdoe", sub="jdoe", email="jdoe@example.org", on_behalf_of="jdoe")
MACHINE = fallback_identity("v1_sync_helper")
ALL_CLAIMS = {"iss", "aud", "sub", "principal", "email", "iat", "nbf", "exp", "jti"}


class FakeClock:
    """A settable time source for the minter."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """Serves ``{"keys": [...]}`` (or a chosen status) and counts the requests."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.hits = 0
        self._lock = threading.Lock()
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                with server._lock:
                    server.hits += 1
                    body = json.dumps({"keys": server.keys}).encode()
                    status = server.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks"

    def publish(self, key: RSAPrivateKey, *kids: str) -> None:
        """Serve ``key``'s public half under each of ``kids``, in order."""
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        with self._lock:
            self.keys = [{**jwk, "kid": kid, "use": "sig", "alg": "PS256"} for kid in kids]

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def jwks(heimdall_key: RSAPrivateKey) -> Iterator[JwksServer]:
    server = JwksServer().start()
    server.publish(heimdall_key, "first-kid", "second-kid")
    try:
        yield server
    finally:
        server.stop()


def decode(token: str, key: RSAPrivateKey, audience: str) -> dict[str, Any]:
    """Verify like the V2 services: PS256 only, iss, aud, and the time claims now."""
    claims: dict[str, Any] = jwt.decode(
        token,
        key.public_key(),
        algorithms=["PS256"],
        audience=audience,
        issuer="heimdall",
        options={"require": ["exp", "nbf", "iat", "sub", "jti"]},
    )
    return claims


def decode_unverified_times(token: str, key: RSAPrivateKey, audience: str) -> dict[str, Any]:
    """Verify signature, alg, iss and aud; time claims are checked by the caller."""
    claims: dict[str, Any] = jwt.decode(
        token,
        key.public_key(),
        algorithms=["PS256"],
        audience=audience,
        issuer="heimdall",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    return claims


def test_claims_and_header_are_exactly_the_contract(heimdall_key: RSAPrivateKey) -> None:
    minter = TokenMinter(
        heimdall_key, key_id="kid-from-settings", jwks_url="http://127.0.0.1:9/", clock=FakeClock()
    )
    token = minter.token(PROJECT_AUDIENCE, USER)

    assert jwt.get_unverified_header(token) == {
        "alg": "PS256",
        "typ": "JWT",
        "kid": "kid-from-settings",
    }
    claims = decode_unverified_times(token, heimdall_key, PROJECT_AUDIENCE)
    assert set(claims) == ALL_CLAIMS
    assert claims["iss"] == "heimdall"
    assert claims["aud"] == "lfx-v2-project-service"
    assert claims["sub"] == "jdoe"
    assert claims["principal"] == "jdoe"
    assert claims["email"] == "jdoe@example.org"
    assert claims["iat"] == int(START)
    assert claims["nbf"] == int(START) - 30
    assert claims["exp"] == int(START) + 300
    assert uuid.UUID(claims["jti"]).version == 4


def test_token_verifies_now_with_time_claims_checked(heimdall_key: RSAPrivateKey) -> None:
    minter = TokenMinter(heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/")
    claims = decode(minter.token(COMMITTEE_AUDIENCE, MACHINE), heimdall_key, COMMITTEE_AUDIENCE)
    assert claims["principal"] == "v1_sync_helper@clients"
    assert claims["sub"] == "v1_sync_helper"


def test_signature_is_pss_not_pkcs1(heimdall_key: RSAPrivateKey) -> None:
    minter = TokenMinter(heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/")
    token = minter.token(PROJECT_AUDIENCE, MACHINE)
    # Forge the header to claim RS256: the PSS signature must not verify as PKCS#1 v1.5.
    _header, payload, signature = token.split(".")
    rs_header = jwt.utils.base64url_encode(json.dumps({"alg": "RS256", "kid": "k"}).encode())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{rs_header.decode()}.{payload}.{signature}",
            heimdall_key.public_key(),
            algorithms=["RS256"],
            audience=PROJECT_AUDIENCE,
        )


def test_email_claim_omitted_when_identity_has_none(heimdall_key: RSAPrivateKey) -> None:
    minter = TokenMinter(
        heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/", clock=FakeClock()
    )
    claims = decode_unverified_times(
        minter.token(PROJECT_AUDIENCE, MACHINE), heimdall_key, PROJECT_AUDIENCE
    )
    assert "email" not in claims
    assert set(claims) == ALL_CLAIMS - {"email"}


def test_lifetime_and_issuer_are_configurable(heimdall_key: RSAPrivateKey) -> None:
    minter = TokenMinter(
        heimdall_key,
        key_id="k",
        jwks_url="http://127.0.0.1:9/",
        issuer="heimdall",
        lifetime=120,
        clock=FakeClock(),
    )
    claims = decode_unverified_times(
        minter.token(PROJECT_AUDIENCE, USER), heimdall_key, PROJECT_AUDIENCE
    )
    assert claims["exp"] - claims["iat"] == 120


def test_configured_kid_never_fetches_jwks(heimdall_key: RSAPrivateKey, jwks: JwksServer) -> None:
    minter = TokenMinter(heimdall_key, key_id="configured", jwks_url=jwks.url)
    token = minter.token(PROJECT_AUDIENCE, USER)
    minter.invalidate()
    minter.token(PROJECT_AUDIENCE, USER)
    assert jwt.get_unverified_header(token)["kid"] == "configured"
    assert jwks.hits == 0


def test_kid_is_first_jwks_key_fetched_once_lazily(
    heimdall_key: RSAPrivateKey, jwks: JwksServer
) -> None:
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=jwks.url, clock=FakeClock())
    assert jwks.hits == 0, "the JWKS is fetched on first use, not at construction"

    tokens = [
        minter.token(audience, identity)
        for audience in (PROJECT_AUDIENCE, COMMITTEE_AUDIENCE)
        for identity in (USER, MACHINE)
    ]

    assert {jwt.get_unverified_header(t)["kid"] for t in tokens} == {"first-kid"}
    assert jwks.hits == 1


def test_invalidate_drops_tokens_and_refetches_jwks(
    heimdall_key: RSAPrivateKey, jwks: JwksServer
) -> None:
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=jwks.url, clock=FakeClock())
    before = minter.token(PROJECT_AUDIENCE, USER)
    assert minter.token(PROJECT_AUDIENCE, USER) == before

    jwks.publish(heimdall_key, "rotated-kid")
    minter.invalidate()
    after = minter.token(PROJECT_AUDIENCE, USER)

    assert after != before
    assert jwt.get_unverified_header(after)["kid"] == "rotated-kid"
    assert jwks.hits == 2


def test_token_reused_until_sixty_seconds_before_expiry(heimdall_key: RSAPrivateKey) -> None:
    clock = FakeClock()
    minter = TokenMinter(heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/", clock=clock)
    first = minter.token(PROJECT_AUDIENCE, USER)
    exp = decode_unverified_times(first, heimdall_key, PROJECT_AUDIENCE)["exp"]

    clock.now = exp - REUSE_MARGIN_SECONDS - 0.5
    assert minter.token(PROJECT_AUDIENCE, USER) == first

    clock.now = exp - REUSE_MARGIN_SECONDS
    second = minter.token(PROJECT_AUDIENCE, USER)
    assert second != first
    assert decode_unverified_times(second, heimdall_key, PROJECT_AUDIENCE)["iat"] == int(clock.now)
    assert minter.token(PROJECT_AUDIENCE, USER) == second


def test_tokens_are_per_audience_and_identity(heimdall_key: RSAPrivateKey) -> None:
    minter = TokenMinter(
        heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/", clock=FakeClock()
    )
    other_email = Identity(principal="jdoe", sub="jdoe", email="other@example.org")
    tokens = {
        minter.token(PROJECT_AUDIENCE, USER),
        minter.token(COMMITTEE_AUDIENCE, USER),
        minter.token(PROJECT_AUDIENCE, MACHINE),
        minter.token(PROJECT_AUDIENCE, other_email),
    }
    assert len(tokens) == 4
    assert minter.token(COMMITTEE_AUDIENCE, USER) in tokens


def test_concurrent_first_use_fetches_jwks_once(
    heimdall_key: RSAPrivateKey, jwks: JwksServer
) -> None:
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=jwks.url)
    results: list[str] = []
    results_lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait(timeout=10)
        for _ in range(25):
            token = minter.token(PROJECT_AUDIENCE, USER)
            with results_lock:
                results.append(token)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 200
    assert jwks.hits == 1
    # Threads that miss together may each sign once; after that all reuse.
    assert len(set(results)) <= 8
    for token in set(results):
        assert decode(token, heimdall_key, PROJECT_AUDIENCE)["sub"] == "jdoe"


def test_cache_prunes_expired_tokens(heimdall_key: RSAPrivateKey) -> None:
    clock = FakeClock()
    minter = TokenMinter(heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/", clock=clock)
    for n in range(1100):
        if n == 600:
            clock.now += 300  # the first 600 are now past their reuse window
        minter.token(PROJECT_AUDIENCE, Identity(principal=f"u{n}", sub=f"u{n}"))
    assert len(minter._cache) == 500


def test_jwks_unreachable_is_transient(heimdall_key: RSAPrivateKey) -> None:
    url = f"http://127.0.0.1:{free_port()}/.well-known/jwks"
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=url, http_timeout=2)
    with pytest.raises(TransientError) as caught:
        minter.token(PROJECT_AUDIENCE, USER)
    assert caught.value.kind == "jwks_unavailable"


def test_jwks_error_status_is_transient(heimdall_key: RSAPrivateKey, jwks: JwksServer) -> None:
    jwks.status = 503
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=jwks.url)
    with pytest.raises(TransientError) as caught:
        minter.token(PROJECT_AUDIENCE, USER)
    assert (caught.value.kind, caught.value.status) == ("jwks_unavailable", 503)

    jwks.status = 200
    assert jwt.get_unverified_header(minter.token(PROJECT_AUDIENCE, USER))["kid"] == "first-kid"


def test_jwks_without_keys_is_invalid(heimdall_key: RSAPrivateKey, jwks: JwksServer) -> None:
    jwks.keys = []
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=jwks.url)
    with pytest.raises(TransientError) as caught:
        minter.token(PROJECT_AUDIENCE, USER)
    assert caught.value.kind == "jwks_invalid"


def test_repr_and_str_never_show_key_material(
    heimdall_key: RSAPrivateKey, rsa_pems: dict[str, str]
) -> None:
    minter = TokenMinter(heimdall_key, key_id="k", jwks_url="http://127.0.0.1:9/")
    token = minter.token(PROJECT_AUDIENCE, USER)
    numbers = heimdall_key.private_numbers()
    pem_body = rsa_pems["heimdall"].splitlines()[1]
    for text in (repr(minter), str(minter), f"{minter}", f"{minter!r}"):
        assert "TokenMinter(" in text
        assert "PRIVATE" not in text
        assert pem_body not in text
        assert str(numbers.d)[:20] not in text
        assert str(numbers.public_numbers.n)[:20] not in text
        assert "RSAPrivateKey" not in text
        assert token not in text


def test_minter_from_settings_uses_the_process_key(
    heimdall_key: RSAPrivateKey, rsa_pems: dict[str, str]
) -> None:
    settings = WorkerSettings(
        project_service_url="http://127.0.0.1:1",
        heimdall_private_key=SecretStr(rsa_pems["heimdall"]),
        heimdall_key_id="settings-kid",
        heimdall_jwks_url="http://127.0.0.1:9/jwks",
        heimdall_client_id="v1_sync_helper",
        auth0_tenant="t",
        auth0_client_id="c",
        auth0_private_key=SecretStr(rsa_pems["auth0"]),
        http_timeout=3.5,
    )
    first = minter_from_settings(settings)
    second = minter_from_settings(settings)

    # The PEM was parsed once: both minters hold the same key object.
    assert first._private_key is second._private_key is settings.heimdall_signing_key()
    assert (first.jwks_url, first.http_timeout) == ("http://127.0.0.1:9/jwks", 3.5)
    token = first.token(PROJECT_AUDIENCE, fallback_identity(settings.heimdall_client_id))
    assert jwt.get_unverified_header(token)["kid"] == "settings-kid"
    claims = decode(token, heimdall_key, PROJECT_AUDIENCE)
    assert claims["principal"] == "v1_sync_helper@clients"
