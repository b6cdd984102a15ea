"""The sandbox's V2 query service, committee uniqueness, and its lost-answer and random faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox.service import Sandbox
from sandbox.traffic import RandomFaults
from tasks.clients.identity import Identity
from tasks.clients.query_service import exact_committee, find_committee
from tasks.clients.tokens import TokenMinter
from tests.test_sandbox_v2 import KID, Client, claims, make_sandbox, token

QUERY_AUD = "lfx-v2-query-service"
MACHINE = Identity(principal="v1_sync_helper@clients", sub="v1_sync_helper")


@pytest.fixture
def sandbox(heimdall_key: RSAPrivateKey, auth0_key: RSAPrivateKey) -> Iterator[Sandbox]:
    with make_sandbox(heimdall_key, auth0_key) as running:
        yield running


@pytest.fixture
def client(sandbox: Sandbox, heimdall_key: RSAPrivateKey) -> Client:
    return Client(sandbox, heimdall_key)


def query(
    client: Client, params: dict[str, str], audience: str = QUERY_AUD, version: str | None = "1"
) -> requests.Response:
    headers = {"Authorization": "Bearer " + token(client.key, claims(audience))}
    all_params = {**({"v": version} if version else {}), **params}
    return client.session.get(
        client.sb.url + "/query/resources", params=all_params, headers=headers, timeout=10
    )


def names(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["data"]["name"] for r in response.json()["resources"]]


def test_the_query_service_checks_version_audience_and_type(client: Client) -> None:
    params = {"type": "committee"}
    assert query(client, params, version=None).status_code == 400
    assert query(client, params, audience="lfx-v2-committee-service").status_code == 401
    assert query(client, {"type": "nothing"}).status_code == 400
    assert query(client, {"type": "committee", "parent": "committee:x"}).status_code == 400
    assert query(client, params).status_code == 200


def test_name_matches_by_words_like_a_typeahead_within_the_parent(client: Client) -> None:
    project = client.create_project("kubernetes")["uid"]
    other = client.create_project("prometheus")["uid"]
    for name in ("Governing Board", "Board of Advisors", "Technical Steering Committee"):
        client.create_committee(project, name=name, category="Board")
    client.create_committee(other, name="Governing Board", category="Board")
    parent = {"type": "committee", "parent": f"project:{project}"}
    assert names(query(client, {**parent, "name": "board"})) == [
        "Board of Advisors",
        "Governing Board",
    ]
    assert names(query(client, {**parent, "name": "Gov Bo"})) == ["Governing Board"]
    assert names(query(client, {**parent, "name": "Steering Board"})) == []
    everywhere = query(client, {"type": "committee", "name": "Governing Board"})
    assert len(names(everywhere)) == 2
    resource = everywhere.json()["resources"][0]
    assert resource["type"] == "committee"
    assert resource["id"] == resource["data"]["uid"]


def test_a_new_committee_is_listed_only_after_the_index_delay(
    client: Client, sandbox: Sandbox
) -> None:
    project = client.create_project("kubernetes")["uid"]
    sandbox.set_query_index_delay(0.5)
    client.create_committee(project, name="Governing Board", category="Board")
    params = {"type": "committee", "parent": f"project:{project}", "name": "Governing Board"}
    assert names(query(client, params)) == []
    deadline = time.monotonic() + 5
    while not names(query(client, params)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert names(query(client, params)) == ["Governing Board"]


def test_renaming_a_committee_onto_an_existing_name_is_409(client: Client) -> None:
    project = client.create_project("kubernetes")["uid"]
    client.create_committee(project, name="Governing Board", category="Board")
    second = client.create_committee(project, name="Marketing", category="Other")
    got = client.call("GET", f"/committees/{second['uid']}")
    body = client.committee_body(project, name="Governing Board", category="Other")
    renamed = client.call(
        "PUT", f"/committees/{second['uid']}", body, headers={"If-Match": got.headers["ETag"]}
    )
    assert renamed.status_code == 409
    body["name"] = "Marketing Committee"
    renamed = client.call(
        "PUT", f"/committees/{second['uid']}", body, headers={"If-Match": got.headers["ETag"]}
    )
    assert renamed.status_code == 200


def test_a_drop_after_the_work_creates_and_loses_the_answer(
    client: Client, sandbox: Sandbox
) -> None:
    project = client.create_project("kubernetes")["uid"]
    sandbox.inject_fault("POST", "/committees", drop="after")
    with pytest.raises(requests.ConnectionError):
        client.call("POST", "/committees", client.committee_body(project))
    assert len(sandbox.committees_of(project)) == 1
    sandbox.inject_fault("POST", "/committees", drop="before")
    with pytest.raises(requests.ConnectionError):
        client.call("POST", "/committees", client.committee_body(project, name="Other"))
    assert len(sandbox.committees_of(project)) == 1
    again = client.call("POST", "/committees", client.committee_body(project))
    assert again.status_code == 409


def test_random_faults_follow_their_rates_and_seed(client: Client, sandbox: Sandbox) -> None:
    def statuses(seed: int) -> list[int | str]:
        sandbox.set_random_faults(
            RandomFaults(unavailable=0.2, rate_limited=0.1, dropped=0.05, seed=seed)
        )
        seen: list[int | str] = []
        for _ in range(300):
            try:
                seen.append(client.call("GET", f"/projects/{sandbox.root_uid}").status_code)
            except requests.ConnectionError:
                seen.append("dropped")
        sandbox.set_random_faults(None)
        return seen

    first = statuses(7)
    assert first == statuses(7)
    assert 30 <= first.count(503) <= 90
    assert 10 <= first.count(429) <= 60
    assert 3 <= first.count("dropped") <= 35
    assert client.call("GET", f"/projects/{sandbox.root_uid}").status_code == 200


def test_find_committee_keeps_only_the_exact_name_of_the_project(
    client: Client, sandbox: Sandbox, heimdall_key: RSAPrivateKey
) -> None:
    from tasks.clients.query_service import QUERY_COLLECTION
    from tasks.clients.v2 import V2Service

    project = client.create_project("kubernetes")["uid"]
    other = client.create_project("prometheus")["uid"]
    client.create_committee(project, name="Governing Board Subcommittee", category="Board")
    client.create_committee(other, name="Governing Board", category="Board")
    minter = TokenMinter(heimdall_key, key_id=KID, jwks_url=sandbox.url + "/.well-known/jwks")
    service = V2Service(sandbox.url, QUERY_COLLECTION, QUERY_AUD, minter, service="query")
    try:
        assert find_committee(service, project, "Governing Board", MACHINE) is None
        wanted = client.create_committee(project, name="Governing Board", category="Board")
        assert find_committee(service, project, "Governing Board", MACHINE) == wanted["uid"]
    finally:
        service.close()


def test_exact_committee_ignores_near_misses() -> None:
    resources: list[Any] = [
        {"type": "committee", "id": "a", "data": {"uid": "a", "name": "Board", "project_uid": "q"}},
        {"type": "project", "id": "b", "data": {"uid": "b", "name": "Board", "project_uid": "p"}},
        {"type": "committee", "id": "c", "data": {"uid": "c", "name": "board", "project_uid": "p"}},
        "junk",
        {"type": "committee", "id": "d", "data": {"uid": "d", "name": "Board", "project_uid": "p"}},
    ]
    assert exact_committee(resources, "p", "Board") == "d"
    assert exact_committee(resources[:4], "p", "Board") is None
