"""The sample data set is what issues 6 and 14 ask for, consistent, and checkable.

Also proves ``sandbox.sample_check.differences``: a sandbox filled with exactly
the expected objects (through the fake's HTTP API, as the expected writers),
then with the expected deletes made (as the expected deleters), shows no
difference, and each kind of mistake is reported.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import jwt
import msgpack
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox import sample_builder
from sandbox.sample_check import TOMBSTONE, differences, expected_mappings
from sandbox.samples import (
    SAMPLE_DIR,
    SampleRecord,
    crowdfunding_slugs,
    dead_letter_reasons,
    delete_accepted,
    encode,
    expected_deleter,
    expected_writer,
    load_expected,
    load_phases,
    load_records,
    load_users,
    stays_in_v2,
)
from sandbox.service import Sandbox
from sandbox.validation import (
    MEMBER_ROLES,
    is_email,
    is_uuid,
    validate_committee,
    validate_member,
    validate_project,
)

PROJECT = "salesforce-project__c."
COMMITTEE = "platform-collaboration__c."
MEMBER = "platform-community__c."
SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{18}$")
KID = "heimdall-test"


@pytest.fixture(scope="module")
def records() -> list[SampleRecord]:
    return load_records()


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return load_expected()


def latest(records: list[SampleRecord]) -> dict[str, SampleRecord]:
    """The last put of each key (what the bucket holds after the load)."""
    return {record.key: record for record in records}


def salesforce_checksum_ok(sfid: str) -> bool:
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(sfid[chunk * 5 : chunk * 5 + 5]) if ch.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return sfid[15:] == suffix


def test_committed_files_are_what_the_builder_writes() -> None:
    for name, content in sample_builder.render().items():
        assert (SAMPLE_DIR / name).read_text(encoding="utf-8") == content, (
            f"{name} differs: run `python -m sandbox.sample_builder` and commit"
        )


def test_sizes_and_three_level_hierarchy(
    records: list[SampleRecord], expected: dict[str, Any]
) -> None:
    keys = expected["keys"]
    projects = {v["sfid"]: v for v in keys.values() if v.get("type") == "project"}
    committees = [v for v in keys.values() if v.get("type") == "committee"]
    assert len(projects) >= 30
    assert len(committees) >= 60
    depth: dict[str, int] = {}

    def level(sfid: str) -> int:
        parent = projects[sfid]["parent_sfid"]
        depth[sfid] = 1 if parent is None else 1 + level(parent)
        return depth[sfid]

    levels = Counter(level(sfid) for sfid in projects)
    assert set(levels) == {1, 2, 3}
    assert levels[1] >= 5
    assert levels[3] >= 5
    counts = expected["counts"]
    assert counts["projects"] == len(projects)
    assert counts["committees"] == len(committees)
    assert counts["puts"] == len(records)
    assert counts["keys"] == len(keys) == len(latest(records))
    assert set(keys) == {r.key for r in records}


def test_every_parent_and_project_of_a_synced_object_is_synced(expected: dict[str, Any]) -> None:
    keys = expected["keys"]
    synced_projects = {v["sfid"] for v in keys.values() if v.get("type") == "project"}
    for key, value in keys.items():
        if value.get("type") == "project" and value["parent_sfid"] is not None:
            assert value["parent_sfid"] in synced_projects, key
        if value.get("type") == "committee":
            assert value["project_sfid"] in synced_projects, key


def test_some_children_come_before_their_parents(records: list[SampleRecord]) -> None:
    first_put: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.key.startswith(PROJECT) and isinstance(record.value, dict):
            first_put.setdefault(str(record.value.get("sfid")), index)
    early_children = 0
    for record in records:
        if record.key.startswith(PROJECT) and isinstance(record.value, dict):
            parent = record.value.get("parent_project__c")
            if parent in first_put and first_put[parent] > first_put[record.value["sfid"]]:
                early_children += 1
    assert early_children >= 5
    committee_first = next(i for i, r in enumerate(records) if r.key.startswith(COMMITTEE))
    project_first = next(i for i, r in enumerate(records) if r.key.startswith(PROJECT))
    assert committee_first < project_first


def test_json_and_msgpack_round_trip_and_both_occur(records: list[SampleRecord]) -> None:
    encodings = Counter(record.encoding for record in records)
    assert encodings["json"] >= 30
    assert encodings["msgpack"] >= 30
    assert encodings["raw"] >= 1
    assert encodings["empty"] == 1
    for record in records:
        if record.is_delete:
            assert record.encoding is None
            assert record.value is None
            continue
        data = encode(record)
        if record.encoding == "json":
            assert json.loads(data) == record.value
        elif record.encoding == "msgpack":
            assert msgpack.unpackb(data, raw=False) == record.value
            with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
                json.loads(data)
        elif record.encoding == "empty":
            assert data == b""


def test_both_field_name_styles_and_every_date_shape(records: list[SampleRecord]) -> None:
    projects = [r.value for r in records if r.key.startswith(PROJECT) and isinstance(r.value, dict)]
    documented = [p for p in projects if "stage__c" in p]
    real = [p for p in projects if "project_status__c" in p]
    assert len(documented) >= 10
    assert len(real) >= 10
    for name in ("formation_date__c", "website_url__c", "logo_url__c", "legal_entity_type__c"):
        assert any(name in p for p in documented), name
    for name in (
        "start_date__c",
        "website__c",
        "project_logo__c",
        "category__c",
        "repositoryurl__c",
    ):
        assert any(name in p for p in real), name
    dates = [p.get("formation_date__c") or p.get("start_date__c") for p in projects]
    assert any(str(d).endswith("+00:00") for d in dates)
    assert any(str(d).endswith("Z") for d in dates)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", str(d)) for d in dates)


def test_ids_have_the_right_shapes(records: list[SampleRecord]) -> None:
    for record in records:
        if not isinstance(record.value, dict) or "sfid" not in record.value:
            continue
        assert record.record_id == record.value["sfid"], record.key
        if record.key.startswith(PROJECT):
            assert SALESFORCE_ID.match(record.record_id), record.key
            assert salesforce_checksum_ok(record.record_id), record.key
        elif record.key.startswith(COMMITTEE):
            assert is_uuid(record.record_id), record.key


def test_modifiers_cover_users_machines_and_empty(
    records: list[SampleRecord], expected: dict[str, Any]
) -> None:
    users = load_users()
    assert len(users) >= 3
    for platform_id, user in users.items():
        assert user["ID"] == platform_id
        assert set(user) == {"ID", "Username", "Email", "FirstName", "LastName"}
    modifiers = [r.value.get("lastmodifiedbyid") for r in records if isinstance(r.value, dict)]
    assert any(m in users for m in modifiers)
    assert any(isinstance(m, str) and m.endswith("@clients") for m in modifiers)
    assert "" in modifiers
    assert None in modifiers
    assert any(isinstance(m, str) and SALESFORCE_ID.match(m) and m not in users for m in modifiers)
    kinds = Counter(v["writer"]["kind"] for v in expected["keys"].values() if "writer" in v)
    assert set(kinds) == {"user", "machine", "fallback"}


def test_malformed_records_are_really_malformed(
    records: list[SampleRecord], expected: dict[str, Any]
) -> None:
    reasons = dead_letter_reasons(expected)
    assert Counter(reasons.values()) == {
        "undecodable": 2,
        "invalid_record": 5,  # a project without sfid; four members without a usable email
        "missing_parent": 1,
        "missing_project": 1,
        "missing_committee": 2,
        "delete_refused": 2,  # deletes of projects that are not crowdfunded
        "member_needs_organization": 1,  # no organization on a voting committee
    }
    all_committee_sfids = {
        r.value.get("sfid")
        for r in records
        if r.key.startswith(COMMITTEE) and isinstance(r.value, dict)
    }
    by_key = latest(records)
    all_project_sfids = {
        r.value.get("sfid")
        for r in records
        if r.key.startswith(PROJECT) and isinstance(r.value, dict)
    }
    for key, reason in reasons.items():
        record = by_key[key]
        if reason == "delete_refused":
            continue  # a delete, not a malformed record: see the delete tests
        data = encode(record)
        if reason == "undecodable":
            with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
                json.loads(data)
            with pytest.raises((ValueError, msgpack.ExtraData, msgpack.FormatError)):
                msgpack.unpackb(data, raw=False)
        elif reason == "invalid_record" and record.key.startswith(MEMBER):
            email = record.value["contactemail__c"]
            assert not (isinstance(email, str) and is_email(email.strip())), key
        elif reason == "invalid_record":
            assert "sfid" not in record.value
        elif reason == "missing_parent":
            assert record.value["parent_project__c"] not in all_project_sfids
        elif reason == "missing_project":
            assert record.value["project_name__c"] not in all_project_sfids
        elif reason == "missing_committee":
            assert record.value["collaboration_name__c"] not in all_committee_sfids
        elif reason == "member_needs_organization":
            assert record.value["account__c"] is None
            committee = next(
                r.value
                for r in records
                if r.key.startswith(COMMITTEE)
                and isinstance(r.value, dict)
                and r.value.get("sfid") == record.value["collaboration_name__c"]
            )
            assert committee["enable_voting__c"] is True


def test_invalid_enum_date_and_url_values_are_dropped_not_dead_lettered(
    expected: dict[str, Any],
) -> None:
    dropped = Counter(
        name
        for value in expected["keys"].values()
        if value["outcome"] == "synced"
        for name in value["dropped"]
    )
    assert dropped["stage"] >= 1
    assert dropped["legal_entity_type"] >= 1
    assert dropped["formation_date"] >= 1
    assert dropped["website_url"] >= 1
    categories = Counter(
        v["fields"]["category"] for v in expected["keys"].values() if v.get("type") == "committee"
    )
    assert categories["Other"] >= 2


def test_skipped_keys(records: list[SampleRecord], expected: dict[str, Any]) -> None:
    skipped = {k: v["reason"] for k, v in expected["keys"].items() if v["outcome"] == "skipped"}
    assert Counter(skipped.values()) == {
        "other_prefix": 4,  # accounts, contacts, DynamoDB settings, the owner's user record
        "empty_value": 1,
        "not_in_v2": 2,  # deletes of records V2 never had
        "tombstoned": 2,  # re-puts of deleted records
    }
    for key, reason in skipped.items():
        if reason == "other_prefix":
            assert not key.startswith((PROJECT, COMMITTEE, "platform-community__c."))


def test_expected_bodies_pass_the_fake_validation(expected: dict[str, Any]) -> None:
    root = str(uuid.uuid4())
    names: Counter[tuple[str, str]] = Counter()
    emails: Counter[tuple[str, str]] = Counter()
    for key, value in expected["keys"].items():
        if value.get("type") == "project":
            validate_project({**value["fields"], "parent_uid": root})
        elif value.get("type") == "committee":
            validate_committee({**value["fields"], "project_uid": root})
            names[(value["project_sfid"], value["fields"]["name"])] += 1
        elif value.get("type") == "committee_member":
            assert validate_member(value["fields"]) == value["fields"], key
            emails[(value["committee_sfid"], value["fields"]["email"].strip().lower())] += 1
        assert "writer" not in value or set(expected_writer(value, "x")) == {
            "principal",
            "sub",
            "email",
            "on_behalf_of",
        }, key
    assert max(names.values()) == 1  # committee names are unique within a project
    assert max(emails.values()) == 1  # member emails are unique within a committee
    slugs = Counter(
        v["fields"]["slug"] for v in expected["keys"].values() if v.get("type") == "project"
    )
    assert max(slugs.values()) == 1


# -- the comparison, against a sandbox filled as the expectations say ------------------------


def _headers(key: RSAPrivateKey, audience: str, writer: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": "heimdall",
        "aud": audience,
        "sub": writer["sub"],
        "principal": writer["principal"],
        "iat": now,
        "nbf": now - 30,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    if writer["email"]:
        claims["email"] = writer["email"]
    headers = {
        "Authorization": "Bearer "
        + jwt.encode(claims, key, algorithm="PS256", headers={"kid": KID})
    }
    if writer["on_behalf_of"]:
        headers["X-On-Behalf-Of"] = writer["on_behalf_of"]
    return headers


@pytest.fixture(scope="module")
def filled_sandbox(heimdall_key: RSAPrivateKey, expected: dict[str, Any]) -> Iterator[Sandbox]:
    """A sandbox holding exactly the expected objects, written over HTTP by their writers."""
    client_id = "sync-test"
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={},
        crowdfunding_slugs=crowdfunding_slugs(expected),
    ) as sb:
        session = requests.Session()
        keys = expected["keys"]
        uid_by_sfid: dict[str, str] = {}
        pending = [v for v in keys.values() if v.get("type") == "project"]
        while pending:
            ready = [
                v for v in pending if v["parent_sfid"] is None or v["parent_sfid"] in uid_by_sfid
            ]
            assert ready, "a parent cycle in the expectations"
            for value in ready:
                parent = uid_by_sfid[value["parent_sfid"]] if value["parent_sfid"] else sb.root_uid
                response = session.post(
                    sb.url + "/projects?v=1",
                    # A create carries the settings too (the contract's one POST).
                    json={**value.get("settings", {}), **value["fields"], "parent_uid": parent},
                    headers=_headers(
                        heimdall_key, "lfx-v2-project-service", expected_writer(value, client_id)
                    ),
                    timeout=10,
                )
                assert response.status_code == 201, response.text
                uid_by_sfid[value["sfid"]] = response.json()["uid"]
                pending.remove(value)
        for value in keys.values():
            if value.get("type") != "committee":
                continue
            response = session.post(
                sb.url + "/committees?v=1",
                json={
                    **value.get("settings", {}),
                    **value["fields"],
                    "project_uid": uid_by_sfid[value["project_sfid"]],
                },
                headers=_headers(
                    heimdall_key, "lfx-v2-committee-service", expected_writer(value, client_id)
                ),
                timeout=10,
            )
            assert response.status_code == 201, response.text
            uid_by_sfid[value["sfid"]] = response.json()["uid"]
        for value in keys.values():
            if value.get("type") != "committee_member":
                continue
            response = session.post(
                f"{sb.url}/committees/{uid_by_sfid[value['committee_sfid']]}/members?v=1",
                json=value["fields"],
                headers=_headers(
                    heimdall_key, "lfx-v2-committee-service", expected_writer(value, client_id)
                ),
                timeout=10,
            )
            assert response.status_code == 201, response.text
            uid_by_sfid[value["sfid"]] = response.json()["uid"]
        _make_the_deletes(sb, session, heimdall_key, keys, uid_by_sfid, client_id)
        session.close()
        yield sb


AUDIENCES = {
    "project": "lfx-v2-project-service",
    "committee": "lfx-v2-committee-service",
    "committee_member": "lfx-v2-committee-service",
}


def _make_the_deletes(
    sb: Sandbox,
    session: requests.Session,
    key: RSAPrivateKey,
    keys: dict[str, Any],
    uid_by_sfid: dict[str, str],
    client_id: str,
) -> None:
    """Every expected delete through the HTTP API, as its deleter; refused ones answer 400."""
    for value in keys.values():
        if "delete" not in value:
            continue
        uid = uid_by_sfid[value["sfid"]]
        if value["type"] == "project":
            path = f"/projects/{uid}"
        elif value["type"] == "committee":
            path = f"/committees/{uid}"
        else:
            path = f"/committees/{uid_by_sfid[value['committee_sfid']]}/members/{uid}"
        headers = _headers(key, AUDIENCES[value["type"]], expected_deleter(value, client_id))
        etag = session.get(sb.url + path + "?v=1", headers=headers, timeout=10).headers["ETag"]
        response = session.delete(
            sb.url + path + "?v=1", headers={**headers, "If-Match": etag}, timeout=10
        )
        assert response.status_code == (204 if delete_accepted(value) else 400), response.text


def _state(sb: Sandbox) -> dict[str, Any]:
    return dict(requests.get(sb.url + "/_sandbox/state", timeout=10).json())


def test_a_sandbox_with_exactly_the_expected_objects_shows_no_difference(
    filled_sandbox: Sandbox, expected: dict[str, Any]
) -> None:
    state = _state(filled_sandbox)
    assert differences(state, expected, heimdall_client_id="sync-test") == []
    counts = expected["counts"]
    assert state["counts"]["projects"] == counts["projects_in_v2"] + 1  # ROOT
    assert state["counts"]["committees"] == counts["committees_in_v2"]
    assert state["counts"]["members"] == counts["members_in_v2"]
    assert state["counts"]["deleted"] == counts["deleted"]


def test_each_kind_of_mistake_is_reported(
    filled_sandbox: Sandbox, expected: dict[str, Any]
) -> None:
    state = _state(filled_sandbox)
    # The default client id of the file is not the one the writes used: fallbacks differ.
    assert any("last write principal" in line for line in differences(state, expected))
    by_slug = {p["slug"]: p for p in state["projects"].values()}
    by_slug["kubernetes"]["description"] = "stale"
    by_slug["helm"]["stage"] = "Incubation"
    by_slug["kustomize"]["parent_uid"] = state["root_uid"]
    by_slug["rekor"]["_last_write"]["on_behalf_of"] = "someone"
    del state["projects"][by_slug["envoy"]["uid"]]
    extra = str(uuid.uuid4())
    state["projects"][extra] = {
        "uid": extra,
        "slug": "openmainframe",
        "parent_uid": state["root_uid"],
    }
    committee_uid = next(iter(state["committees"]))
    state["committees"][committee_uid]["category"] = "Board-ish"
    lines = differences(state, expected, heimdall_client_id="sync-test")

    def reported(*parts: str) -> bool:
        return any(all(part in line for part in parts) for line in lines)

    assert reported("project kubernetes", "description is 'stale'")
    assert reported("project helm", "stage should have been dropped")
    assert reported("project kustomize", "parent_uid is")
    assert reported("project rekor", "on_behalf_of is 'someone'")
    assert reported("project envoy", "not in the sandbox")
    assert reported("project openmainframe", "not expected")
    assert reported("category is 'Board-ish'")
    # Envoy's committees lost their project.
    assert reported("of envoy", "its project is not in the sandbox")


def test_members_cover_the_cases_of_the_issue(
    records: list[SampleRecord], expected: dict[str, Any]
) -> None:
    members = [v for v in expected["keys"].values() if v.get("type") == "committee_member"]
    assert len(members) >= 200
    member_puts = [r for r in records if r.key.startswith(MEMBER) and not r.is_delete]
    assert {r.encoding for r in member_puts} == {"json", "msgpack"}
    committees_of: dict[str, set[str]] = {}
    for record in member_puts:
        committees_of.setdefault(record.value["contact_name__c"], set()).add(
            record.value["collaboration_name__c"]
        )
    assert sum(1 for c in committees_of.values() if len(c) >= 3) >= 10  # several committees
    organizations = Counter(v["fields"].get("organization", {}).get("name") for v in members)
    assert organizations.most_common(1)[0][1] >= 100  # many members of one organization
    unknown = Counter(
        (field, v["fields"][field]["name" if field == "role" else "status"])
        for v in members
        for field in ("role", "voting")
        if field in v["fields"] and ("name" in v["fields"][field] or "status" in v["fields"][field])
    )
    assert unknown[("role", "None")] >= 10
    assert unknown[("voting", "None")] >= 10
    assert any(r.value["role__c"] not in (None, *MEMBER_ROLES) for r in member_puts)


# -- deletes (issue 14) ----------------------------------------------------------------------


def _deletes(expected: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in expected["keys"].values() if "delete" in v]


def test_deletes_cover_every_shape_for_every_object_type(expected: dict[str, Any]) -> None:
    shapes = {(v["type"], v["delete"]["shape"]) for v in _deletes(expected)}
    for kind in ("project", "committee", "committee_member"):
        assert {(kind, "DEL"), (kind, "PURGE")} & shapes, kind  # a hard delete
        assert {(kind, "_sdc_deleted_at"), (kind, "isdeleted")} & shapes, kind  # a soft one
    assert {shape for _, shape in shapes} == {"DEL", "PURGE", "_sdc_deleted_at", "isdeleted"}
    projects = [v for v in _deletes(expected) if v["type"] == "project"]
    accepted = [v for v in projects if delete_accepted(v)]
    refused = [v for v in projects if not delete_accepted(v)]
    assert len(accepted) >= 2
    assert len(refused) >= 2
    assert {v["delete"]["shape"] for v in refused} >= {"DEL", "isdeleted"}  # hard and soft
    for value in refused:
        assert (value["outcome"], value["reason"]) == ("dead_letter", "delete_refused")
        assert stays_in_v2(value)


def test_only_the_accepted_project_deletes_are_crowdfunded(expected: dict[str, Any]) -> None:
    projects = [v for v in _deletes(expected) if v["type"] == "project"]
    assert crowdfunding_slugs(expected) == {
        v["fields"]["slug"] for v in projects if delete_accepted(v)
    }
    # Deleted projects are leaves without committees: nothing in V2 points at them.
    deleted = {v["sfid"] for v in projects if delete_accepted(v)}
    for value in expected["keys"].values():
        assert value.get("parent_sfid") not in deleted
        assert value.get("project_sfid") not in deleted


def test_the_principal_rule_is_visible(
    records: list[SampleRecord], expected: dict[str, Any]
) -> None:
    """Soft deletes within 1 s of their last edit are the user's; the rest the service's."""
    by_key = latest(records)
    kinds = Counter()
    for key, value in expected["keys"].items():
        if "delete" not in value:
            continue
        record = (
            by_key[key] if value["delete"]["shape"] in ("_sdc_deleted_at", "isdeleted") else None
        )
        if "reput_phase" in value:
            record = None  # the latest put is the re-put; the delete was a hard one
        deleter = value["delete"]["deleter"]
        kinds[(value["delete"]["shape"], deleter["kind"])] += 1
        if record is not None and deleter["kind"] == "user":
            assert record.value["lastmodifiedbyid"] in load_users()
    assert kinds[("_sdc_deleted_at", "user")] >= 2  # within 1 s: the V1 user
    assert kinds[("_sdc_deleted_at", "fallback")] >= 1  # an older edit: the service
    assert kinds[("isdeleted", "fallback")] >= 1  # no deletion time: the service
    assert kinds[("DEL", "fallback")] >= 1
    assert kinds[("DEL", "user")] == 0
    assert kinds[("PURGE", "user")] == 0


def test_members_of_deleted_committees_go_with_them(expected: dict[str, Any]) -> None:
    deleted = {
        v["sfid"] for v in _deletes(expected) if v["type"] == "committee" and delete_accepted(v)
    }
    assert len(deleted) >= 2
    for key, value in expected["keys"].items():
        if value.get("type") == "committee_member" and value["committee_sfid"] in deleted:
            assert value["removed_with_committee"].endswith(
                next(s for s in deleted if s == value["committee_sfid"])
            ), key
            assert not stays_in_v2(value)


def test_phases_order_every_delete_after_its_record_and_every_reput_after_its_delete(
    expected: dict[str, Any],
) -> None:
    phases = load_phases()
    assert len(phases) == expected["counts"]["phases"] == 3
    phase_of: dict[str, list[tuple[int, str]]] = {}
    for number, records in enumerate(phases, start=1):
        assert {r.phase for r in records} == {number}
        for record in records:
            phase_of.setdefault(record.key, []).append((number, record.operation))
    for key, value in expected["keys"].items():
        if "delete" not in value:
            continue
        writes = phase_of[key]
        assert writes[0] == (1, "PUT"), key  # synced first
        assert writes[1][0] == value["delete"]["phase"] == 2, key
        if "reput_phase" in value:
            assert writes[2] == (3, "PUT"), key
            assert (value["outcome"], value["reason"]) == ("skipped", "tombstoned")
    never = [k for k, v in expected["keys"].items() if v.get("reason") == "not_in_v2"]
    assert {phase_of[k][0][1] for k in never} == {"DEL", "PUT"}  # hard and soft
    assert all(len(phase_of[k]) == 1 and phase_of[k][0][0] == 2 for k in never)


def test_delete_counts_match_the_expectations(expected: dict[str, Any]) -> None:
    counts = expected["counts"]
    keys = expected["keys"].values()
    assert counts["deleted"] == sum(1 for v in keys if delete_accepted(v)) == 10
    assert counts["delete_refused"] == 2
    assert counts["skipped:tombstoned"] == 2
    assert counts["skipped:not_in_v2"] == 2
    assert counts["projects_in_v2"] == sum(
        1 for v in keys if v.get("type") == "project" and stays_in_v2(v)
    )


def test_each_kind_of_delete_mistake_is_reported(
    filled_sandbox: Sandbox, expected: dict[str, Any]
) -> None:
    state = _state(filled_sandbox)
    wanted = expected_mappings(state, expected)
    assert differences(state, expected, "sync-test", mappings=wanted) == []
    deleted = {
        (v["type"], v["delete"]["shape"]): v for v in _deletes(expected) if delete_accepted(v)
    }
    refused, kept = (v for v in _deletes(expected) if not delete_accepted(v))
    by_slug = {p["slug"]: p for p in state["projects"].values()}
    # A deleted project back in V2 (a re-put that re-created it), a refused one gone.
    reput = next(v for v in _deletes(expected) if "reput_phase" in v and v["type"] == "project")
    gone = next(uid for uid, p in state["deleted"].items() if p["slug"] == reput["fields"]["slug"])
    state["projects"][gone] = {
        k: v for k, v in state["deleted"].pop(gone).items() if not k.startswith("_deleted")
    }
    del state["projects"][by_slug[refused["fields"]["slug"]]["uid"]]
    # The wrong deleter for the user's soft delete of a member.
    member = deleted[("committee_member", "_sdc_deleted_at")]
    member_uid = next(
        uid
        for uid, m in state["deleted"].items()
        if m["_deleted_from"] == "members" and m["email"] == member["fields"]["email"]
    )
    state["deleted"][member_uid]["_deleted_by"]["principal"] = "v1_sync_helper@clients"
    # A mapping not tombstoned, a refused one's mapping gone.
    mappings = dict(wanted)
    committee = deleted[("committee", "DEL")]
    mappings[f"committee.sfid.{committee['sfid']}"] = "some-uid"
    mappings[f"project.sfid.{kept['sfid']}"] = None
    lines = differences(state, expected, "sync-test", mappings=mappings)

    def reported(*parts: str) -> bool:
        return any(all(part in line for part in parts) for line in lines)

    assert reported(f"project {reput['fields']['slug']}", "still in the sandbox", "re-put")
    assert reported(f"project {refused['fields']['slug']}", "not in the sandbox")
    assert reported(f"member {member['fields']['email']}", "delete principal is")
    assert reported(f"mapping committee.sfid.{committee['sfid']} is 'some-uid'", TOMBSTONE)
    assert reported(f"mapping project.sfid.{kept['sfid']} is None")
