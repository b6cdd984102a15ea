"""The sandbox's identity services: Heimdall JWKS, Auth0 tokens, V1 users, slug_to_uid."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import nats
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox.servers import NatsServer
from sandbox.service import Sandbox

KID = "heimdall-test"
CLIENT_ID = "lfx-v1-sync-helper"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
USER = {
    "ID": "0032M00002XyZabQAB",
    "Username": "jdoe",
    "Email": "jdoe@example.org",
    "FirstName": "Jane",
    "LastName": "Doe",
}


@pytest.fixture
def sandbox(heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey) -> Iterator[Sandbox]:
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={CLIENT_ID: auth0_key.public_key()},
        users={USER["ID"]: USER},
        token_lifetime=3600,
    ) as sb:
        yield sb


def assertion(sb: Sandbox, key: RSAPrivateKey, alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": sb.url + "/",
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=alg)


def token_form(sb: Sandbox, key: RSAPrivateKey, **overrides: Any) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "audience": sb.env()["LFX_API_GW"],
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(sb, key),
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def post_token(sb: Sandbox, form: dict[str, str]) -> requests.Response:
    return requests.post(sb.url + "/oauth/token", data=form, timeout=10)


def test_env_points_every_service_at_the_sandbox(sandbox: Sandbox) -> None:
    env = sandbox.env()
    assert env == {
        "PROJECT_SERVICE_URL": sandbox.url,
        "COMMITTEE_SERVICE_URL": sandbox.url,
        "HEIMDALL_JWKS_URL": sandbox.url + "/.well-known/jwks",
        "AUTH0_BASE_URL": sandbox.url,
        "LFX_API_GW": sandbox.url + "/",
        "QUERY_SERVICE_URL": sandbox.url,
    }
    assert sandbox.url.startswith("http://127.0.0.1:")


def test_jwks_serves_the_heimdall_key_usable_by_pyjwt(
    sandbox: Sandbox, heimdall_key: RSAPrivateKey
) -> None:
    document = requests.get(sandbox.env()["HEIMDALL_JWKS_URL"], timeout=10).json()
    assert len(document["keys"]) == 1
    jwk = document["keys"][0]
    assert {k: jwk[k] for k in ("kid", "kty", "alg", "use")} == {
        "kid": KID,
        "kty": "RSA",
        "alg": "PS256",
        "use": "sig",
    }
    public = jwt.PyJWK(jwk).key
    signed = jwt.encode({"a": 1}, heimdall_key, algorithm="PS256")
    assert jwt.decode(signed, public, algorithms=["PS256"]) == {"a": 1}


def test_token_endpoint_grants_a_bearer_token(sandbox: Sandbox, auth0_key: RSAPrivateKey) -> None:
    response = post_token(sandbox, token_form(sandbox, auth0_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]
    assert sandbox.token_requests == 1
    assert sandbox.requests[-1].form is not None
    assert sandbox.requests[-1].form["client_id"] == CLIENT_ID


@pytest.mark.parametrize(
    ("case", "status", "error", "change"),
    [
        ("wrong grant type", 400, "unsupported_grant_type", {"grant_type": "password"}),
        ("no client id", 400, "invalid_request", {"client_id": None}),
        ("no assertion", 400, "invalid_request", {"client_assertion": None}),
        ("no audience", 400, "invalid_request", {"audience": None}),
        ("wrong assertion type", 400, "invalid_request", {"client_assertion_type": "jwt"}),
        ("unknown client", 401, "invalid_client", {"client_id": "someone-else"}),
        ("audience not the API", 403, "access_denied", {"audience": "https://api.example.org/"}),
    ],
)
def test_token_endpoint_rejects_bad_forms(
    sandbox: Sandbox,
    auth0_key: RSAPrivateKey,
    case: str,
    status: int,
    error: str,
    change: dict[str, Any],
) -> None:
    response = post_token(sandbox, token_form(sandbox, auth0_key, **change))
    assert response.status_code == status, case
    assert response.json()["error"] == error


@pytest.mark.parametrize(
    ("case", "claims"),
    [
        ("wrong iss", {"iss": "other"}),
        ("wrong sub", {"sub": "other"}),
        ("aud without the slash", {"aud": "__URL__"}),
        ("aud of another tenant", {"aud": "https://tenant.auth0.com/"}),
        ("expired", {"exp": int(time.time()) - 60}),
        ("no exp", {"exp": None}),
        ("no jti", {"jti": None}),
    ],
)
def test_token_endpoint_verifies_the_client_assertion(
    sandbox: Sandbox, auth0_key: RSAPrivateKey, case: str, claims: dict[str, Any]
) -> None:
    claims = {k: (sandbox.url if v == "__URL__" else v) for k, v in claims.items()}
    form = token_form(sandbox, auth0_key, client_assertion=assertion(sandbox, auth0_key, **claims))
    response = post_token(sandbox, form)
    assert response.status_code == 401, case
    assert response.json()["error"] == "invalid_client"


def test_assertion_signed_with_another_key_or_algorithm_is_refused(
    sandbox: Sandbox, auth0_key: RSAPrivateKey, heimdall_key: RSAPrivateKey
) -> None:
    foreign = token_form(sandbox, auth0_key, client_assertion=assertion(sandbox, heimdall_key))
    assert post_token(sandbox, foreign).status_code == 401
    ps256 = token_form(
        sandbox, auth0_key, client_assertion=assertion(sandbox, auth0_key, alg="PS256")
    )
    assert post_token(sandbox, ps256).status_code == 401


def test_an_assertion_cannot_be_replayed(sandbox: Sandbox, auth0_key: RSAPrivateKey) -> None:
    form = token_form(sandbox, auth0_key)
    assert post_token(sandbox, form).status_code == 200
    assert post_token(sandbox, form).status_code == 401


def _access_token(sandbox: Sandbox, auth0_key: RSAPrivateKey) -> str:
    response = post_token(sandbox, token_form(sandbox, auth0_key))
    assert response.status_code == 200
    return str(response.json()["access_token"])


def test_user_service_needs_an_issued_unexpired_token(
    sandbox: Sandbox, auth0_key: RSAPrivateKey
) -> None:
    url = sandbox.env()["LFX_API_GW"] + "v1/users/" + USER["ID"]
    assert requests.get(url, timeout=10).status_code == 401
    forged = {"Authorization": "Bearer sbx_at_forged"}
    assert requests.get(url, headers=forged, timeout=10).status_code == 401
    headers = {"Authorization": "Bearer " + _access_token(sandbox, auth0_key)}
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json() == USER
    missing = sandbox.env()["LFX_API_GW"] + "v1/users/0032M00002NoSuchAAA"
    assert requests.get(missing, headers=headers, timeout=10).status_code == 404
    assert sandbox.count("GET", "/v1/users/") == 4
    sandbox.expire_access_tokens()
    assert requests.get(url, headers=headers, timeout=10).status_code == 401


def test_user_service_tokens_expire_after_their_lifetime(
    heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey
) -> None:
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={CLIENT_ID: auth0_key.public_key()},
        users={USER["ID"]: USER},
        token_lifetime=1,
    ) as sb:
        headers = {"Authorization": "Bearer " + _access_token(sb, auth0_key)}
        url = sb.url + "/v1/users/" + USER["ID"]
        assert requests.get(url, headers=headers, timeout=10).status_code == 200
        deadline = time.monotonic() + 5
        status = 200
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = requests.get(url, headers=headers, timeout=10).status_code
        assert status == 401


def test_users_can_be_added_and_removed_while_running(
    sandbox: Sandbox, auth0_key: RSAPrivateKey
) -> None:
    headers = {"Authorization": "Bearer " + _access_token(sandbox, auth0_key)}
    url = sandbox.url + "/v1/users/0031000001NewUsrAAB"
    assert requests.get(url, headers=headers, timeout=10).status_code == 404
    sandbox.add_user("0031000001NewUsrAAB", {**USER, "ID": "0031000001NewUsrAAB"})
    assert requests.get(url, headers=headers, timeout=10).json()["ID"] == "0031000001NewUsrAAB"
    sandbox.remove_user("0031000001NewUsrAAB")
    assert requests.get(url, headers=headers, timeout=10).status_code == 404


async def _ask(url: str, payloads: list[str]) -> list[str]:
    nc = await nats.connect(url)
    try:
        replies = []
        for payload in payloads:
            msg = await nc.request("lfx.projects-api.slug_to_uid", payload.encode(), timeout=5)
            replies.append(msg.data.decode())
        return replies
    finally:
        await nc.close()


def test_slug_to_uid_over_a_real_nats_server(
    nats_server: NatsServer, heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey
) -> None:
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={},
        nats_url=nats_server.url,
    ) as sb:
        uid = sb.add_project("Kubernetes", "kubernetes")
        replies = asyncio.run(_ask(nats_server.url, ["ROOT", "kubernetes", "unknown", ""]))
        assert replies == [sb.root_uid, uid, "", ""]
        # Projects created later are known at once.
        later = sb.add_project("Helm", "helm")
        assert asyncio.run(_ask(nats_server.url, ["helm"])) == [later]
    # Stopped: nobody answers any more.
    with pytest.raises(nats.errors.NoRespondersError):
        asyncio.run(_ask(nats_server.url, ["ROOT"]))


def test_organization_service_needs_an_issued_token_and_knows_its_organizations(
    sandbox: Sandbox, auth0_key: RSAPrivateKey
) -> None:
    org = {"ID": "0014100000Te2ovAAB", "Name": "Example Corp", "Domains": ["example.com"]}
    sandbox.add_organization(org["ID"], org)
    url = sandbox.env()["LFX_API_GW"] + "organization-service/v1/orgs/" + org["ID"]
    assert requests.get(url, timeout=10).status_code == 401
    forged = {"Authorization": "Bearer sbx_at_forged"}
    assert requests.get(url, headers=forged, timeout=10).status_code == 401
    headers = {"Authorization": "Bearer " + _access_token(sandbox, auth0_key)}
    response = requests.get(url, headers=headers, timeout=10)
    assert (response.status_code, response.json()) == (200, org)
    missing = url.replace(org["ID"], "0014100000NoSuchAAA")
    assert requests.get(missing, headers=headers, timeout=10).status_code == 404
    sandbox.expire_access_tokens()
    assert requests.get(url, headers=headers, timeout=10).status_code == 401
