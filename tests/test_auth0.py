"""Auth0 client credentials with a private-key JWT, against the sandbox's Auth0.

The sandbox checks the client assertion's signature, ``iss``, ``sub``, ``aud``,
expiry, ``jti`` reuse and the ``audience`` form field, and its V1 user service
accepts only access tokens it issued; every request is counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr

from sandbox.service import Sandbox
from sync_core.settings import WorkerSettings
from tasks.clients.auth0 import (
    ASSERTION_LIFETIME_SECONDS,
    CLIENT_ASSERTION_TYPE,
    Auth0Error,
    Auth0TokenSource,
    token_source_from_settings,
)
from tasks.clients.users import UserLookupError, V1UserFetcher

AUTH0_CLIENT_ID = "sync-helper-test-client"
USER_ID = "0032M00002XyZabQAB"
USER = {
    "ID": USER_ID,
    "Username": "jdoe",
    "Email": "jane@example.com",
    "FirstName": "Jane",
    "LastName": "Doe",
}
TOKEN_LIFETIME = 86400
HTTP_TIMEOUT = 2.0


def _private(pem: str) -> RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return key


@pytest.fixture
def sandbox(rsa_pems: dict[str, str]) -> Iterator[Sandbox]:
    heimdall = _private(rsa_pems["heimdall"]).public_key()
    auth0 = _private(rsa_pems["auth0"]).public_key()
    with Sandbox(
        heimdall_keys={"kid-1": heimdall},
        auth0_clients={AUTH0_CLIENT_ID: auth0},
        users={USER_ID: USER},
        token_lifetime=TOKEN_LIFETIME,
    ) as sb:
        yield sb


@pytest.fixture
def settings(sandbox: Sandbox, rsa_pems: dict[str, str]) -> WorkerSettings:
    env = sandbox.env()
    return WorkerSettings(
        project_service_url=env["PROJECT_SERVICE_URL"],
        heimdall_private_key=SecretStr(rsa_pems["heimdall"]),
        auth0_tenant="sandbox",
        auth0_client_id=AUTH0_CLIENT_ID,
        auth0_private_key=SecretStr(rsa_pems["auth0"]),
        auth0_base_url=env["AUTH0_BASE_URL"],
        lfx_api_gw=env["LFX_API_GW"],
        http_timeout=HTTP_TIMEOUT,
    )


class Clock:
    """A settable time source."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_client_assertion_carries_the_contract_claims(
    settings: WorkerSettings, rsa_pems: dict[str, str]
) -> None:
    source = token_source_from_settings(settings)
    first, second = source.client_assertion(), source.client_assertion()
    public = _private(rsa_pems["auth0"]).public_key()
    claims = jwt.decode(first, public, algorithms=["RS256"], audience=settings.auth0_audience_url)
    assert jwt.get_unverified_header(first)["alg"] == "RS256"
    assert claims["iss"] == claims["sub"] == AUTH0_CLIENT_ID
    assert claims["aud"] == f"{settings.auth0_base_url}/"
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME_SECONDS
    other = jwt.decode(second, public, algorithms=["RS256"], audience=settings.auth0_audience_url)
    assert claims["jti"] != other["jti"]


def test_token_request_sends_the_configured_audience_and_assertion_type(
    sandbox: Sandbox, settings: WorkerSettings
) -> None:
    token = token_source_from_settings(settings).access_token()
    assert token
    [request] = [r for r in sandbox.requests if r.path == "/oauth/token"]
    assert request.status == 200
    assert request.form is not None
    assert request.form["grant_type"] == "client_credentials"
    assert request.form["client_id"] == AUTH0_CLIENT_ID
    assert request.form["audience"] == settings.lfx_api_gw
    assert request.form["client_assertion_type"] == CLIENT_ASSERTION_TYPE


def test_many_lookups_use_one_access_token(sandbox: Sandbox, settings: WorkerSettings) -> None:
    fetcher = V1UserFetcher(settings)
    try:
        for _ in range(20):
            assert fetcher.fetch(USER_ID)["Username"] == "jdoe"
    finally:
        fetcher.close()
    assert sandbox.count("GET", "/v1/users/") == 20
    assert sandbox.count("POST", "/oauth/token") == 1
    tokens = {r.headers["Authorization"] for r in sandbox.requests if r.method == "GET"}
    assert len(tokens) == 1


def test_token_is_reused_until_sixty_seconds_before_expiry(
    sandbox: Sandbox, settings: WorkerSettings
) -> None:
    clock = Clock(1_000_000.0)
    source = Auth0TokenSource(
        token_url=settings.auth0_token_url,
        assertion_audience=settings.auth0_audience_url,
        client_id=AUTH0_CLIENT_ID,
        signing_key=settings.auth0_signing_key(),
        api_audience=settings.lfx_api_gw,
        timeout=HTTP_TIMEOUT,
        clock=clock,
    )
    first = source.access_token()
    clock.now += TOKEN_LIFETIME - 61
    assert source.access_token() == first
    assert sandbox.count("POST", "/oauth/token") == 1
    clock.now += 2  # 59 s before expiry
    second = source.access_token()
    assert second != first
    assert sandbox.count("POST", "/oauth/token") == 2


def test_concurrent_callers_share_one_refresh(sandbox: Sandbox, settings: WorkerSettings) -> None:
    source = token_source_from_settings(settings)
    # Slow Auth0 down so every caller arrives while the first refresh runs.
    sandbox.inject_fault("POST", "/oauth/token", status=None, delay=0.3)
    start = threading.Barrier(20)
    tokens: list[str] = []

    def call() -> None:
        start.wait()
        tokens.append(source.access_token())

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(tokens) == 20
    assert len(set(tokens)) == 1
    assert sandbox.count("POST", "/oauth/token") == 1


def test_a_rejected_access_token_is_replaced_once(
    sandbox: Sandbox, settings: WorkerSettings
) -> None:
    fetcher = V1UserFetcher(settings)
    try:
        fetcher.fetch(USER_ID)
        sandbox.expire_access_tokens()
        assert fetcher.fetch(USER_ID)["Username"] == "jdoe"
    finally:
        fetcher.close()
    assert sandbox.count("POST", "/oauth/token") == 2
    statuses = [r.status for r in sandbox.requests if r.method == "GET"]
    assert statuses == [200, 401, 200]


def test_auth0_refusal_is_an_error_without_secrets(
    sandbox: Sandbox, settings: WorkerSettings
) -> None:
    wrong_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    source = Auth0TokenSource(
        token_url=settings.auth0_token_url,
        assertion_audience=settings.auth0_audience_url,
        client_id=AUTH0_CLIENT_ID,
        signing_key=wrong_key,
        api_audience=settings.lfx_api_gw,
        timeout=HTTP_TIMEOUT,
    )
    with pytest.raises(Auth0Error) as caught:
        source.access_token()
    assert caught.value.status == 401
    assert "invalid_client" in str(caught.value)
    # No JWT (assertion or token) in the message or the repr.
    assert "eyJ" not in str(caught.value)
    assert "eyJ" not in repr(source)


def test_user_fetch_reports_auth0_trouble_as_a_lookup_error(
    sandbox: Sandbox, settings: WorkerSettings
) -> None:
    sandbox.inject_fault("POST", "/oauth/token", status=503)
    fetcher = V1UserFetcher(settings)
    try:
        with pytest.raises(UserLookupError) as caught:
            fetcher.fetch(USER_ID)
    finally:
        fetcher.close()
    assert caught.value.kind == "auth0"
    assert caught.value.transient
    assert sandbox.count("GET", "/v1/users/") == 0
