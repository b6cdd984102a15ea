"""The fakes enforce the contract of issue 23: settings resources (ETag, If-Match,
full replace, user objects rewritten from the directory), today's committee
categories, the Archived rule and the member rules of voting and business-e-mail
committees.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox.service import Sandbox
from tests.test_sandbox_v2 import Client, make_sandbox

JDOE = {
    "ID": "0032M00002XyZabQAB",
    "Username": "jdoe",
    "Email": "jdoe@example.org",
    "FirstName": "Jane",
    "LastName": "Doe",
}
ORG = {"id": "0014100000Te2ovAAB"}


@pytest.fixture
def client(heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey) -> Iterator[Client]:
    sandbox: Sandbox = make_sandbox(heimdall_key, auth0_key, users={JDOE["ID"]: JDOE})
    sandbox.start()
    try:
        yield Client(sandbox, heimdall_key)
    finally:
        sandbox.stop()


def user(email: str, **fields: str) -> dict[str, str]:
    return {"name": "", "email": email, "username": "", "avatar": "", **fields}


def test_a_create_carries_the_settings_and_the_server_rewrites_users(client: Client) -> None:
    project = client.create_project(
        "kubernetes",
        mission_statement="Containers.",
        executive_director=user("JDOE@example.org", name="J", avatar="https://a.example.org/j"),
        program_manager=user("nobody@example.org", name="No Body", avatar="https://a.b.org/x"),
    )
    assert "mission_statement" not in project  # the answer is the base
    got = client.call("GET", f"/projects/{project['uid']}/settings")
    assert got.status_code == 200
    assert got.headers["ETag"]
    settings = got.json()
    assert settings["mission_statement"] == "Containers."
    assert settings["executive_director"]["name"] == "Jane Doe"
    assert settings["executive_director"]["username"] == "jdoe"
    assert settings["executive_director"]["avatar"] != "https://a.example.org/j"
    assert settings["program_manager"]["name"] == "No Body"  # unknown: kept, avatar dropped
    assert settings["program_manager"]["avatar"] == ""


def test_settings_put_needs_a_current_if_match_and_replaces_everything(client: Client) -> None:
    uid = client.create_project("kubernetes", mission_statement="One.")["uid"]
    path = f"/projects/{uid}/settings"
    etag = client.call("GET", path).headers["ETag"]
    body = {"writers": [user("w@example.org")]}
    assert client.call("PUT", path, body).status_code == 400  # no If-Match
    assert client.call("PUT", path, body, headers={"If-Match": etag}).status_code == 200
    assert client.call("PUT", path, body, headers={"If-Match": etag}).status_code == 409
    stored = client.call("GET", path).json()
    assert "mission_statement" not in stored  # full replace: left out is cleared
    assert stored["writers"][0]["email"] == "w@example.org"
    etag = client.call("GET", path).headers["ETag"]
    invite = {"writers": [{**user("w@example.org"), "invite": {"status": "sent"}}]}
    refused = client.call("PUT", path, invite, headers={"If-Match": etag})
    assert refused.status_code == 400
    assert "invite is read-only" in refused.json()["message"]


def test_committee_settings_require_business_email_required(client: Client) -> None:
    project = client.create_project("kubernetes")["uid"]
    committee = client.call(
        "POST",
        "/committees",
        client.committee_body(project, business_email_required=True),
    ).json()["uid"]
    path = f"/committees/{committee}/settings"
    got = client.call("GET", path)
    assert got.json()["business_email_required"] is True
    etag = got.headers["ETag"]
    missing = client.call("PUT", path, {"member_visibility": "hidden"}, headers={"If-Match": etag})
    assert missing.status_code == 400
    assert "business_email_required is missing" in missing.json()["message"]


@pytest.mark.parametrize(
    ("category", "status"),
    [
        ("Technical Oversight Committee", 201),
        ("Technical Advisory Committee", 201),
        ("Newsletter", 201),
        ("Technical Oversight Committee/Technical Advisory Committee", 400),
    ],
)
def test_committee_categories_of_today(client: Client, category: str, status: int) -> None:
    project = client.create_project("kubernetes")["uid"]
    body = client.committee_body(project, category=category)
    assert client.call("POST", "/committees", body).status_code == status


def test_archived_needs_a_dissolution_date(client: Client) -> None:
    refused = client.call("POST", "/projects", client.project_body("old", stage="Archived"))
    assert refused.status_code == 400
    assert "entity_dissolution_date" in refused.json()["message"]
    client.create_project("old", stage="Archived", entity_dissolution_date="2024-01-31")


def test_member_rules_of_voting_and_business_email_committees(client: Client) -> None:
    project = client.create_project("kubernetes")["uid"]
    voting = client.call(
        "POST", "/committees", client.committee_body(project, name="Board", enable_voting=True)
    ).json()["uid"]
    business = client.call(
        "POST",
        "/committees",
        client.committee_body(project, name="Legal", business_email_required=True),
    ).json()["uid"]
    plain = client.call("POST", "/committees", client.committee_body(project, name="Plain"))
    members = f"/committees/{voting}/members"
    none_vote = {"email": "a@example.org", "organization": ORG, "voting": {"status": "None"}}
    refused = client.call("POST", members, none_vote)
    assert refused.status_code == 400
    assert 'voting_status "None" is not allowed' in refused.json()["message"]
    assert client.call("POST", members, {"email": "b@example.org"}).status_code == 400
    named = {"id": "", "name": "Example", "website": "https://example.org"}
    assert (
        client.call("POST", members, {"email": "c@example.org", "organization": named}).status_code
        == 201
    )
    assert (
        client.call(
            "POST", f"/committees/{business}/members", {"email": "d@example.org"}
        ).status_code
        == 400
    )
    plain_members = f"/committees/{plain.json()['uid']}/members"
    created = client.call("POST", plain_members, {**none_vote, "organization": None})
    assert created.status_code == 201


def test_voting_none_is_kept_on_update_when_the_member_has_it_already(client: Client) -> None:
    project = client.create_project("kubernetes")["uid"]
    committee = client.call(
        "POST", "/committees", client.committee_body(project, name="Board")
    ).json()
    uid = committee["uid"]
    body = {"email": "a@example.org", "organization": ORG, "voting": {"status": "None"}}
    member = client.call("POST", f"/committees/{uid}/members", body).json()["uid"]
    got = client.call("GET", f"/committees/{uid}")
    writable = {
        k: v
        for k, v in got.json().items()
        if k not in {"uid", "sso_group_name", "project_name", "total_members"}
    }
    turned_on = {**writable, "enable_voting": True}
    etag = got.headers["ETag"]
    assert client.call("PUT", f"/committees/{uid}", turned_on, headers={"If-Match": etag}).ok
    path = f"/committees/{uid}/members/{member}"
    etag = client.call("GET", path).headers["ETag"]
    assert client.call("PUT", path, body, headers={"If-Match": etag}).status_code == 200
    other = client.call(
        "POST",
        f"/committees/{uid}/members",
        {**body, "email": "b@example.org", "voting": {"status": "Voting Rep"}},
    ).json()["uid"]
    path = f"/committees/{uid}/members/{other}"
    etag = client.call("GET", path).headers["ETag"]
    refused = client.call(
        "PUT", path, {**body, "email": "b@example.org"}, headers={"If-Match": etag}
    )
    assert refused.status_code == 400
