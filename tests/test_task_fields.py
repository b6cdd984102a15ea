"""Issue 23 end to end: every column of the reference through ``sync_kv_entry`` into
the fake V2 services (settings resources included), with real NATS and valkey.

Shares the module-scoped stack of ``tests.test_task_sync``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sync_core.broker import task_id_for
from tests import test_task_sync
from tests.test_task_sync import (
    AUTH0_CLIENT,
    MACHINE_USER,
    PLATFORM_ID,
    Stack,
    new_project,
    new_sfid,
)
from tests.v1_examples import (
    COMMITTEE_FULL_JSON,
    MEMBER_JSON,
    PROJECT_FULL_JSON,
    SALESFORCE_USER_JSON,
    record,
)

stack = test_task_sync.stack
st = test_task_sync.st

PROGRAM_MANAGER_ID = "0032M00002PmAbcQAB"
OWNER_ID = "0054100000AbCdEAAZ"
ORG_SFID = "0014100000Te2ovAAB"


def v2_owned_user(name: str) -> dict[str, str]:
    return {"name": name, "email": f"{name}@example.org", "username": name, "avatar": ""}


def prepare_people(st: Stack) -> None:
    """The program manager in the V1 user service, the owner's record in ``v1-objects``."""
    st.sandbox.add_user(
        PROGRAM_MANAGER_ID,
        {
            "ID": PROGRAM_MANAGER_ID,
            "Username": "pmanager",
            "Email": "pm@example.org",
            "FirstName": "Pat",
            "LastName": "Manager",
        },
    )
    st.put(f"salesforce_b2b-User.{OWNER_ID}", json.loads(SALESFORCE_USER_JSON), "msgpack")


def full_project_record(**changes: Any) -> tuple[str, dict[str, Any]]:
    sfid = new_sfid()
    project = record(
        PROJECT_FULL_JSON,
        sfid=sfid,
        slug__c="F" + sfid[3:].upper(),
        lastmodifiedbyid=MACHINE_USER,
        executive_director__c=PLATFORM_ID,
        program_manager__c=PROGRAM_MANAGER_ID,
        opportunity_owner__c=OWNER_ID,
    )
    project.update(changes)
    return f"salesforce-project__c.{sfid}", project


def synced(st: Stack, key: str, value: dict[str, Any], expected: str = "created") -> str:
    sfid = key.partition(".")[2]
    assert st.sync(key, st.put(key, value)) == expected
    for prefix in ("project", "committee"):
        uid = st.mapping(f"{prefix}.sfid.{sfid}")
        if uid is not None:
            return uid
    raise AssertionError(f"no mapping for {key}")


def puts(st: Stack, path: str) -> int:
    return len(st.v2_requests("PUT", path))


def test_a_project_with_every_column_ends_with_every_field_and_setting(st: Stack) -> None:
    prepare_people(st)
    legal_key, legal = new_project()
    legal_uid = synced(st, legal_key, legal)
    key, project = full_project_record(parent_entity_relationship__c=legal["sfid"])
    st.sandbox.reset_requests()
    uid = synced(st, key, project)
    base = st.sandbox.projects[uid]
    assert base["category"] == "Graduated"
    assert base["funding"] == "Funded"
    assert base["funding_model"] == ["Membership", "Alternate Funding"]
    assert base["charter_url"] == "https://example.org/charter.pdf"
    assert base["autojoin_enabled"] is True
    assert base["entity_dissolution_date"] == "2030-06-30"
    assert base["entity_formation_document_url"] == "https://docs.example.org/formation.pdf"
    assert base["legal_parent_uid"] == legal_uid
    assert base["parent_uid"] == st.sandbox.root_uid
    settings = st.sandbox.project_settings(uid)
    assert settings["mission_statement"] == "Open source for everyone."
    assert settings["announcement_date"] == "2025-09-01"
    assert settings["executive_director"]["email"] == "jdoe@example.com"
    assert settings["executive_director"]["username"] == "jdoe"
    assert settings["program_manager"]["email"] == "pm@example.org"
    assert settings["opportunity_owner"]["email"] == "olga.owner@example.org"
    # One POST carried base and settings: no settings call at all.
    assert len(st.v2_requests("POST", "/projects")) == 1
    assert not [r for r in st.sandbox.requests if r.path.endswith("/settings")]

    # Nothing changed: a new revision of the same record makes no PUT, base or settings.
    st.sandbox.reset_requests()
    assert st.sync(key, st.put(key, project)) == "unchanged"
    assert puts(st, f"/projects/{uid}") == 0
    assert puts(st, f"/projects/{uid}/settings") == 0
    assert len(st.v2_requests("GET", f"/projects/{uid}/settings")) == 1


def test_a_committee_with_every_column_ends_with_every_field_and_setting(st: Stack) -> None:
    project_key, project = new_project()
    synced(st, project_key, project)
    sfid = str(uuid.uuid4())
    committee = record(COMMITTEE_FULL_JSON, sfid=sfid, project_name__c=project["sfid"])
    key = f"platform-collaboration__c.{sfid}"
    uid = synced(st, key, committee)
    stored = st.sandbox.committees[uid]
    assert stored["category"] == "Technical Advisory Committee"
    assert stored["mailing_list"] == "tac@lists.example.org"
    assert stored["chat_channel"] == "#tac"
    assert stored["join_mode"] == "application"
    assert st.sandbox.committee_settings(uid)["business_email_required"] is True
    assert not [r for r in st.sandbox.requests if r.path.endswith("/settings")]
    st.sandbox.reset_requests()
    assert st.sync(key, st.put(key, committee)) == "unchanged"
    assert puts(st, f"/committees/{uid}") == 0
    assert puts(st, f"/committees/{uid}/settings") == 0
    # The TOC of the same project: the combined value by its name.
    toc_sfid = str(uuid.uuid4())
    toc = record(
        COMMITTEE_FULL_JSON,
        sfid=toc_sfid,
        project_name__c=project["sfid"],
        mailing_list__c="Technical Oversight Committee",
    )
    toc_uid = synced(st, f"platform-collaboration__c.{toc_sfid}", toc)
    assert st.sandbox.committees[toc_uid]["category"] == "Technical Oversight Committee"


def test_a_changed_setting_puts_only_the_settings_and_keeps_v2_lists(st: Stack) -> None:
    prepare_people(st)
    key, project = full_project_record()
    uid = synced(st, key, project)
    identity = st.runtime.identity_for(MACHINE_USER)
    resource = st.runtime.projects.below(uid)
    current = resource.get("settings", identity)
    body = {k: v for k, v in current.record.items() if k not in {"uid", "created_at", "updated_at"}}
    writers = [v2_owned_user("writer")]
    resource.update("settings", {**body, "writers": writers}, current.etag, identity)
    st.sandbox.reset_requests()
    project["mission_statement"] = "A new mission."
    assert st.sync(key, st.put(key, project)) == "updated"
    assert puts(st, f"/projects/{uid}") == 0
    assert puts(st, f"/projects/{uid}/settings") == 1
    settings = st.sandbox.project_settings(uid)
    assert settings["mission_statement"] == "A new mission."
    assert settings["writers"][0]["email"] == "writer@example.org"
    assert settings["executive_director"]["email"] == "jdoe@example.com"


def test_v2_only_fields_survive_any_number_of_v1_updates(st: Stack) -> None:
    """is_foundation, join_mode (V1 without one), requires_review and writers are V2's."""
    key, project = new_project(mission_statement="First.")
    uid = synced(st, key, project)
    identity = st.runtime.identity_for(MACHINE_USER)
    current = st.runtime.projects.get(uid, identity)
    base = {k: v for k, v in current.record.items() if k not in {"uid", "created_at", "updated_at"}}
    st.runtime.projects.update(uid, {**base, "is_foundation": True}, current.etag, identity)
    resource = st.runtime.projects.below(uid)
    settings = resource.get("settings", identity)
    st.runtime.projects.below(uid).update(
        "settings",
        {"mission_statement": "First.", "writers": [v2_owned_user("w")]},
        settings.etag,
        identity,
    )
    committee_sfid = str(uuid.uuid4())
    committee = record(COMMITTEE_FULL_JSON, sfid=committee_sfid, project_name__c=project["sfid"])
    del committee["join_mode"]
    committee_key = f"platform-collaboration__c.{committee_sfid}"
    committee_uid = synced(st, committee_key, committee)
    assert st.runtime.committees is not None
    got = st.runtime.committees.get(committee_uid, identity)
    writable = {
        k: v
        for k, v in got.record.items()
        if k not in {"uid", "sso_group_name", "project_name", "total_members"}
    }
    st.runtime.committees.update(
        committee_uid,
        {**writable, "join_mode": "closed", "requires_review": True},
        got.etag,
        identity,
    )
    for round_ in range(3):
        project["description__c"] = f"Round {round_}."
        project["mission_statement"] = f"Mission {round_}."
        assert st.sync(key, st.put(key, project)) == "updated"
        committee["description__c"] = f"Round {round_}."
        committee["business_email_required__c"] = round_ % 2 == 0
        assert st.sync(committee_key, st.put(committee_key, committee)) == "updated"
    stored = st.sandbox.projects[uid]
    assert stored["is_foundation"] is True
    assert stored["description"] == "Round 2."
    stored_settings = st.sandbox.project_settings(uid)
    assert stored_settings["mission_statement"] == "Mission 2."
    assert [w["email"] for w in stored_settings["writers"]] == ["w@example.org"]
    stored_committee = st.sandbox.committees[committee_uid]
    assert stored_committee["join_mode"] == "closed"
    assert stored_committee["requires_review"] is True
    assert st.sandbox.committee_settings(committee_uid)["business_email_required"] is True


def test_a_failed_or_deleted_staff_lookup_keeps_what_v2_has(st: Stack) -> None:
    prepare_people(st)
    key, project = full_project_record()
    uid = synced(st, key, project)
    before = st.sandbox.project_settings(uid)
    # The program manager is gone from V1, the owner's record deleted: both stay in V2.
    project["program_manager__c"] = "0032M00002UnKnoWQAB"
    project["opportunity_owner__c"] = "0054100000DeLeTEAAZ"
    st.put(
        "salesforce_b2b-User.0054100000DeLeTEAAZ",
        {**json.loads(SALESFORCE_USER_JSON), "_sdc_deleted_at": "2025-01-01T00:00:00Z"},
    )
    st.sandbox.reset_requests()
    assert st.sync(key, st.put(key, project)) == "unchanged"
    after = st.sandbox.project_settings(uid)
    assert after["program_manager"] == before["program_manager"]
    assert after["opportunity_owner"] == before["opportunity_owner"]
    assert puts(st, f"/projects/{uid}/settings") == 0


def test_a_stale_settings_etag_refetches_in_the_same_run(st: Stack) -> None:
    key, project = new_project(mission_statement="One.")
    uid = synced(st, key, project)
    st.sandbox.inject_fault("PUT", f"/projects/{uid}/settings", status=409)
    st.sandbox.reset_requests()
    project["mission_statement"] = "Two."
    assert st.sync(key, st.put(key, project)) == "updated"
    assert puts(st, f"/projects/{uid}/settings") == 2
    assert st.sandbox.project_settings(uid)["mission_statement"] == "Two."


def test_a_record_without_settings_columns_never_reads_the_settings(st: Stack) -> None:
    key, project = new_project()
    uid = synced(st, key, project)
    project["description__c"] = "Changed."
    assert st.sync(key, st.put(key, project)) == "updated"
    assert not [r for r in st.sandbox.requests if r.path == f"/projects/{uid}/settings"]


def test_a_missing_legal_parent_parks_and_a_deleted_one_is_dropped(st: Stack) -> None:
    legal_key, legal = new_project()
    key, project = new_project(parent_entity_relationship__c=legal["sfid"])
    revision = st.put(key, project)
    assert st.sync(key, revision) == "parked"
    assert st.state(key).pending is not None
    legal_uid = synced(st, legal_key, legal)
    assert st.wait_final(key, revision, 2) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert uid is not None
    assert st.sandbox.projects[uid]["legal_parent_uid"] == legal_uid
    # A tombstoned legal parent: the field is left as V2 has it, the rest syncs.
    gone_key, gone = new_project()
    synced(st, gone_key, gone)
    st.nats.kv_put("v1-mappings", f"project.sfid.{gone['sfid']}", b"!del")
    project["parent_entity_relationship__c"] = gone["sfid"]
    project["description__c"] = "Legal parent gone."
    assert st.sync(key, st.put(key, project)) == "updated"
    stored = st.sandbox.projects[uid]
    assert stored["legal_parent_uid"] == legal_uid
    assert stored["description"] == "Legal parent gone."


def test_echo_rows_are_skipped_but_their_deletes_go_through(st: Stack) -> None:
    key, project = new_project()
    uid = synced(st, key, project)
    project["description__c"] = "Written by the reverse direction."
    project["lastmodifiedbyid"] = f"{AUTH0_CLIENT}@clients"
    st.sandbox.reset_requests()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "echo"
    assert not st.sandbox.requests
    assert st.sandbox.projects[uid]["description"] != "Written by the reverse direction."
    st.redis.delete("v1sync:synced:" + key)
    # A soft delete of an echo row is a delete, not an echo.
    project["isdeleted"] = True
    revision = st.put(key, project)
    # The project service refuses it (not crowdfunded): proof the delete was sent.
    assert st.sync(key, revision) == "delete_refused"
    assert st.v2_requests("DELETE", f"/projects/{uid}")


# --- members ---------------------------------------------------------------------------


def voting_committee(st: Stack, **changes: Any) -> tuple[str, str]:
    project_key, project = new_project()
    synced(st, project_key, project)
    sfid = str(uuid.uuid4())
    committee = record(
        COMMITTEE_FULL_JSON,
        sfid=sfid,
        project_name__c=project["sfid"],
        mailing_list__c="Board " + sfid[:8],
        type__c="Board",
    )
    committee.update(changes)
    return sfid, synced(st, f"platform-collaboration__c.{sfid}", committee)


def member_record(committee_sfid: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    sfid = str(uuid.uuid4())
    member = record(
        MEMBER_JSON,
        sfid=sfid,
        collaboration_name__c=committee_sfid,
        contactemail__c=f"m{sfid[:8]}@example.com",
        contact_name__c=PLATFORM_ID,
    )
    member.update(changes)
    return f"platform-community__c.{sfid}", member


def test_a_member_without_organization_on_a_voting_committee_is_one_clear_dead_letter(
    st: Stack,
) -> None:
    committee_sfid, committee_uid = voting_committee(st)
    key, member = member_record(committee_sfid, account__c=None)
    revision = st.put(key, member)
    assert st.sync(key, revision) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "member_needs_organization"
    assert letter.attempts == 1  # no retries in vain
    assert "\n" not in letter.error_message
    assert "organization" in letter.error_message
    assert not st.v2_requests("POST", f"/committees/{committee_uid}/members")


def test_business_email_required_alone_also_needs_an_organization(st: Stack) -> None:
    committee_sfid, _ = voting_committee(
        st, enable_voting__c=False, business_email_required__c=True
    )
    key, member = member_record(committee_sfid, account__c=None)
    revision = st.put(key, member)
    assert st.sync(key, revision) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "member_needs_organization"
    # Without voting or business e-mail the same member syncs.
    plain_sfid, _ = voting_committee(st, enable_voting__c=False, business_email_required__c=False)
    plain_key, plain = member_record(plain_sfid, account__c=None)
    assert st.sync(plain_key, st.put(plain_key, plain)) == "created"


def test_voting_none_on_a_voting_committee_syncs_without_voting(st: Stack) -> None:
    committee_sfid, committee_uid = voting_committee(st)
    st.sandbox.add_organization(ORG_SFID, {"ID": ORG_SFID, "Name": "Example Corp"})
    key, member = member_record(committee_sfid, voting_status__c="None")
    assert st.sync(key, st.put(key, member)) == "created"
    (stored,) = [m for m in st.sandbox.members.values() if m["committee_uid"] == committee_uid]
    assert "voting" not in stored
    assert stored["organization"]["id"] == ORG_SFID
