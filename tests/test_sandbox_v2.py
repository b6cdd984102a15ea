"""The fake V2 Project and Committee services enforce v2-contract.md.

Tokens are signed here with PyJWT (PS256, the ``heimdall`` key of the
``rsa_pems`` fixture); every rule the contract states gets a request that
breaks it and the answer the real service gives.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox.service import Sandbox

KID = "heimdall-test"
PROJECTS_AUD = "lfx-v2-project-service"
COMMITTEES_AUD = "lfx-v2-committee-service"


def make_sandbox(heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey, **kwargs: Any) -> Sandbox:
    return Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={"client-1": auth0_key.public_key()},
        **kwargs,
    )


@pytest.fixture
def sandbox(heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey) -> Iterator[Sandbox]:
    sb = make_sandbox(heimdall_key, auth0_key)
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


def claims(audience: str = PROJECTS_AUD, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "heimdall",
        "aud": audience,
        "sub": "v1_sync_helper",
        "principal": "v1_sync_helper@clients",
        "iat": now,
        "nbf": now - 30,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: RSAPrivateKey, payload: dict[str, Any], alg: str = "PS256", kid: str = KID) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


class Client:
    """Requests to the sandbox with a valid token for the path's service by default."""

    def __init__(self, sb: Sandbox, key: RSAPrivateKey) -> None:
        self.sb = sb
        self.key = key
        self.session = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        version: str | None = "1",
        auth: str | None = "default",
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        audience = COMMITTEES_AUD if path.startswith("/committees") else PROJECTS_AUD
        all_headers = dict(headers or {})
        if auth == "default":
            all_headers["Authorization"] = "Bearer " + token(self.key, claims(audience))
        elif auth is not None:
            all_headers["Authorization"] = auth
        params = {"v": version} if version is not None else None
        return self.session.request(
            method, self.sb.url + path, json=body, params=params, headers=all_headers, timeout=10
        )

    def project_body(self, slug: str = "kubernetes", **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": slug.title(),
            "slug": slug,
            "description": f"The {slug} project.",
            "parent_uid": self.sb.root_uid,
        }
        body.update(fields)
        return {k: v for k, v in body.items() if v is not ...}

    def create_project(self, slug: str = "kubernetes", **fields: Any) -> dict[str, Any]:
        response = self.call("POST", "/projects", self.project_body(slug, **fields))
        assert response.status_code == 201, response.text
        return dict(response.json())

    def committee_body(self, project_uid: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "Technical Steering Committee",
            "category": "Technical Steering Committee",
            "project_uid": project_uid,
        }
        body.update(fields)
        return {k: v for k, v in body.items() if v is not ...}

    def create_committee(self, project_uid: str, **fields: Any) -> dict[str, Any]:
        response = self.call("POST", "/committees", self.committee_body(project_uid, **fields))
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
def client(sandbox: Sandbox, heimdall_key: RSAPrivateKey) -> Client:
    return Client(sandbox, heimdall_key)


# -- JWT verification ---------------------------------------------------------


def test_valid_token_is_accepted_and_its_claims_recorded(client: Client, sandbox: Sandbox) -> None:
    response = client.call("GET", f"/projects/{sandbox.root_uid}")
    assert response.status_code == 200
    assert sandbox.requests[-1].claims is not None
    assert sandbox.requests[-1].claims["principal"] == "v1_sync_helper@clients"


@pytest.mark.parametrize(
    ("case", "auth"),
    [
        ("missing header", None),
        ("not bearer", "Basic dXNlcjpwYXNz"),
        ("garbage", "Bearer not-a-jwt"),
    ],
)
def test_missing_or_malformed_token_is_401(
    client: Client, sandbox: Sandbox, case: str, auth: str | None
) -> None:
    response = client.call("GET", f"/projects/{sandbox.root_uid}", auth=auth)
    assert response.status_code == 401, case
    assert response.json()["code"] == "401"
    assert sandbox.requests[-1].claims is None


TIME_CLAIMS = frozenset({"exp", "nbf", "iat"})


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        # Offsets from the time the test runs (collection happens much earlier).
        ("expired beyond the skew", {"exp": -10}),
        ("not yet valid beyond the skew", {"nbf": 30}),
        ("issued in the future", {"iat": 30}),
        ("wrong issuer", {"iss": "someone-else"}),
        ("wrong audience", {"aud": COMMITTEES_AUD}),
        ("empty principal", {"principal": ""}),
        ("no principal", {"principal": None}),
        ("no sub", {"sub": None}),
        ("no jti", {"jti": None}),
        ("no exp", {"exp": None}),
        ("no nbf", {"nbf": None}),
        ("no iat", {"iat": None}),
    ],
)
def test_bad_claims_are_401(
    client: Client,
    sandbox: Sandbox,
    heimdall_key: RSAPrivateKey,
    case: str,
    overrides: dict[str, Any],
) -> None:
    now = int(time.time())
    timed = {k: now + v for k, v in overrides.items() if k in TIME_CLAIMS and v is not None}
    bad = token(heimdall_key, claims(PROJECTS_AUD, **{**overrides, **timed}))
    response = client.call("GET", f"/projects/{sandbox.root_uid}", auth="Bearer " + bad)
    assert response.status_code == 401, case
    assert "www-authenticate" in response.headers


def test_expiry_within_five_seconds_of_skew_is_accepted(
    client: Client, sandbox: Sandbox, heimdall_key: RSAPrivateKey
) -> None:
    now = int(time.time())
    fresh = token(heimdall_key, claims(PROJECTS_AUD, exp=now - 2, nbf=now + 2, iat=now + 2))
    response = client.call("GET", f"/projects/{sandbox.root_uid}", auth="Bearer " + fresh)
    assert response.status_code == 200


def test_rs256_and_unknown_kid_and_foreign_key_are_401(
    client: Client, sandbox: Sandbox, heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey
) -> None:
    path = f"/projects/{sandbox.root_uid}"
    rs256 = token(heimdall_key, claims(), alg="RS256")
    assert client.call("GET", path, auth="Bearer " + rs256).status_code == 401
    unknown_kid = token(heimdall_key, claims(), kid="other-kid")
    assert client.call("GET", path, auth="Bearer " + unknown_kid).status_code == 401
    foreign = token(auth0_key, claims())  # right kid, wrong key: bad signature
    assert client.call("GET", path, auth="Bearer " + foreign).status_code == 401
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": KID})
    assert client.call("GET", path, auth="Bearer " + unsigned).status_code == 401


def test_committee_service_wants_its_own_audience(client: Client, sandbox: Sandbox) -> None:
    project = client.create_project()
    committee = client.create_committee(project["uid"])
    wrong = token(client.key, claims(PROJECTS_AUD))
    response = client.call("GET", f"/committees/{committee['uid']}", auth="Bearer " + wrong)
    assert response.status_code == 401


# -- projects -----------------------------------------------------------------


def test_create_get_update_delete_project(client: Client, sandbox: Sandbox) -> None:
    created = client.create_project(
        "kubernetes",
        stage="Active",
        public=True,
        formation_date="2014-06-06",
        website_url="https://kubernetes.io",
        legal_entity_type="Subproject",
        category="Graduated",
    )
    uid = created["uid"]
    assert uuid.UUID(uid)
    assert created["created_at"]
    assert created["updated_at"]
    assert created["parent_uid"] == sandbox.root_uid

    got = client.call("GET", f"/projects/{uid}")
    assert got.status_code == 200
    etag = got.headers["ETag"]
    assert etag.strip('"').isdigit()
    assert got.json() == created

    body = client.project_body("kubernetes", description="Container orchestration.")
    updated = client.call("PUT", f"/projects/{uid}", body, headers={"If-Match": etag})
    assert updated.status_code == 200, updated.text
    assert updated.json()["description"] == "Container orchestration."
    # A PUT replaces the base: fields not sent are gone.
    assert "stage" not in updated.json()
    assert updated.json()["created_at"] == created["created_at"]
    new_etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
    assert int(new_etag.strip('"')) > int(etag.strip('"'))

    stale = client.call("DELETE", f"/projects/{uid}", headers={"If-Match": etag})
    assert (stale.status_code, stale.json()["message"]) == (400, "revision mismatch")
    refused = client.call("DELETE", f"/projects/{uid}", headers={"If-Match": new_etag})
    assert refused.status_code == 400
    assert "funding model is Crowdfunding" in refused.json()["message"]
    crowdfunded = {**body, "funding_model": ["Crowdfunding"]}
    assert client.call(
        "PUT", f"/projects/{uid}", crowdfunded, headers={"If-Match": new_etag}
    ).json()["funding_model"] == ["Crowdfunding"]
    new_etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
    deleted = client.call("DELETE", f"/projects/{uid}", headers={"If-Match": new_etag})
    assert deleted.status_code == 204
    assert client.call("GET", f"/projects/{uid}").status_code == 404


def test_if_match_with_or_without_quotes(client: Client) -> None:
    uid = client.create_project()["uid"]
    etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
    bare = etag.strip('"')
    body = client.project_body(description="one")
    assert (
        client.call("PUT", f"/projects/{uid}", body, headers={"If-Match": bare}).status_code == 200
    )
    etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
    body = client.project_body(description="two")
    assert (
        client.call("PUT", f"/projects/{uid}", body, headers={"If-Match": etag}).status_code == 200
    )


@pytest.mark.parametrize("status", [400, 409, 412])
def test_stale_or_missing_revision_on_project_put(
    heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey, status: int
) -> None:
    with make_sandbox(heimdall_key, auth0_key, stale_revision_status=status) as sb:
        client = Client(sb, heimdall_key)
        uid = client.create_project()["uid"]
        etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
        body = client.project_body(description="changed")
        stale = str(int(etag.strip('"')) - 1)
        for headers in ({"If-Match": stale}, {}):
            response = client.call("PUT", f"/projects/{uid}", body, headers=headers)
            assert response.status_code == status, headers
            if status == 400:
                assert "revision mismatch" in response.text
        assert sb.projects[uid]["description"] == "The kubernetes project."


def test_last_write_records_principal_and_on_behalf_of(client: Client, sandbox: Sandbox) -> None:
    uid = client.create_project()["uid"]
    assert sandbox.projects[uid]["_last_write"] == {
        "principal": "v1_sync_helper@clients",
        "sub": "v1_sync_helper",
        "email": None,
        "on_behalf_of": None,
        "method": "POST",
    }
    etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
    user_token = token(
        client.key, claims(PROJECTS_AUD, principal="jdoe", sub="jdoe", email="jdoe@example.org")
    )
    response = client.call(
        "PUT",
        f"/projects/{uid}",
        client.project_body(description="by jdoe"),
        auth="Bearer " + user_token,
        headers={"If-Match": etag, "X-On-Behalf-Of": "jdoe"},
    )
    assert response.status_code == 200
    stored = sandbox.projects[uid]
    assert stored["_last_write"] == {
        "principal": "jdoe",
        "sub": "jdoe",
        "email": "jdoe@example.org",
        "on_behalf_of": "jdoe",
        "method": "PUT",
    }
    assert stored["_revision"] == int(etag.strip('"')) + 1


def test_duplicate_slug_is_409_on_post_and_on_put(client: Client) -> None:
    client.create_project("kubernetes")
    other = client.create_project("prometheus")
    assert client.call("POST", "/projects", client.project_body("kubernetes")).status_code == 409
    etag = client.call("GET", f"/projects/{other['uid']}").headers["ETag"]
    response = client.call(
        "PUT",
        f"/projects/{other['uid']}",
        client.project_body("kubernetes"),
        headers={"If-Match": etag},
    )
    assert response.status_code == 409


def test_parent_must_exist(client: Client, sandbox: Sandbox) -> None:
    response = client.call("POST", "/projects", client.project_body(parent_uid=str(uuid.uuid4())))
    assert response.status_code == 400
    assert "parent_uid" in response.json()["message"]
    parent = client.create_project("cncf")
    child = client.create_project("kubernetes", parent_uid=parent["uid"])
    assert sandbox.projects[child["uid"]]["parent_uid"] == parent["uid"]
    legal = client.call(
        "POST", "/projects", client.project_body("helm", legal_parent_uid=str(uuid.uuid4()))
    )
    assert legal.status_code == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ...),
        ("slug", ...),
        ("description", ...),
        ("parent_uid", ...),
        ("description", None),
        ("name", 42),
        ("slug", "Kubernetes"),
        ("slug", "k"),
        ("slug", "kube-"),
        ("slug", "9lives"),
        ("slug", "kube rnetes"),
        ("parent_uid", "not-a-uuid"),
        ("public", "true"),
        ("is_foundation", 1),
        ("autojoin_enabled", "yes"),
        ("formation_date", "2014-06-06T00:00:00+00:00"),
        ("formation_date", "2014-13-01"),
        ("announcement_date", "06/06/2014"),
        ("entity_dissolution_date", "2014-02-30"),
        ("website_url", "kubernetes.io"),
        ("website_url", " https://kubernetes.io"),
        ("logo_url", "nil"),
        ("repository_url", "https://"),
        ("charter_url", "https://exa mple.org/charter"),
        ("entity_formation_document_url", ""),
        ("stage", "Incubating"),
        ("legal_entity_type", "LLC"),
        ("category", "Graduate"),
        ("mission_statement", ["a"]),
        ("uid", "2a4ab6c5-867f-4e83-b6d2-7ac951c19adb"),
        ("created_at", "2025-01-01T00:00:00Z"),
        ("updated_at", "2025-01-01T00:00:00Z"),
        ("color", "blue"),
    ],
)
def test_project_validation_rule_is_400(client: Client, field: str, value: Any) -> None:
    body = client.project_body()
    if value is ...:
        del body[field]
    else:
        body[field] = value
    response = client.call("POST", "/projects", body)
    assert response.status_code == 400, (field, value, response.text)
    assert field in response.json()["message"]


def test_every_enum_value_and_optional_field_is_accepted(client: Client) -> None:
    from sandbox.validation import LEGAL_ENTITY_TYPES, PROJECT_CATEGORIES, PROJECT_STAGES

    for index, stage in enumerate(PROJECT_STAGES):
        client.create_project(f"stage-{index}x", stage=stage, entity_dissolution_date="2024-05-01")
    for index, kind in enumerate(LEGAL_ENTITY_TYPES):
        client.create_project(f"type-{index}x", legal_entity_type=kind)
    for index, category in enumerate(PROJECT_CATEGORIES):
        client.create_project(f"category-{index}x", category=category)
    client.create_project(
        "everything",
        legal_entity_name="Everything LLC",
        mission_statement="All of it.",
        public=False,
        is_foundation=True,
        autojoin_enabled=False,
        formation_date="2020-02-29",
        entity_dissolution_date="2030-01-01",
        announcement_date="2020-03-01",
        logo_url="https://example.org/logo.svg",
        repository_url="https://github.com/example",
        website_url="http://example.org/",
        charter_url="https://example.org/charter.pdf",
        entity_formation_document_url="https://example.org/formation.pdf",
        legal_parent_uid=client.sb.root_uid,
        stage=None,  # null means absent
    )


def test_project_body_must_be_a_json_object(client: Client, sandbox: Sandbox) -> None:
    assert client.call("POST", "/projects", ["a list"]).status_code == 400
    raw = client.session.post(
        sandbox.url + "/projects?v=1",
        data=b"{not json",
        headers={"Authorization": "Bearer " + token(client.key, claims())},
        timeout=10,
    )
    assert raw.status_code == 400


def test_version_parameter_is_mandatory(client: Client, sandbox: Sandbox) -> None:
    assert client.call("GET", f"/projects/{sandbox.root_uid}", version=None).status_code == 400
    assert client.call("GET", f"/projects/{sandbox.root_uid}", version="2").status_code == 400
    project = client.create_project()
    committee = client.create_committee(project["uid"])
    members = f"/committees/{committee['uid']}/members"
    body = {"email": "jane@example.org"}
    assert client.call("POST", members, body, version=None).status_code == 400
    assert client.call("POST", members, body).status_code == 201


def test_unknown_uids_are_404_and_malformed_uids_400(client: Client) -> None:
    unknown = str(uuid.uuid4())
    assert client.call("GET", f"/projects/{unknown}").status_code == 404
    body = client.project_body()
    assert (
        client.call("PUT", f"/projects/{unknown}", body, headers={"If-Match": "1"}).status_code
        == 404
    )
    assert (
        client.call("DELETE", f"/projects/{unknown}", headers={"If-Match": "1"}).status_code == 404
    )
    assert client.call("GET", f"/committees/{unknown}").status_code == 404
    assert client.call("GET", "/projects/not-a-uuid").status_code == 400
    assert client.call("GET", "/nothing-here").status_code == 404


def test_project_delete_needs_if_match(client: Client) -> None:
    uid = client.create_project()["uid"]
    assert client.call("DELETE", f"/projects/{uid}").status_code == 400
    assert client.call("DELETE", f"/projects/{uid}", headers={"If-Match": "abc"}).status_code == 400


# -- committees ---------------------------------------------------------------


def test_committee_life_cycle_and_read_only_fields(client: Client, sandbox: Sandbox) -> None:
    project = client.create_project("kubernetes")
    created = client.create_committee(
        project["uid"],
        name="Steering Committee",
        display_name="Kubernetes Steering",
        description="Governs the project.",
        enable_voting=True,
        public=True,
        sso_group_enabled=True,
        requires_review=False,
        business_email_required=False,
        website="https://github.com/kubernetes/steering",
    )
    uid = created["uid"]
    assert created["project_name"] == "Kubernetes"
    assert created["total_members"] == 0
    assert created["sso_group_name"] == "kubernetes-steering-committee"

    got = client.call("GET", f"/committees/{uid}")
    etag = got.headers["ETag"]
    base = {
        k: v
        for k, v in got.json().items()
        if k not in {"uid", "sso_group_name", "project_name", "total_members"}
    }
    base["description"] = "Steers."
    assert client.call("PUT", f"/committees/{uid}", base).status_code == 400  # no If-Match
    echoed = dict(got.json())
    assert (
        client.call("PUT", f"/committees/{uid}", echoed, headers={"If-Match": etag}).status_code
        == 400
    )
    response = client.call("PUT", f"/committees/{uid}", base, headers={"If-Match": etag})
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "Steers."
    assert (
        client.call("PUT", f"/committees/{uid}", base, headers={"If-Match": etag}).status_code
        == 409
    )

    member = client.call(
        "POST",
        f"/committees/{uid}/members",
        {"email": "jane@example.org", "organization": {"id": "0014100000Te2ovAAB"}},
    )
    assert member.status_code == 201
    assert client.call("GET", f"/committees/{uid}").json()["total_members"] == 1
    assert sandbox.committees[uid]["total_members"] == 1

    etag = client.call("GET", f"/committees/{uid}").headers["ETag"]
    assert client.call("DELETE", f"/committees/{uid}").status_code == 400
    assert (
        client.call("DELETE", f"/committees/{uid}", headers={"If-Match": etag}).status_code == 204
    )
    assert sandbox.committees == {}
    assert sandbox.members == {}


def test_committee_with_unknown_project_is_404(client: Client) -> None:
    body = client.committee_body(str(uuid.uuid4()))
    assert client.call("POST", "/committees", body).status_code == 404


def test_committee_name_is_unique_within_a_project(client: Client) -> None:
    first = client.create_project("kubernetes")
    second = client.create_project("prometheus")
    client.create_committee(first["uid"], name="Governing Board", category="Board")
    client.create_committee(second["uid"], name="Governing Board", category="Board")
    duplicate = client.committee_body(first["uid"], name="Governing Board", category="Board")
    assert client.call("POST", "/committees", duplicate).status_code == 409


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ...),
        ("category", ...),
        ("project_uid", ...),
        ("name", "x" * 101),
        ("display_name", "x" * 101),
        ("description", "x" * 2001),
        ("category", "Technical Advisory Council"),
        ("project_uid", "abc"),
        ("parent_uid", "abc"),
        ("enable_voting", "true"),
        ("public", 0),
        ("sso_group_enabled", None),  # a JSON null means absent: accepted
        ("website", "lists.example.org/g/tsc"),
        ("uid", "2a4ab6c5-867f-4e83-b6d2-7ac951c19adb"),
        ("sso_group_name", "x"),
        ("project_name", "x"),
        ("total_members", 0),
        ("is_audit", True),
        ("type", "Board"),
    ],
)
def test_committee_validation_rule_is_400(client: Client, field: str, value: Any) -> None:
    project = client.create_project()
    body = client.committee_body(project["uid"])
    if value is ...:
        del body[field]
    else:
        body[field] = value
    response = client.call("POST", "/committees", body)
    if value is None:
        assert response.status_code == 201
        return
    assert response.status_code == 400, (field, value, response.text)
    assert field in response.json()["message"]


def test_committee_lengths_at_the_limit_are_accepted(client: Client) -> None:
    project = client.create_project()
    client.create_committee(
        project["uid"], name="n" * 100, display_name="d" * 100, description="é" * 2000
    )


def test_member_rules(client: Client) -> None:
    project = client.create_project()
    committee = client.create_committee(project["uid"])
    path = f"/committees/{committee['uid']}/members"
    assert client.call("POST", path, {"username": "jane"}).status_code == 400  # email required
    assert client.call("POST", path, {"email": "not-an-email"}).status_code == 400
    bad_role = {"email": "a@example.org", "role": {"name": "Emperor"}}
    assert client.call("POST", path, bad_role).status_code == 400
    body = {
        "email": "jane@example.org",
        "username": "jane",
        "role": {"name": "Chair", "start_date": "2024-01-01"},
        "voting": {"status": "Voting Rep"},
        "appointed_by": "Membership Entitlement",
        "status": "Active",
        "organization": {"name": "Example Corp", "website": "https://example.com"},
    }
    created = client.call("POST", path, body)
    assert created.status_code == 201, created.text
    member = created.json()
    assert member["committee_uid"] == committee["uid"]
    assert client.call("POST", path, {"email": "JANE@example.org"}).status_code == 409
    got = client.call("GET", f"{path}/{member['uid']}")
    assert got.status_code == 200
    etag = got.headers["ETag"]
    body["job_title"] = "CTO"
    assert client.call("PUT", f"{path}/{member['uid']}", body).status_code == 400
    assert (
        client.call("PUT", f"{path}/{member['uid']}", body, headers={"If-Match": etag}).status_code
        == 200
    )
    etag = client.call("GET", f"{path}/{member['uid']}").headers["ETag"]
    assert (
        client.call("DELETE", f"{path}/{member['uid']}", headers={"If-Match": etag}).status_code
        == 204
    )
    assert client.call("GET", f"{path}/{member['uid']}").status_code == 404


def test_member_email_uniqueness_is_per_committee_on_trimmed_lower_case(client: Client) -> None:
    project = client.create_project()
    first = client.create_committee(project["uid"])
    second = client.create_committee(project["uid"], name="Board", category="Board")
    path = f"/committees/{first['uid']}/members"
    assert client.call("POST", path, {"email": "Jane@Example.org"}).status_code == 201
    assert client.call("POST", path, {"email": "jane@example.ORG"}).status_code == 409
    other = f"/committees/{second['uid']}/members"
    assert client.call("POST", other, {"email": "jane@example.org"}).status_code == 201
    assert client.call("POST", path, {"email": "x@example.org"}, version=None).status_code == 400
    unknown = "/committees/00000000-0000-4000-8000-000000000000/members"
    assert client.call("POST", unknown, {"email": "x@example.org"}).status_code == 404
    long_name = {"email": "y@example.org", "first_name": "J" * 101}
    assert client.call("POST", path, long_name).status_code == 400
    bad_date = {"email": "y@example.org", "voting": {"start_date": "2024-02-30"}}
    assert client.call("POST", path, bad_date).status_code == 400
    assert (
        client.call(
            "POST", path, {"email": "y@example.org", "role": {"name": "Technical Lead"}}
        ).status_code
        == 201
    )


def test_skip_notification_header_is_recorded_with_the_member(
    client: Client, sandbox: Sandbox
) -> None:
    project = client.create_project()
    committee = client.create_committee(project["uid"])
    path = f"/committees/{committee['uid']}/members"
    quiet = client.call(
        "POST", path, {"email": "q@example.org"}, headers={"X-Skip-Notification": "true"}
    )
    loud = client.call("POST", path, {"email": "l@example.org"})
    members = sandbox.members
    assert members[quiet.json()["uid"]]["_skip_notification"] is True
    assert members[loud.json()["uid"]]["_skip_notification"] is False
    assert "_skip_notification" not in quiet.json()


# -- seeding, recording, faults -----------------------------------------------------


def test_seed_helpers_validate_and_attribute_to_the_sandbox(sandbox: Sandbox) -> None:
    uid = sandbox.add_project("CNCF", "cncf", stage="Active")
    committee = sandbox.add_committee(uid, "Governing Board", "Board")
    assert sandbox.projects[uid]["_last_write"]["principal"] == "sandbox@clients"
    assert sandbox.committees[committee]["project_name"] == "CNCF"
    assert sandbox.project_by_slug("cncf") is not None
    assert sandbox.project_by_slug("ROOT")["uid"] == sandbox.root_uid  # type: ignore[index]
    assert [c["uid"] for c in sandbox.committees_of(uid)] == [committee]
    assert sandbox.revision("project", uid) == sandbox.projects[uid]["_revision"]
    from sandbox.api_error import ApiError

    with pytest.raises(ApiError):
        sandbox.add_project("Bad", "Bad Slug")


def test_requests_are_recorded_and_counted(client: Client, sandbox: Sandbox) -> None:
    uid = client.create_project()["uid"]
    client.call("GET", f"/projects/{uid}", headers={"X-On-Behalf-Of": "jdoe"})
    assert sandbox.count("POST", "/projects") == 1
    assert sandbox.count("GET", "/projects/") == 1
    assert sandbox.count("*", "/projects") == 2
    recorded = sandbox.requests[-1]
    assert (recorded.method, recorded.path, recorded.query, recorded.status) == (
        "GET",
        f"/projects/{uid}",
        {"v": "1"},
        200,
    )
    assert recorded.headers["x-on-behalf-of"] == "jdoe"
    assert sandbox.requests[0].json_body["slug"] == "kubernetes"
    sandbox.reset_requests()
    assert sandbox.requests == []


def test_injected_faults_answer_first_then_normal_service(client: Client, sandbox: Sandbox) -> None:
    sandbox.inject_fault("POST", "/projects", status=503, times=2, headers={"Retry-After": "1"})
    body = client.project_body()
    first = client.call("POST", "/projects", body)
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "1"
    assert client.call("POST", "/projects", body).status_code == 503
    assert client.call("POST", "/projects", body).status_code == 201
    sandbox.inject_fault("GET", "/projects/", status=429, body="slow down")
    assert client.call("GET", f"/projects/{sandbox.root_uid}").text == "slow down"
    assert [r.status for r in sandbox.requests] == [503, 503, 201, 429]


def test_injected_delay_provokes_a_client_timeout(client: Client, sandbox: Sandbox) -> None:
    sandbox.inject_fault("GET", "/projects/", status=None, delay=1.0)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(
            f"{sandbox.url}/projects/{sandbox.root_uid}",
            params={"v": "1"},
            headers={"Authorization": "Bearer " + token(client.key, claims())},
            timeout=0.3,
        )
    assert time.monotonic() - started < 1.0
    # The fault is spent: the next call is answered at once.
    assert client.call("GET", f"/projects/{sandbox.root_uid}").status_code == 200


def test_a_bug_in_a_fake_answers_500_and_keeps_serving(
    client: Client, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(uid: str) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(sandbox._store, "get_project", broken)
    response = client.call("GET", f"/projects/{sandbox.root_uid}")
    assert response.status_code == 500
    assert response.json()["code"] == "500"
    assert client.call("POST", "/projects", client.project_body()).status_code == 201


def test_projects_of_crowdfunding_slugs_are_created_crowdfunded_and_deletable(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.add_crowdfunding_slug("crowd")
    uid = client.create_project("crowd")["uid"]
    got = client.call("GET", f"/projects/{uid}")
    assert got.json()["funding_model"] == ["Crowdfunding"]
    mixed = {**client.project_body("crowd"), "funding_model": ["Crowdfunding", "Membership"]}
    client.call("PUT", f"/projects/{uid}", mixed, headers={"If-Match": got.headers["ETag"]})
    etag = client.call("GET", f"/projects/{uid}").headers["ETag"]
    assert client.call("DELETE", f"/projects/{uid}", headers={"If-Match": etag}).status_code == 400
    bad = {**client.project_body("crowd"), "funding_model": ["Donations"]}
    assert (
        client.call("PUT", f"/projects/{uid}", bad, headers={"If-Match": etag}).status_code == 400
    )


@pytest.mark.parametrize("status", [400, 409, 412])
def test_a_stale_committee_delete_is_409_or_412(
    heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey, status: int
) -> None:
    with make_sandbox(heimdall_key, auth0_key, stale_revision_status=status) as sb:
        client = Client(sb, heimdall_key)
        project_uid = client.create_project()["uid"]
        committee = sb.add_committee(project_uid, "Board")
        path = f"/committees/{committee}"
        etag = client.call("GET", path).headers["ETag"]
        stale = str(int(etag.strip('"')) - 1)
        answer = client.call("DELETE", path, headers={"If-Match": stale})
        assert answer.status_code == (409 if status == 400 else status)
