"""The V1 write client against the sandbox's V1 committee API, with a real nats-server.

The fake enforces ``reverse-sync.md`` (Auth0 bearer, required keys, 201 for a
committee create and 200 for a member create, the contact id in a member's
URL, PascalCase keys) and writes each change into ``v1-objects`` as the
loader would, stamped ``{AUTH0_CLIENT_ID}@clients``. The client classifies
V1's answers into the project's transient and permanent errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from prometheus_client import REGISTRY
from pydantic import SecretStr

from sandbox.servers import NatsServer
from sandbox.service import Sandbox
from sandbox.traffic import RandomFaults
from sync_core.nats_client import SyncNats
from sync_core.settings import WorkerSettings
from sync_core.v1_bodies import v1_committee_body, v1_member_body
from tasks.clients.auth0 import token_source_from_settings
from tasks.clients.v1_committees import V1CommitteeWriter
from tasks.errors import PermanentError, TransientError

AUTH0_CLIENT_ID = "sync-helper-test-client"
BUCKET = "v1-objects"
PROJECT_SFID = "a0941000002wBz9AAE"
OTHER_PROJECT_SFID = "a0941000002wBz9XYZ"
CONTACT_ID = "0031000001AbCdeAAB"
ACCOUNT_ID = "0014100000Te2ovAAB"
HTTP_TIMEOUT = 2.0
COMMITTEES = f"/project-service/v2/projects/{PROJECT_SFID}/committees"


def _private(pem: str) -> RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return key


@pytest.fixture
def sandbox(buckets: NatsServer, rsa_pems: dict[str, str]) -> Iterator[Sandbox]:
    with Sandbox(
        heimdall_keys={"kid-1": _private(rsa_pems["heimdall"]).public_key()},
        auth0_clients={AUTH0_CLIENT_ID: _private(rsa_pems["auth0"]).public_key()},
        nats_url=buckets.url,
        v1_objects_bucket=BUCKET,
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


@pytest.fixture
def writer(settings: WorkerSettings) -> Iterator[V1CommitteeWriter]:
    client = V1CommitteeWriter(settings)
    yield client
    client.close()


def stored(sync_nats: SyncNats, key: str) -> dict[str, Any]:
    entry = sync_nats.kv_get(BUCKET, key)
    assert entry is not None, key
    row = json.loads(entry.value)
    assert isinstance(row, dict)
    return row


def a_committee(writer: V1CommitteeWriter, name: str = "Governing Board") -> str:
    body = v1_committee_body(
        {"name": name, "category": "Technical Advisory Committee", "mailing_list": "tac@x.org"}
    ).body
    return writer.create_committee(PROJECT_SFID, body).sfid


# --- committees ----------------------------------------------------------------------


def test_a_committee_create_is_a_201_and_lands_in_v1_objects_as_the_loader_writes(
    sandbox: Sandbox, writer: V1CommitteeWriter, sync_nats: SyncNats
) -> None:
    created = writer.create_committee(
        PROJECT_SFID,
        {"Name": "TAC", "Category": "Technical Oversight Committee/Technical Advisory Committee"},
    )
    assert created.contact_id is None
    assert created.record["Name"] == "TAC"
    assert [
        r.status for r in sandbox.requests if r.method == "POST" and "committees" in r.path
    ] == [201]
    row = stored(sync_nats, f"platform-collaboration__c.{created.sfid}")
    assert row["sfid"] == created.sfid
    assert row["mailing_list__c"] == "TAC"
    assert row["type__c"] == "Technical Oversight Committee/Technical Advisory Committee"
    assert row["project_name__c"] == PROJECT_SFID
    assert row["lastmodifiedbyid"] == f"{AUTH0_CLIENT_ID}@clients"
    assert row["isdeleted"] is False


def test_a_committee_patch_changes_only_the_keys_sent(
    writer: V1CommitteeWriter, sync_nats: SyncNats
) -> None:
    sfid = a_committee(writer)
    answer = writer.update_committee(PROJECT_SFID, sfid, {"Description": "The board."})
    assert answer["Description"] == "The board."
    row = stored(sync_nats, f"platform-collaboration__c.{sfid}")
    assert (row["description__c"], row["mailing_list__c"], row["mailing_list_email"]) == (
        "The board.",
        "Governing Board",
        "tac@x.org",
    )


def test_a_committee_delete_is_a_soft_delete_and_a_second_one_is_already_gone(
    writer: V1CommitteeWriter, sync_nats: SyncNats
) -> None:
    sfid = a_committee(writer)
    assert writer.delete_committee(PROJECT_SFID, sfid) is True
    row = stored(sync_nats, f"platform-collaboration__c.{sfid}")
    assert row["isdeleted"] is True
    assert row["_sdc_deleted_at"]
    assert row["lastmodifiedbyid"] == f"{AUTH0_CLIENT_ID}@clients"
    assert writer.delete_committee(PROJECT_SFID, sfid) is False


def test_a_committee_of_another_project_is_not_found(writer: V1CommitteeWriter) -> None:
    sfid = a_committee(writer)
    with pytest.raises(PermanentError) as caught:
        writer.update_committee(OTHER_PROJECT_SFID, sfid, {"Description": "x"})
    assert (caught.value.kind, caught.value.status) == ("v1_not_found", 404)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"Category": "Board"}, "Name is required"),
        ({"Name": "B", "name": "B"}, "unknown key 'name'"),
        ({"Name": "B", "Category": "Technical Advisory Committee"}, "not a V1 category"),
        ({"Name": "B", "SSOGroupEnabled": True}, "unknown key 'SSOGroupEnabled'"),
        ({"Name": 5}, "Name must be a string"),
    ],
)
def test_a_body_outside_the_contract_is_a_permanent_error_naming_v1s_answer(
    writer: V1CommitteeWriter, body: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        writer.create_committee(PROJECT_SFID, body)
    assert caught.value.kind == "v1_validation"
    assert complaint in (caught.value.body_excerpt or "")


# --- members ----------------------------------------------------------------------------


def test_a_member_create_is_a_200_with_its_sfid_and_contact_id(
    sandbox: Sandbox, writer: V1CommitteeWriter, sync_nats: SyncNats
) -> None:
    committee = a_committee(writer)
    body = v1_member_body(
        {
            "email": "jane@example.com",
            "first_name": "Jane",
            "role": {"name": "Chair", "start_date": "2024-01-01"},
            "voting": {"status": "Voting Rep"},
            "organization": {"id": ACCOUNT_ID},
        }
    ).body
    created = writer.create_member(PROJECT_SFID, committee, body)
    assert created.contact_id is not None
    assert len(created.contact_id) == 18
    assert [r.status for r in sandbox.requests if r.path.endswith("/members")] == [200]
    row = stored(sync_nats, f"platform-community__c.{created.sfid}")
    assert row["contact_name__c"] == created.contact_id
    assert row["contactemail__c"] == "jane@example.com"
    assert row["collaboration_name__c"] == committee
    assert row["role__c"] == "Chair"
    assert row["start_date__c"] == "2024-01-01T00:00:00+00:00"
    assert row["voting_status__c"] == "Voting Rep"
    assert row["account__c"] == ACCOUNT_ID
    assert row["lastmodifiedbyid"] == f"{AUTH0_CLIENT_ID}@clients"


def test_a_member_is_patched_and_deleted_by_its_contact_id_not_its_sfid(
    writer: V1CommitteeWriter, sync_nats: SyncNats
) -> None:
    committee = a_committee(writer)
    created = writer.create_member(
        PROJECT_SFID, committee, {"Email": "jane@example.com", "MemberID": CONTACT_ID}
    )
    assert created.contact_id == CONTACT_ID
    with pytest.raises(PermanentError) as caught:
        writer.update_member(PROJECT_SFID, committee, created.sfid, {"Title": "CTO"})
    assert caught.value.status == 404
    writer.update_member(PROJECT_SFID, committee, CONTACT_ID, {"Title": "CTO"})
    assert stored(sync_nats, f"platform-community__c.{created.sfid}")["title"] == "CTO"
    assert writer.delete_member(PROJECT_SFID, committee, CONTACT_ID) is True
    assert stored(sync_nats, f"platform-community__c.{created.sfid}")["isdeleted"] is True
    assert writer.delete_member(PROJECT_SFID, committee, CONTACT_ID) is False


def test_a_member_without_an_email_is_refused(writer: V1CommitteeWriter) -> None:
    committee = a_committee(writer)
    with pytest.raises(PermanentError) as caught:
        writer.create_member(PROJECT_SFID, committee, {"FirstName": "Jane"})
    assert "Email is required" in (caught.value.body_excerpt or "")


def test_a_member_row_the_loader_wrote_can_be_patched(
    writer: V1CommitteeWriter, sync_nats: SyncNats
) -> None:
    committee = a_committee(writer)
    record = {
        "sfid": "51fde723-67df-4e0e-91c6-936d01d59559",
        "contact_name__c": CONTACT_ID,
        "contactemail__c": "jane@example.com",
        "collaboration_name__c": committee,
        "project_name__c": PROJECT_SFID,
        "role__c": "Chair",
        "lastmodifiedbyid": "0032M00002XyZabQAB",
    }
    key = f"platform-community__c.{record['sfid']}"
    sync_nats.kv_put(BUCKET, key, json.dumps(record).encode())
    writer.update_member(PROJECT_SFID, committee, CONTACT_ID, {"Role": "Vice Chair"})
    row = stored(sync_nats, key)
    assert (row["role__c"], row["contactemail__c"]) == ("Vice Chair", "jane@example.com")
    assert row["lastmodifiedbyid"] == f"{AUTH0_CLIENT_ID}@clients"


# --- authentication and error classification ---------------------------------------------


def test_a_call_without_an_auth0_token_is_refused(sandbox: Sandbox) -> None:
    answer = requests.post(sandbox.url + COMMITTEES, json={"Name": "B"}, timeout=HTTP_TIMEOUT)
    assert answer.status_code == 401


def test_an_expired_token_is_replaced_once(sandbox: Sandbox, writer: V1CommitteeWriter) -> None:
    a_committee(writer)
    sandbox.expire_access_tokens()
    a_committee(writer, "Second")
    assert [r.status for r in sandbox.requests if r.path == COMMITTEES] == [201, 401, 201]


@pytest.mark.parametrize(("status", "kind"), [(503, "v1_5xx"), (429, "v1_rate_limited")])
def test_busy_v1_is_transient_with_its_retry_after(
    sandbox: Sandbox, writer: V1CommitteeWriter, status: int, kind: str
) -> None:
    sandbox.inject_fault("POST", COMMITTEES, status=status, headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as caught:
        a_committee(writer)
    assert (caught.value.kind, caught.value.status, caught.value.retry_after) == (kind, status, 7.0)


def test_a_lost_answer_is_transient(sandbox: Sandbox, writer: V1CommitteeWriter) -> None:
    sandbox.inject_fault("POST", COMMITTEES, status=None, drop="before")
    with pytest.raises(TransientError) as caught:
        a_committee(writer)
    assert caught.value.kind == "v1_unavailable"


def test_random_v1_faults_are_seeded_apart_from_v2s_and_a_dropped_answer_may_follow_the_write(
    sandbox: Sandbox, settings: WorkerSettings, sync_nats: SyncNats
) -> None:
    """The chaos harness's V1 faults: 503, 429 with Retry-After, answers dropped before or
    after the write, drawn from their own seed; V2 calls are left alone."""

    def run(seed: int) -> list[tuple[int, str]]:
        sandbox.reset_requests()
        sandbox.set_v1_random_faults(
            RandomFaults(unavailable=0.2, rate_limited=0.2, dropped=0.2, seed=seed)
        )
        token = token_source_from_settings(settings, requests.Session()).access_token()
        seen: list[tuple[int, str]] = []
        for index in range(40):
            name = f"Chaos {seed} {index}"
            try:
                answer = requests.post(
                    sandbox.url + COMMITTEES,
                    json={"Name": name},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=HTTP_TIMEOUT,
                )
                seen.append((answer.status_code, answer.headers.get("Retry-After", "")))
            except requests.ConnectionError:
                seen.append((0, ""))
        # V2 calls are not faulted by the V1 set: each gets the route's own answer.
        v2_answers = {
            requests.get(sandbox.url + "/projects/x", timeout=HTTP_TIMEOUT).status_code
            for _ in range(20)
        }
        assert v2_answers == {400}
        sandbox.set_v1_random_faults(None)
        return seen

    first = run(seed=5)
    assert run(seed=5) == first  # seeded: the same faults again
    statuses = {status for status, _ in first}
    assert {201, 503, 429, 0} <= statuses
    assert all(after == "1" for status, after in first if status == 429)
    # A dropped answer after the write: V1 holds more committees than the 201s it answered.
    keys = sync_nats.run(sync_nats.kv(BUCKET).keys())
    written = sum(1 for key in keys if key.startswith("platform-collaboration__c."))
    answered = sum(1 for status, _ in first if status == 201)
    assert written > 2 * answered  # both runs wrote; some without an answer
    assert sandbox.count("*", "/project-service/") == 40
    assert sandbox.count("GET", "/projects/") == 20


def test_a_create_answer_without_an_id_is_permanent_so_it_is_not_created_twice(
    sandbox: Sandbox, writer: V1CommitteeWriter
) -> None:
    sandbox.inject_fault("POST", COMMITTEES, status=201, body={"Name": "B"})
    with pytest.raises(PermanentError) as caught:
        a_committee(writer)
    assert caught.value.kind == "v1_bad_response"


def v1_calls(object_type: str, method: str, status: str) -> float:
    """How many V1 calls ``v1sync_v1_request_seconds`` has timed with these labels."""
    value = REGISTRY.get_sample_value(
        "v1sync_v1_request_seconds_count",
        {"object_type": object_type, "method": method, "status": status},
    )
    return value or 0.0


def test_every_v1_call_is_timed_by_object_type_method_and_status(
    sandbox: Sandbox, writer: V1CommitteeWriter
) -> None:
    before = {
        labels: v1_calls(*labels)
        for labels in (
            ("committee", "POST", "201"),
            ("committee", "POST", "503"),
            ("committee", "POST", "error"),
            ("committee", "DELETE", "204"),
            ("committee_member", "POST", "200"),
        )
    }
    sfid = a_committee(writer)
    writer.create_member(PROJECT_SFID, sfid, {"Email": "ada@example.org", "MemberID": CONTACT_ID})
    sandbox.inject_fault("POST", COMMITTEES, status=503)
    with pytest.raises(TransientError):
        a_committee(writer, "Busy")
    sandbox.inject_fault("POST", COMMITTEES, status=None, drop="before")
    with pytest.raises(TransientError):
        a_committee(writer, "Lost")
    writer.delete_committee(PROJECT_SFID, sfid)
    after = {labels: v1_calls(*labels) for labels in before}
    assert {labels: after[labels] - before[labels] for labels in before} == {
        ("committee", "POST", "201"): 1,
        ("committee", "POST", "503"): 1,
        ("committee", "POST", "error"): 1,
        ("committee", "DELETE", "204"): 1,
        ("committee_member", "POST", "200"): 1,
    }


def test_errors_and_logs_never_carry_the_token(
    sandbox: Sandbox,
    settings: WorkerSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = token_source_from_settings(settings, requests.Session())
    token = tokens.access_token()
    writer = V1CommitteeWriter(settings, token_source=tokens)
    sandbox.inject_fault("POST", COMMITTEES, status=400, body=f"bad token {token}")
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(PermanentError) as caught:
            a_committee(writer)
    finally:
        writer.close()
    assert token not in str(caught.value)
    assert token not in (caught.value.body_excerpt or "")
    assert "<redacted>" in (caught.value.body_excerpt or "")
    assert token not in caplog.text
    assert token not in repr(writer)
